"""Storage: shards (HDF5 + Parquet index), rejects, catalog, commit protocol, Polars scans."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from storage import format as fmt
from storage.catalog import load_catalog, write_catalog
from storage.embeddings import scan_embeddings
from storage.schema import INDEX_SCHEMA, REJECT_SCHEMA
from storage.shard import ShardReader, ShardSummary, ShardWriter, committed_shard_ids


def _scan_dir(directory: Path, schema: dict) -> pl.LazyFrame:
    files = sorted(directory.glob("*.parquet")) if directory.is_dir() else []
    if not files:
        return pl.LazyFrame(schema=schema)
    return pl.scan_parquet(files, schema=schema)


def scan_index(dataset: str | Path) -> pl.LazyFrame:
    """All committed samples of a dataset as one typed LazyFrame (one row per stored sample)."""
    return _scan_dir(Path(dataset) / fmt.INDEX_DIR, INDEX_SCHEMA)


def scan_rejects(dataset: str | Path) -> pl.LazyFrame:
    """Every rejected input: manifest-stage (unpaired, missing, outside root) and build-stage."""
    return _scan_dir(Path(dataset) / fmt.REJECTS_DIR, REJECT_SCHEMA)


def __getattr__(name: str):
    # The PyTorch loader imports torch: load it on first use so Polars-only readers stay light.
    if name in ("ShardDataset", "collate"):
        from storage import loader

        return getattr(loader, name)
    raise AttributeError(f"module 'storage' has no attribute {name!r}")


def open_dataset(dataset: str | Path):
    """A reader returning model-ready arrays for stored samples."""
    from storage.reader import DatasetReader

    return DatasetReader(dataset)


__all__ = [
    "open_dataset",
    "scan_embeddings",
    "ShardDataset",
    "ShardReader",
    "ShardSummary",
    "ShardWriter",
    "collate",
    "committed_shard_ids",
    "load_catalog",
    "scan_index",
    "scan_rejects",
    "write_catalog",
]
