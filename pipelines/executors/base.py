"""One interface for where shard builds run: in-process (local) or as Ray tasks."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Callable, Iterator

from pipelines.config import BuildConfig
from pipelines.plan import ShardSpec
from storage.shard import ShardSummary


class Executor(ABC):
    name: str

    @abstractmethod
    def run_shards(self, root: Path, specs: list[ShardSpec], config: BuildConfig,
                   on_sample: Callable[[int], None] | None = None) -> Iterator[ShardSummary]:
        """Build every spec, yielding each summary as its shard commits (any order);
        ``on_sample(n)`` advances progress by ``n`` samples."""

    def in_flight_limit(self) -> int:
        """Shards this executor keeps in flight at once (the Prefect flow submits as many)."""
        return 1
