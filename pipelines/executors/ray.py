"""Shard builds as Ray tasks and stateful workers (encoders) as Ray actors: local Ray by default,
any cluster by address, one connection for both (``RayExecutor.connect``; nothing else calls
``ray.init``).

Each task builds and commits one shard straight to the dataset directory and returns only its small
summary (the object store never carries pixels). Tasks are retried on worker or node death: a shard is
published by atomic renames with the index last, so a killed attempt leaves nothing visible and the
retry rebuilds the same bytes. The number of shards in flight is bounded so driver memory stays flat
however many shards the plan holds.

Stateful work (``map_on_workers``) runs on a pool of actors that build their worker once (a model
loaded once per actor, one GPU per actor where the cluster has GPUs) and take one item after another;
an actor that dies is restarted and its item retried.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from pipelines.config import BuildConfig
from pipelines.executors.base import Executor, WorkerFactory
from pipelines.plan import ShardSpec
from storage import format as fmt
from storage.location import as_location
from storage.object_path import ObjectPath
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

    from preprocess import video_decode

    n = threads_for_allotment(ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0))
    if not os.environ.get("BINDSET_DECODE_THREADS"):
        video_decode.DECODE_THREADS = n
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


def _build_shard_task(root, spec: ShardSpec, config: BuildConfig) -> dict:
    import ray

    from pipelines.shard_build import build_shard

    _use_only_the_allotted_cpus()
    # A local root travels as a string, an object-store root as an ObjectPath (URL + options; the
    # worker builds its own client with its own node's credentials).
    summary = build_shard(as_location(root), spec, config)
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


def _probe_store_task(root: ObjectPath) -> tuple[str, bool, str]:
    """Can this node list the object-store root and write (then delete) an object below it, with
    this node's own credentials and environment?"""
    import ray

    from storage.location import check_reachable

    node = ray.get_runtime_context().get_node_id()
    try:
        check_reachable(root, write=True)
    except Exception as exc:  # noqa: BLE001 - every failure becomes the node's one-line reason
        lines = str(exc).strip().splitlines()
        return node, False, lines[0] if lines else type(exc).__name__
    return node, True, ""


class _WorkerHost:
    """A Ray actor holding one worker object, built once by the factory on the actor's process."""

    def __init__(self, factory: WorkerFactory):
        self.worker = factory()

    def call(self, method: str, item: Any) -> Any:
        return getattr(self.worker, method)(item)


def _actor_failure(exc: BaseException) -> str:
    """The cause of an actor's death in one line (Ray's message carries a traceback)."""
    text = str(exc)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    # The application error that killed __init__ is the last "Type: message" line of the traceback.
    for line in reversed(lines):
        head = line.split(":", 1)[0]
        if head.endswith(("Error", "Exception")) and " " not in head:
            return line
    return lines[0] if lines else type(exc).__name__


