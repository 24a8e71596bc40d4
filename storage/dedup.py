"""Dedup tables: ``dedup/<name>.parquet`` under a dataset, one row per stored sample it judged.

Columns: ``sample_id``, ``group`` (Int64, one number per duplicate group; a sample without duplicates
is a group of one), ``kept`` (the group's representative), ``reason`` (``unique``, ``representative``,
``exact`` or ``near``), ``similarity`` (cosine to the representative in the embedding store, the
minimum over the compared modalities; 1.0 for exact copies; null where there is no vector) and
``representative`` (the kept sample_id of the group). The run's settings (threshold, store, rule,
counts) are in the Parquet footer under ``bindset.dedup``.

A table never deletes anything: the loader (``ShardDataset(dedup=name)``), training and export skip
the samples it marks ``kept = false``. Samples stored after the table was written are not in it
and are kept. ``pipelines.curation.dedup`` writes the tables; this module only knows their format.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import polars as pl

from storage.location import Location, as_location, list_files, write_bytes_atomic

DEDUP_DIR = "dedup"
METADATA_KEY = "bindset.dedup"
DEDUP_SCHEMA: dict[str, pl.DataType] = {
    "sample_id": pl.Utf8,
    "group": pl.Int64,
    "kept": pl.Boolean,
    "reason": pl.Utf8,
    "similarity": pl.Float32,
    "representative": pl.Utf8,
}
_NAME = re.compile(r"^[A-Za-z0-9._+=-]+$")


def dedup_path(root: str | Path | Location, name: str) -> Location:
    if not _NAME.match(name) or name in (".", ".."):
        raise ValueError(f"dedup name {name!r} is not a safe file name (letters, digits, . _ + = -)")
    return as_location(root) / DEDUP_DIR / f"{name}.parquet"


def list_dedup_names(root: str | Path | Location) -> list[str]:
    return [p.stem for p in list_files(as_location(root) / DEDUP_DIR, ".parquet")]


def write_dedup(root: str | Path | Location, name: str, frame: pl.DataFrame, meta: dict[str, Any]) -> Location:
    """Publish a table atomically (rename on disk, one PUT on an object store), settings in the footer."""
    import pyarrow.parquet as pq

    frame = frame.select([pl.col(c).cast(t) for c, t in DEDUP_SCHEMA.items()])
    table = frame.to_arrow()
    table = table.replace_schema_metadata({METADATA_KEY: json.dumps(meta, sort_keys=True, default=str)})
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    path = dedup_path(root, name)
    write_bytes_atomic(path, buffer.getvalue())
    return path


def read_dedup(root: str | Path | Location, name: str) -> pl.DataFrame:
    path = dedup_path(root, name)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        known = list_dedup_names(root)
        raise FileNotFoundError(
            f"no dedup table {name!r} in {as_location(root)} "
            f"({'has: ' + ', '.join(known) if known else 'none written yet: run bindset dedup'})"
        ) from None
    return pl.read_parquet(io.BytesIO(data))


def read_dedup_meta(root: str | Path | Location, name: str) -> dict[str, Any]:
    import pyarrow.parquet as pq

    meta = pq.read_schema(io.BytesIO(dedup_path(root, name).read_bytes())).metadata or {}
    raw = meta.get(METADATA_KEY.encode())
    return json.loads(raw) if raw else {}


def dropped_ids(root: str | Path | Location, name: str) -> pl.DataFrame:
    """``sample_id`` of the samples a table leaves out (its duplicates that are not kept)."""
    return read_dedup(root, name).filter(~pl.col("kept")).select("sample_id")


__all__ = [
    "DEDUP_DIR",
    "DEDUP_SCHEMA",
    "dedup_path",
    "dropped_ids",
    "list_dedup_names",
    "read_dedup",
    "read_dedup_meta",
    "write_dedup",
]
