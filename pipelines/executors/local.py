"""The in-process executor: a plain loop, for debugging, tests and small builds."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from pipelines.config import BuildConfig
from pipelines.executors.base import Executor, WorkerFactory
from pipelines.plan import ShardSpec
from pipelines.shard_build import build_shard
from storage.shard import ShardSummary


class LocalExecutor(Executor):
    name = "local"
    in_process = True

    def run_shards(
        self, root: Path, specs: list[ShardSpec], config: BuildConfig, on_sample: Callable[[int], None] | None = None
    ) -> Iterator[ShardSummary]:
        tick = (lambda: on_sample(1)) if on_sample is not None else None
        for spec in specs:
            yield build_shard(root, spec, config, on_sample=tick)

    def map_on_workers(
        self,
        factory: WorkerFactory,
        method: str,
        items: Iterable[Any],
        workers: int | None = None,
        gpus_per_worker: float | None = None,
        cpus_per_worker: float = 1.0,
    ) -> Iterator[tuple[Any, Any]]:
        items = list(items)
        if not items:
            return
        worker = factory()  # one worker, built only when there is work for it
        call = getattr(worker, method)
        for item in items:
            yield item, call(item)
