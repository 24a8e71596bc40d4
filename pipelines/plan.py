"""Manifest -> shard specs: fixed-size, deterministic chunks of the sorted manifest.

The stored manifest records each sample's shard (column ``shard``), so the plan of a dataset that
grew (samples appended as new shards) or had rejects retried (recovered samples in new shards) is
read back exactly, not re-derived: re-chunking the grown manifest would move appended samples into
an already committed shard, and a crash before their own shard committed would lose them."""

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


SHARD_COLUMN = "shard"


def assign_shards(manifest: pl.DataFrame, shard_size: int, first_shard_id: int = 0) -> pl.DataFrame:
    """The manifest with a ``shard`` column: consecutive chunks of ``shard_size`` rows from
    ``first_shard_id`` (the same chunks ``plan_shards`` makes)."""
    if shard_size <= 0:
        raise ValueError(f"shard_size must be positive, got {shard_size}")
    ids = pl.int_range(0, pl.len(), dtype=pl.Int32) // shard_size + first_shard_id
    return manifest.drop(SHARD_COLUMN, strict=False).with_columns(ids.alias(SHARD_COLUMN))


def plan_from_manifest(manifest: pl.DataFrame) -> list[ShardSpec]:
    """Shard specs from a manifest's ``shard`` column, rows in manifest order, shards by id."""
    rows_by_shard: dict[int, list[dict[str, Any]]] = {}
    shards = manifest[SHARD_COLUMN].to_list()
    for shard, row in zip(shards, manifest.drop(SHARD_COLUMN).to_dicts()):
        rows_by_shard.setdefault(int(shard), []).append(row)
    return [ShardSpec(shard_id=k, rows=tuple(rows_by_shard[k])) for k in sorted(rows_by_shard)]


def next_shard_id(manifest: pl.DataFrame | None, committed: list[str] | None = None) -> int:
    """The first shard id no planned or committed shard uses."""
    used = [-1]
    if manifest is not None and manifest.height:
        used.append(int(manifest[SHARD_COLUMN].max()))
    used += [int(name) for name in committed or [] if name.isdigit()]
    return max(used) + 1
