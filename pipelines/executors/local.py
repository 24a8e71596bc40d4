"""The in-process executor: a plain loop, for debugging, tests and small builds."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

from pipelines.build import build_shard
from pipelines.config import BuildConfig
from pipelines.executors.base import Executor
from pipelines.plan import ShardSpec
from storage.shard import ShardSummary


class LocalExecutor(Executor):
    name = "local"

    def run_shards(self, root: Path, specs: list[ShardSpec], config: BuildConfig,
                   on_sample: Callable[[int], None] | None = None) -> Iterator[ShardSummary]:
        tick = (lambda: on_sample(1)) if on_sample is not None else None
        for spec in specs:
            yield build_shard(root, spec, config, on_sample=tick)
