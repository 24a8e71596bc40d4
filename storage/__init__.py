"""Storage: shards (HDF5 + Parquet index), rejects, catalog, commit protocol, Polars scans."""

from __future__ import annotations

from pathlib import Path

from storage.catalog import load_catalog, write_catalog
from storage.embeddings import scan_embeddings
from storage.location import Location
from storage.scans import scan_files, scan_index, scan_rejects
from storage.shard import CorruptSampleError, ShardReader, ShardSummary, ShardWriter, committed_shard_ids


def __getattr__(name: str):
    # The PyTorch loader imports torch: load it on first use so Polars-only readers stay light.
    if name in ("ShardDataset", "collate"):
        from storage import loader

        return getattr(loader, name)
    raise AttributeError(f"module 'storage' has no attribute {name!r}")


def open_dataset(dataset: str | Path | Location):
    """A reader returning model-ready arrays for stored samples."""
    from storage.reader import DatasetReader

    return DatasetReader(dataset)


__all__ = [
    "CorruptSampleError",
    "open_dataset",
    "scan_embeddings",
    "ShardDataset",
    "ShardReader",
    "ShardSummary",
    "ShardWriter",
    "collate",
    "committed_shard_ids",
    "load_catalog",
    "scan_files",
    "scan_index",
    "scan_rejects",
    "write_catalog",
]
