"""Embedding stores: ``embeddings/<encoder-id>/<shard>.parquet`` with ``sample_id`` and one
``Array(Float32, D)`` column per modality, committed per shard atomically (temp file, fsync, rename),
plus ``encoder.json`` describing the encoder. A backfill embeds exactly the committed shards whose
store file is missing."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from storage import format as fmt
from storage.location import Location, as_location, is_remote, list_files, publish_file, write_bytes_atomic
from storage.shard import committed_shard_ids

_ENCODER_ID = re.compile(r"^[A-Za-z0-9._+=-]+$")


def embedding_dir(root: str | Path | Location, encoder_id: str) -> Location:
    if not _ENCODER_ID.match(encoder_id) or encoder_id in (".", ".."):
        raise ValueError(f"encoder id {encoder_id!r} is not a safe directory name")
    return as_location(root) / fmt.EMBEDDINGS_DIR / encoder_id


def embedding_path(root: str | Path | Location, encoder_id: str, shard_id: int) -> Location:
    return embedding_dir(root, encoder_id) / f"{fmt.shard_name(shard_id)}.parquet"


def write_encoder_info(root: str | Path, encoder_id: str, info: dict[str, Any]) -> None:
    path = embedding_dir(root, encoder_id) / "encoder.json"
    if not path.exists():
        write_bytes_atomic(path, json.dumps(info, indent=2, sort_keys=True).encode() + b"\n")


def read_encoder_info(root: str | Path | Location, encoder_id: str) -> dict[str, Any] | None:
    path = embedding_dir(root, encoder_id) / "encoder.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


def embeddings_frame(sample_ids: list[str], vectors: dict[str, np.ndarray]) -> pl.DataFrame:
    columns: dict[str, Any] = {"sample_id": pl.Series("sample_id", sample_ids, dtype=pl.Utf8)}
    for modality, array in vectors.items():
        array = np.asarray(array, dtype=np.float32)
        if array.ndim != 2 or array.shape[0] != len(sample_ids):
            raise ValueError(f"{modality}: expected [{len(sample_ids)}, D] vectors, got {array.shape}")
        # A row of all-NaN marks a sample without this modality: stored as null, never as numbers.
        absent = np.isnan(array).all(axis=1)
        if not np.isfinite(array[~absent]).all():
            raise ValueError(f"{modality}: embeddings contain NaN or inf")
        series = pl.Series(
            modality,
            np.where(absent[:, None], 0.0, array).astype(np.float32),
            dtype=pl.Array(pl.Float32, array.shape[1]),
        )
        columns[modality] = pl.select(pl.when(pl.lit(pl.Series(~absent))).then(series)).to_series().alias(modality)
    return pl.DataFrame(columns)


def commit_embeddings(
    root: str | Path, encoder_id: str, shard_id: int, sample_ids: list[str], vectors: dict[str, np.ndarray]
) -> Path:
    """Write one shard's vectors; visible only once complete (rename on disk, one PUT on a store)."""
    final = embedding_path(root, encoder_id, shard_id)
    frame = embeddings_frame(sample_ids, vectors)
    if is_remote(final):
        buffer = io.BytesIO()
        frame.write_parquet(buffer)
        write_bytes_atomic(final, buffer.getvalue())
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp")
    frame.write_parquet(tmp)
    publish_file(tmp, final)
    return final


def embedded_shard_ids(root: str | Path | Location, encoder_id: str) -> list[int]:
    files = list_files(embedding_dir(root, encoder_id), ".parquet")
    return sorted(int(p.stem) for p in files if p.stem.isdigit())


def missing_shard_ids(root: str | Path, encoder_id: str) -> list[int]:
    """Committed shards that have no store file for this encoder yet."""
    done = set(embedded_shard_ids(root, encoder_id))
    return [s for s in committed_shard_ids(root) if s not in done]


def list_encoder_ids(root: str | Path | Location) -> list[str]:
    directory = as_location(root) / fmt.EMBEDDINGS_DIR
    if is_remote(directory):
        return sorted(p.name for p in directory.iterdir() if p.is_dir())
    return sorted(p.name for p in directory.iterdir() if p.is_dir()) if directory.is_dir() else []


def scan_embeddings(root: str | Path | Location, encoder_id: str) -> pl.LazyFrame:
    """All committed vectors of one encoder as a LazyFrame (sample_id + one Array column per modality);
    ``root`` may be a URL (Polars scans it natively)."""
    from storage.scans import scan_files

    files = list_files(embedding_dir(root, encoder_id), ".parquet")
    if not files:
        info = read_encoder_info(root, encoder_id) or {}
        schema = {"sample_id": pl.Utf8}
        for modality in info.get("modalities", []):
            schema[modality] = pl.Array(pl.Float32, int(info["dim"]))
        return pl.LazyFrame(schema=schema)
    return scan_files(files)
