"""Shard builds as Ray tasks: local Ray by default, any cluster by address.

Each task builds and commits one shard straight to the dataset directory and returns only its small
summary (the object store never carries pixels). Tasks are retried on worker or node death: a shard is
published by atomic renames with the index last, so a killed attempt leaves nothing visible and the
retry rebuilds the same bytes. The number of shards in flight is bounded so driver memory stays flat
however many shards the plan holds.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Callable, Iterator

from pipelines.config import BuildConfig
from pipelines.executors.base import Executor
from pipelines.plan import ShardSpec
from storage import format as fmt
from storage.shard import ShardSummary

DEFAULT_OBJECT_STORE_BYTES = 256 * 1024**2  # summaries only: the object store can stay small


def threads_for_allotment(cpus: float) -> int:
    """Decoder and torch threads for a task granted `cpus` CPUs (at least one)."""
    return max(1, int(round(cpus)))


def _use_only_the_allotted_cpus() -> None:
    """Run decode and torch ops on as many threads as CPUs Ray granted this task.

    FFmpeg's default is one decoder thread per core of the node: N tasks on N cores would each start
    N threads and contend for every core (measured on 2 cores, 2 workers, audioset layout: 14.6
    samples/s with FFmpeg's default, 17.4 with one thread per task). `BINDSET_DECODE_THREADS`, when
    set, still wins.
    """
    import ray
    import torch

    from preprocess import decode

    n = threads_for_allotment(ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0))
    if not os.environ.get("BINDSET_DECODE_THREADS"):
        decode.DECODE_THREADS = n
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


def _build_shard_task(root: str, spec: ShardSpec, config: BuildConfig) -> dict:
    import ray

    from pipelines.build import build_shard

    _use_only_the_allotted_cpus()
    summary = build_shard(Path(root), spec, config)
    return {**summary.to_dict(), "node_id": ray.get_runtime_context().get_node_id()}


def _probe_root_task(root: str, token: str) -> tuple[str, bool, str]:
    """Can this node see the dataset root? Reads a token file the driver wrote."""
    import ray

    node = ray.get_runtime_context().get_node_id()
    probe = Path(root) / fmt.TMP_DIR / f"probe-{token}"
    try:
        return node, probe.read_text() == token, ""
    except OSError as exc:
        return node, False, str(exc)


class RayExecutor(Executor):
    name = "ray"

    def __init__(self, address: str | None = None, max_in_flight: int | None = None,
                 max_retries: int = 3, num_cpus_per_task: float = 1.0,
                 object_store_memory: int = DEFAULT_OBJECT_STORE_BYTES, spread: bool = True):
        # Explicit address, else RAY_ADDRESS (a user's cluster), else a private local Ray.
        self.address = address or os.environ.get("RAY_ADDRESS") or "local"
        self.max_in_flight = max_in_flight
        self.max_retries = max_retries
        self.num_cpus_per_task = num_cpus_per_task
        self.object_store_memory = object_store_memory
        self.spread = spread
        self._started_ray = False

    def connect(self) -> None:
        import ray

        if ray.is_initialized():
            return
        kwargs: dict = {"address": self.address, "log_to_driver": True, "configure_logging": False}
        if self.address == "local":
            kwargs.update(include_dashboard=False, object_store_memory=self.object_store_memory)
        ray.init(**kwargs)
        self._started_ray = True

    def shutdown(self) -> None:
        import ray

        if self._started_ray and ray.is_initialized():
            ray.shutdown()
        self._started_ray = False

    def check_root_reachable(self, root: Path) -> None:
        """Every alive node must see the same dataset directory; say which cannot."""
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        token = uuid.uuid4().hex
        probe = Path(root) / fmt.TMP_DIR / f"probe-{token}"
        probe.parent.mkdir(parents=True, exist_ok=True)
        probe.write_text(token)
        try:
            task = ray.remote(num_cpus=0)(_probe_root_task)
            nodes = [n for n in ray.nodes() if n.get("Alive")]
            refs = [
                task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(
                    str(root), token
                )
                for n in nodes
            ]
            results = ray.get(refs, timeout=120)
        finally:
            probe.unlink(missing_ok=True)
        blind = [(node, err) for node, ok, err in results if not ok]
        if blind:
            names = ", ".join(f"{node[:12]} ({err or 'token differs'})" for node, err in blind)
            raise RuntimeError(
                f"dataset root {root} is not reachable from every Ray node: {names}. "
                "Put the dataset on storage all nodes mount at the same path."
            )

    def build_one(self, root: Path, spec: ShardSpec, config: BuildConfig) -> ShardSummary:
        """One shard as one Ray task, waited for (the Prefect flow calls this from a task per
        shard; Prefect then owns retries of application errors, Ray those of worker death)."""
        import ray

        self.connect()
        task = ray.remote(num_cpus=self.num_cpus_per_task, max_retries=self.max_retries,
                          scheduling_strategy="SPREAD" if self.spread else "DEFAULT")(_build_shard_task)
        return ShardSummary.from_dict(ray.get(task.remote(str(root), spec, config)))

    def in_flight_limit(self) -> int:
        """``max_in_flight``, else two shards per CPU of the cluster (one decoding while one waits on
        I/O), so every CPU of any cluster is busy."""
        import ray

        self.connect()
        return self.max_in_flight or max(2, int(2 * ray.cluster_resources().get("CPU", 1)))

    def run_shards(self, root: Path, specs: list[ShardSpec], config: BuildConfig,
                   on_sample: Callable[[int], None] | None = None) -> Iterator[ShardSummary]:
        import ray

        self.connect()
        self.check_root_reachable(root)
        task = ray.remote(
            num_cpus=self.num_cpus_per_task,
            max_retries=self.max_retries,  # system failures: worker or node death
            scheduling_strategy="SPREAD" if self.spread else "DEFAULT",
        )(_build_shard_task)
        limit = self.in_flight_limit()
        config_ref = ray.put(config)
        pending = list(reversed(specs))
        in_flight: dict = {}
        while pending or in_flight:
            while pending and len(in_flight) < limit:
                spec = pending.pop()
                in_flight[task.remote(str(root), spec, config_ref)] = spec
            done, _ = ray.wait(list(in_flight), num_returns=1)
            spec = in_flight.pop(done[0])
            summary = ShardSummary.from_dict(ray.get(done[0]))
            if on_sample is not None:
                on_sample(len(spec))
            yield summary
