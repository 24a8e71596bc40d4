"""Manifest -> shard specs: fixed-size, deterministic chunks of the sorted manifest."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import polars as pl


@dataclass(frozen=True)
class ShardSpec:
    """One unit of work: the manifest rows of one shard (small: paths and metadata, no pixels)."""

    shard_id: int
    rows: tuple[dict[str, Any], ...]

    def __len__(self) -> int:
        return len(self.rows)


def plan_shards(manifest: pl.DataFrame, shard_size: int, first_shard_id: int = 0) -> list[ShardSpec]:
    if shard_size <= 0:
        raise ValueError(f"shard_size must be positive, got {shard_size}")
    rows = manifest.to_dicts()
    return [
        ShardSpec(shard_id=first_shard_id + i, rows=tuple(rows[start : start + shard_size]))
        for i, start in enumerate(range(0, len(rows), shard_size))
    ]
