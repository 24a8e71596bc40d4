"""On-disk layout of a bindset dataset (see DESIGN.md, "Storage format").

<dataset>/
  dataset.json              catalog: format_version, config + hash, sources, committed shards
  manifest.parquet          the planned samples
  shards/00042.h5           tensors, one HDF5 group per modality, sample-major, one sample per chunk
  index/00042.parquet       one row per stored sample; its appearance is the shard's commit point
  rejects/00042.parquet     bad inputs with stage and reason
  embeddings/<encoder-id>/00042.parquet
  _locks/, _tmp/            never visible as committed data
"""

from __future__ import annotations

from pathlib import Path

FORMAT_VERSION = 1

CATALOG_FILE = "dataset.json"
MANIFEST_FILE = "manifest.parquet"
SHARDS_DIR = "shards"
INDEX_DIR = "index"
REJECTS_DIR = "rejects"
EMBEDDINGS_DIR = "embeddings"
TMP_DIR = "_tmp"
LOCKS_DIR = "_locks"

# Manifest-stage problems (unpaired or missing files) are not tied to a shard.
MANIFEST_REJECTS_NAME = "manifest"


def shard_name(shard_id: int) -> str:
    """Zero-padded shard name; five digits sort correctly up to 100k shards."""
    if shard_id < 0:
        raise ValueError(f"shard id must be >= 0, got {shard_id}")
    return f"{shard_id:05d}"


def shard_path(root: Path, shard_id: int) -> Path:
    return Path(root) / SHARDS_DIR / f"{shard_name(shard_id)}.h5"


def index_path(root: Path, shard_id: int) -> Path:
    return Path(root) / INDEX_DIR / f"{shard_name(shard_id)}.parquet"


def rejects_path(root: Path, name: int | str) -> Path:
    stem = shard_name(name) if isinstance(name, int) else name
    return Path(root) / REJECTS_DIR / f"{stem}.parquet"
