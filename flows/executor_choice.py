"""Which executor builds the shards: ``auto`` (the default), ``ray`` or ``local``.

``auto`` builds in-process when no Ray cluster is configured (``--ray-address``, ``[executor]
address``, ``RAY_ADDRESS``) and the build is small, on Ray otherwise: a local Ray costs seconds of
start-up and a torch import in every worker before the first shard starts, more than a small build
takes in-process. ``ray`` always means Ray; ``local`` always in-process. The choice is made when the
shards to build are known (after planning and resume), and printed with the build's result.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterator

from pipelines.executors.base import Executor

#: ``auto`` builds in-process up to this many samples (or a single shard) when no Ray cluster is
#: configured. A local Ray costs about 10 s on a 2-core machine before its first shard runs (Ray's
#: processes, then a torch import per worker); up to here that is most of the build, and one shard
#: runs as one task, in parallel with nothing, wherever it runs.
AUTO_LOCAL_MAX_SAMPLES = 64


def ray_address_configured(address: str | None) -> str | None:
    return address or os.environ.get("RAY_ADDRESS") or None


def choose_executor(
    kind: str, address: str | None = None, max_in_flight: int | None = None, specs: list | None = None
) -> tuple[Any, str]:
    """The executor for ``specs`` and one line saying which and why.

    ``ray`` and ``local`` mean what they say; ``auto`` means Ray when a cluster is configured
    (``address`` or ``RAY_ADDRESS``) or the build is large, in-process otherwise."""
    from pipelines.executors import create_executor

    specs = specs or []
    samples = sum(len(s) for s in specs)
    if kind == "auto":
        cluster = ray_address_configured(address)
        if cluster:
            kind, why = "ray", f"auto: Ray cluster at {cluster}"
        elif samples <= AUTO_LOCAL_MAX_SAMPLES or len(specs) <= 1:
            kind, why = (
                "local",
                (f"auto: {len(specs)} shard(s), {samples} samples to build, in-process; --executor ray for Ray"),
            )
        else:
            kind, why = "ray", f"auto: {len(specs)} shards, {samples} samples to build"
    else:
        why = "as asked"
    if kind == "ray":
        kwargs = {"max_in_flight": max_in_flight} if max_in_flight else {}
        return create_executor("ray", ray_address=address, **kwargs), f"ray ({why})"
    return create_executor("local"), f"local ({why})"


class AutoExecutor(Executor):
    """An executor that picks ``local`` or ``ray`` when it sees the shards to build (``--no-prefect``
    paths hand it to ``build_dataset``; the flow calls ``choose_executor`` itself)."""

    name = "auto"

    def __init__(self, kind: str = "auto", address: str | None = None, max_in_flight: int | None = None):
        self.kind, self.address, self.max_in_flight = kind, address, max_in_flight
        self.chosen = None
        self.description = ""

    def run_shards(self, root, specs, config, on_sample: Callable[[int], None] | None = None) -> Iterator:
        self.chosen, self.description = choose_executor(self.kind, self.address, self.max_in_flight, specs)
        if not specs:
            return iter(())
        return self.chosen.run_shards(root, specs, config, on_sample=on_sample)

    def map_on_workers(self, factory, method, items, **kwargs) -> Iterator:
        from pipelines.executors import create_executor

        kind = embed_executor_kind(self.kind, self.address)
        self.chosen, self.description = create_executor(kind, ray_address=self.address), f"{kind} ({self.kind})"
        return self.chosen.map_on_workers(factory, method, items, **kwargs)

    def in_flight_limit(self) -> int:
        return self.chosen.in_flight_limit() if self.chosen is not None else 1


def embed_executor_kind(kind: str, address: str | None = None) -> str:
    """``ray`` or ``local`` for embedding after a build. ``auto`` embeds on Ray when a cluster is
    configured, when Ray is already up in this process (the build used it: one connection for both),
    or when this machine has several GPUs (one actor per GPU); in-process otherwise."""
    if kind != "auto":
        return kind
    import sys

    if ray_address_configured(address):
        return "ray"
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        return "ray"
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.device_count() > 1:
        return "ray"
    return "local"
