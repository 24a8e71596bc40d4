"""Progress of a build: shards and samples, throughput and ETA (tqdm), quiet when disabled."""

from __future__ import annotations

import sys

from tqdm.auto import tqdm

from pipelines.plan import ShardSpec
from storage.shard import ShardSummary


class ShardProgress:
    def __init__(self, specs: list[ShardSpec], enabled: bool = True):
        self.enabled = enabled and bool(specs)
        self.total_samples = sum(len(s) for s in specs)
        self.total_shards = len(specs)
        self._samples = self._shards = None

    def __enter__(self) -> "ShardProgress":
        if self.enabled:
            self._shards = tqdm(total=self.total_shards, desc="shards", unit="shard", position=0, file=sys.stderr)
            self._samples = tqdm(total=self.total_samples, desc="samples", unit="sample", position=1, file=sys.stderr)
        return self

    def sample(self, n: int = 1) -> None:
        if self._samples is not None:
            self._samples.update(n)

    def shard_done(self, summary: ShardSummary, samples_seen: int | None = None) -> None:
        """A shard committed; ``samples_seen`` advances the sample bar when samples were not
        reported one by one (remote executors)."""
        if self._shards is not None:
            self._shards.update(1)
            self._shards.set_postfix(stored=summary.stored, rejected=summary.rejected, refresh=False)
        if samples_seen:
            self.sample(samples_seen)

    def __exit__(self, *exc) -> None:
        for bar in (self._samples, self._shards):
            if bar is not None:
                bar.close()
