"""One interface for where work runs: in-process (local) or on a Ray cluster.

Two kinds of work go through it:

- **shard builds** (``run_shards`` / ``build_one``): stateless, one task per shard;
- **stateful workers** (``map_on_workers``): a worker object is built once per worker (an encoder
  with its model loaded) and then called on one item after another; embedding backfills use it.

Builds and embeds on Ray therefore share one connection (``RayExecutor.connect``) and one way of
naming the cluster (``--ray-address`` / ``RAY_ADDRESS`` / a private local Ray).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from pipelines.config import BuildConfig
from pipelines.plan import ShardSpec
from storage.shard import ShardSummary

#: Builds the worker object; called once per worker, in the worker's process. Remote executors
#: pickle it, so it must be picklable (a top-level class or ``functools.partial`` of one).
WorkerFactory = Callable[[], Any]


class Executor(ABC):
    name: str
    #: True where workers run in the caller's process: a factory may then hand over objects it
    #: already holds (a loaded model) instead of building them again.
    in_process: bool = False

    @abstractmethod
    def run_shards(
        self, root: Path, specs: list[ShardSpec], config: BuildConfig, on_sample: Callable[[int], None] | None = None
    ) -> Iterator[ShardSummary]:
        """Build every spec, yielding each summary as its shard commits (any order);
        ``on_sample(n)`` advances progress by ``n`` samples."""

    @abstractmethod
    def map_on_workers(
        self,
        factory: WorkerFactory,
        method: str,
        items: Iterable[Any],
        workers: int | None = None,
        gpus_per_worker: float | None = None,
        cpus_per_worker: float = 1.0,
    ) -> Iterator[tuple[Any, Any]]:
        """Call ``factory()`` once per worker, then ``worker.<method>(item)`` for every item, each item
        on exactly one worker; yields ``(item, result)`` as results arrive (any order).

        ``workers``: how many workers (default: one per GPU of the cluster where it has GPUs, else
        one); ``gpus_per_worker``: GPUs each worker holds (default: 1 where the cluster has GPUs,
        else 0). In-process executors run one worker and ignore both."""

    def connect(self) -> None:
        """Reach the compute (a no-op in-process)."""

    def check_root_reachable(self, root) -> None:
        """Every worker can read and write ``root`` (a no-op in-process)."""

    def in_flight_limit(self) -> int:
        """Shards this executor keeps in flight at once (the Prefect flow submits as many)."""
        return 1