class RayExecutor(Executor):
    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        max_in_flight: int | None = None,
        max_retries: int = 3,
        num_cpus_per_task: float = 1.0,
        object_store_memory: int = DEFAULT_OBJECT_STORE_BYTES,
        spread: bool = True,
    ):
        # Explicit address, else RAY_ADDRESS (a user's cluster), else a private local Ray.
        self.address = address or os.environ.get("RAY_ADDRESS") or "local"
        self.max_in_flight = max_in_flight
        self.max_retries = max_retries
        self.num_cpus_per_task = num_cpus_per_task
        self.object_store_memory = object_store_memory
        self.spread = spread

    def connect(self) -> None:
        import ray

        if ray.is_initialized():
            return
        kwargs: dict = {"address": self.address, "log_to_driver": True, "configure_logging": False}
        if self.address == "local":
            kwargs.update(include_dashboard=False, object_store_memory=self.object_store_memory)
        ray.init(**kwargs)

    def _on_every_node(self, fn: Callable, *args) -> list:
        """``fn(*args)`` once on every alive node (zero CPUs: it runs even on a busy cluster)."""
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        self.connect()
        task = ray.remote(num_cpus=0)(fn)
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        refs = [
            task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(*args)
            for n in nodes
        ]
        return ray.get(refs, timeout=120)

    def check_root_reachable(self, root) -> None:
        """Every alive node must reach the dataset root; one error names the nodes that cannot.

        Local roots: each node reads a token file the driver wrote (the same directory must be
        mounted at the same path everywhere). Object-store roots: each node lists the root and writes
        and deletes a probe object with its own credentials (environment, instance role...)."""
        location = as_location(root) if not isinstance(root, ObjectPath) else root
        if isinstance(location, ObjectPath):
            results = self._on_every_node(_probe_store_task, location)
            blind = [(node, err) for node, ok, err in results if not ok]
            if blind:
                names = ", ".join(f"{node[:12]} ({err})" for node, err in blind)
                raise RuntimeError(
                    f"dataset root {location} is not reachable from every Ray node: {names}. "
                    "Give every node credentials for the bucket (environment, profile or instance role) "
                    "or pass --storage-option."
                )
            return
        self._check_mounted_root(Path(location))

    def _check_mounted_root(self, root: Path) -> None:
        token = uuid.uuid4().hex
        probe = Path(root) / fmt.TMP_DIR / f"probe-{token}"
        probe.parent.mkdir(parents=True, exist_ok=True)
        probe.write_text(token)
        try:
            results = self._on_every_node(_probe_root_task, str(root), token)
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
        task = ray.remote(
            num_cpus=self.num_cpus_per_task,
            max_retries=self.max_retries,
            scheduling_strategy="SPREAD" if self.spread else "DEFAULT",
        )(_build_shard_task)
        return ShardSummary.from_dict(ray.get(task.remote(_portable(root), spec, config)))

    def in_flight_limit(self) -> int:
        """``max_in_flight``, else two shards per CPU of the cluster (one decoding while one waits on
        I/O), so every CPU of any cluster is busy."""
        import ray

        self.connect()
        return self.max_in_flight or max(2, int(2 * ray.cluster_resources().get("CPU", 1)))

    def run_shards(
        self, root: Path, specs: list[ShardSpec], config: BuildConfig, on_sample: Callable[[int], None] | None = None
    ) -> Iterator[ShardSummary]:
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
        portable_root = _portable(root)
        pending = list(reversed(specs))
        in_flight: dict = {}
        while pending or in_flight:
            while pending and len(in_flight) < limit:
                spec = pending.pop()
                in_flight[task.remote(portable_root, spec, config_ref)] = spec
            done, _ = ray.wait(list(in_flight), num_returns=1)
            spec = in_flight.pop(done[0])
            summary = ShardSummary.from_dict(ray.get(done[0]))
            if on_sample is not None:
                on_sample(len(spec))
            yield summary

    def map_on_workers(
        self,
        factory: WorkerFactory,
        method: str,
        items: Iterable[Any],
        workers: int | None = None,
        gpus_per_worker: float | None = None,
        cpus_per_worker: float = 1.0,
    ) -> Iterator[tuple[Any, Any]]:
        """An actor pool: ``factory()`` runs once per actor; each item goes to the next idle actor.

        Actors that die (worker or node loss) are restarted and the item retried, up to
        ``max_retries`` times; an error raised by the worker itself is not retried and ends the map.
        """
        import ray
        from ray.exceptions import RayActorError

        items = list(items)
        if not items:
            return
        self.connect()
        cluster_gpus = float(ray.cluster_resources().get("GPU", 0))
        if gpus_per_worker is None:
            gpus_per_worker = 1.0 if cluster_gpus >= 1 else 0.0
        if workers is None:
            workers = int(cluster_gpus // gpus_per_worker) if gpus_per_worker else 1
        workers = max(1, min(int(workers), len(items)))
        host = ray.remote(
            num_cpus=cpus_per_worker,
            num_gpus=gpus_per_worker,
            max_restarts=self.max_retries,
            max_task_retries=self.max_retries,
        )(_WorkerHost)
        # The factory goes inline with each actor's creation (it is small: a spec, a root, a few
        # digests), not through the object store: a restart must not depend on an object that may
        # have been released (Ray logs an error for that case).
        actors = [host.remote(factory) for _ in range(workers)]
        try:
            idle = list(actors)
            pending = list(reversed(items))
            in_flight: dict = {}
            while pending or in_flight:
                while pending and idle:
                    actor = idle.pop()
                    item = pending.pop()
                    in_flight[actor.call.remote(method, item)] = (actor, item)
                done, _ = ray.wait(list(in_flight), num_returns=1)
                actor, item = in_flight.pop(done[0])
                try:
                    result = ray.get(done[0])
                except RayActorError as exc:
                    raise RuntimeError(
                        f"a {method} worker died and could not be restarted: {_actor_failure(exc)}"
                    ) from None
                idle.append(actor)
                yield item, result
        finally:
            for actor in actors:
                ray.kill(actor)


def _portable(root):
    """What a task receives for a root: a string path, or the ObjectPath itself (URL + options)."""
    location = root if isinstance(root, ObjectPath) else as_location(root)
    return location if isinstance(location, ObjectPath) else str(location)
