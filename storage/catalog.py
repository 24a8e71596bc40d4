"""``dataset.json``: the catalog of a dataset (format version, config and its hash, sources,
committed shards with sha256 and row counts). Only the build driver writes it, atomically."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from storage import format as fmt
from storage.location import Location, as_location, list_files, sha256_of, write_bytes_atomic


def config_hash(config: dict[str, Any]) -> str:
    """Stable hash of a JSON-able config: keys sorted, no whitespace."""
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def catalog_path(root: str | Path | Location) -> Location:
    return as_location(root) / fmt.CATALOG_FILE


def load_catalog(root: str | Path | Location) -> dict[str, Any] | None:
    path = catalog_path(root)
    try:
        text = path.read_text()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None
    catalog = json.loads(text)
    version = catalog.get("format_version")
    if version not in fmt.READABLE_FORMAT_VERSIONS:
        raise ValueError(
            f"{path} has format_version {version!r}; this bindset reads versions "
            f"{', '.join(map(str, fmt.READABLE_FORMAT_VERSIONS))}"
        )
    return catalog


def new_catalog(
    config: dict[str, Any], sources: list[dict[str, Any]], manifest_rows: int, manifest_sha256: str, planned_shards: int
) -> dict[str, Any]:
    return {
        "format_version": fmt.FORMAT_VERSION,
        "config": config,
        "config_hash": config_hash(config),
        "sources": sources,
        "manifest": {"rows": manifest_rows, "sha256": manifest_sha256},
        "planned_shards": planned_shards,
        "shards": {},
    }


def write_catalog(root: str | Path | Location, catalog: dict[str, Any]) -> None:
    data = json.dumps(catalog, indent=2, sort_keys=True).encode() + b"\n"
    write_bytes_atomic(catalog_path(root), data)


def shard_entry(summary: Any) -> dict[str, Any]:
    """The catalog's record of a committed shard (``summary`` is a ShardSummary)."""
    return {
        "rows": summary.stored,
        "rejected": summary.rejected,
        "reject_reasons": dict(summary.reject_reasons),
        "sha256": summary.shard_sha256,
        "index_sha256": summary.index_sha256,
        "bytes": summary.bytes_written,
        "node_id": summary.node_id,
    }


def content_hash(root: str | Path | Location) -> str:
    """Hash of a dataset's committed content (shard and index bytes, by shard name). Two builds of
    the same config and inputs agree on it however they were scheduled, interrupted or resumed, and
    whether they live on a local disk or an object store (the bytes are read back, not trusted)."""
    digest = hashlib.sha256()
    root = as_location(root)
    for index_file in list_files(root / fmt.INDEX_DIR, ".parquet"):
        name = index_file.stem
        digest.update(name.encode())
        digest.update(sha256_of(index_file).encode())
        digest.update(sha256_of(root / fmt.SHARDS_DIR / f"{name}.h5").encode())
    return digest.hexdigest()
