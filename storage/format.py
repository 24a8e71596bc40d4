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

from storage.location import Location, as_location

# 2: every HDF5 chunk carries a Fletcher-32 checksum; the index footer records the shard's sha256.
# Version 1 datasets (no checksums) stay readable; `bindset validate` names their shards.
FORMAT_VERSION = 2
READABLE_FORMAT_VERSIONS = (1, 2)

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


# Every path below takes a local path, a URL string or an ObjectPath and returns the same kind.


def shard_path(root: str | Path | Location, shard_id: int) -> Location:
    return as_location(root) / SHARDS_DIR / f"{shard_name(shard_id)}.h5"


def index_path(root: str | Path | Location, shard_id: int) -> Location:
    return as_location(root) / INDEX_DIR / f"{shard_name(shard_id)}.parquet"


def rejects_path(root: str | Path | Location, name: int | str) -> Location:
    stem = shard_name(name) if isinstance(name, int) else name
    return as_location(root) / REJECTS_DIR / f"{stem}.parquet"
