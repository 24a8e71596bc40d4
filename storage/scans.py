"""Polars scans over a dataset's Parquet files (index, rejects, embedding stores), local or on an
object store (Polars reads the URLs itself, with the storage options bindset's own client uses).
Re-exported by ``storage``; modules inside the package import them from here."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from storage import format as fmt
from storage.location import Location, as_location, list_files, polars_storage_options
from storage.schema import REJECT_SCHEMA, index_schema


def scan_files(files: list, schema: dict | None = None) -> pl.LazyFrame:
    """One LazyFrame over Parquet files of one root: local paths, or URLs Polars scans natively with
    the same storage options bindset's own client uses (no bytes pass through Python)."""
    if not files:
        return pl.LazyFrame(schema=schema or {})
    options = polars_storage_options(files[0])
    sources = [str(f) for f in files]
    if schema is None:
        return pl.scan_parquet(sources, storage_options=options)
    # Files written before a column existed read it as null; columns of a modality this process
    # has not registered (a plugin's) are left out rather than failing the scan.
    return pl.scan_parquet(
        sources, schema=schema, storage_options=options, missing_columns="insert", extra_columns="ignore"
    )


def _scan_dir(directory: Location, schema: dict) -> pl.LazyFrame:
    # The index lists the files first: a shard's index object is its commit marker, so a listing
    # never includes a shard whose data is still uploading.
    return scan_files(list_files(directory, ".parquet"), schema)


def scan_index(dataset: str | Path | Location) -> pl.LazyFrame:
    """All committed samples of a dataset as one typed LazyFrame (one row per stored sample).
    ``dataset`` is a local path or a URL (``s3://bucket/ds``)."""
    return _scan_dir(as_location(dataset) / fmt.INDEX_DIR, index_schema())


def scan_rejects(dataset: str | Path | Location, standing: bool = True) -> pl.LazyFrame:
    """Every rejected input: manifest-stage (unpaired, missing, outside root) and build-stage.

    ``standing`` (default): the rejects that still stand, i.e. a sample's latest attempt, and none
    for samples a ``--retry-rejects`` recovered into the index; ``standing=False`` gives the full
    history of attempts."""
    root = as_location(dataset)
    history = _scan_dir(root / fmt.REJECTS_DIR, REJECT_SCHEMA)
    if not standing:
        return history
    stored = scan_index(root).select("sample_id")
    latest = pl.col("shard") == pl.col("shard").max().over("sample_id")
    per_sample = (
        history.filter(pl.col("sample_id").is_not_null()).filter(latest).join(stored, on="sample_id", how="anti")
    )
    return pl.concat([history.filter(pl.col("sample_id").is_null()), per_sample])
