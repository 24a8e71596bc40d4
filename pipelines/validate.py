"""Check a dataset against its catalog: every shard's size, sha256 and row count, nothing missing,
and what lies in the dataset's folders without being committed data.

Works on a local directory or an object-store URL alike: one listing per folder gives every object
and its size, and each committed shard and index is read back once to hash it (``sha256_of`` streams
it; nothing is kept).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from storage import format as fmt
from storage.catalog import load_catalog
from storage.location import Location, ObjectPath, as_location, list_files, polars_storage_options, sha256_of


@dataclass
class ValidationReport:
    root: Path | ObjectPath
    checked: int = 0
    missing: list[str] = field(default_factory=list)
    corrupt: list[str] = field(default_factory=list)  # "00003: shard sha256 differs"
    uncommitted: list[str] = field(default_factory=list)  # planned shards never built
    #: objects in shards/, index/, rejects/ or _tmp/ that are no committed shard's (an upload a killed
    #: worker left, an index committed after the driver last wrote dataset.json): readers ignore
    #: them and the next build records or replaces them, so they do not make the dataset invalid
    orphans: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.corrupt)

    def lines(self) -> list[str]:
        out = [f"dataset {self.root}: {self.checked} shards checked, "
               f"{len(self.missing)} missing, {len(self.corrupt)} corrupt, {len(self.uncommitted)} not built yet, "
               f"{len(self.orphans)} uncommitted objects"]
        out += [f"  missing {m}" for m in self.missing]
        out += [f"  corrupt {c}" for c in self.corrupt]
        out += [f"  uncommitted {o}" for o in self.orphans]
        return out


def _listing(directory: Location) -> dict[str, int]:
    """name -> size of every file directly in ``directory`` (one LIST on an object store, whose
    listing carries the sizes)."""
    out = {}
    for f in list_files(directory, ""):
        if f.is_file():  # listings also yield sub-folders (implied prefixes on object stores)
            out[f.name] = f.size() if isinstance(f, ObjectPath) else f.stat().st_size
    return out


def _rows(index_file: Location, root: Location) -> int:
    return pl.scan_parquet(str(index_file), storage_options=polars_storage_options(root)).select(pl.len()).collect().item()


def validate_dataset(root: str | Path | Location) -> ValidationReport:
    root = as_location(root)
    catalog = load_catalog(root)
    if catalog is None:
        raise FileNotFoundError(f"{root} is not a bindset dataset (no dataset.json)")
    report = ValidationReport(root)
    shards = _listing(root / fmt.SHARDS_DIR)
    indexes = _listing(root / fmt.INDEX_DIR)
    rejects = _listing(root / fmt.REJECTS_DIR)
    for name, entry in sorted(catalog["shards"].items()):
        report.checked += 1
        shard_name, index_name = f"{name}.h5", f"{name}.parquet"
        absent = [n for n, listed in ((shard_name, shards), (index_name, indexes)) if n not in listed]
        if absent:
            report.missing.append(f"{name}: {', '.join(absent)} absent")
            continue
        expected_bytes = entry.get("bytes")
        if expected_bytes is not None and shards[shard_name] != expected_bytes:
            report.corrupt.append(f"{name}: shard is {shards[shard_name]} bytes, dataset.json says {expected_bytes}")
        elif sha256_of(root / fmt.SHARDS_DIR / shard_name) != entry["sha256"]:
            report.corrupt.append(f"{name}: shard sha256 differs from dataset.json")
        elif sha256_of(root / fmt.INDEX_DIR / index_name) != entry["index_sha256"]:
            report.corrupt.append(f"{name}: index sha256 differs from dataset.json")
        else:
            rows = _rows(root / fmt.INDEX_DIR / index_name, root)
            if rows != entry["rows"]:
                report.corrupt.append(f"{name}: index has {rows} rows, dataset.json says {entry['rows']}")
    built = set(catalog["shards"])
    report.uncommitted = [fmt.shard_name(i) for i in range(catalog["planned_shards"]) if fmt.shard_name(i) not in built]
    report.orphans = _orphans(root, built, shards, indexes, rejects)
    return report


def _orphans(root: Location, built: set[str], shards: dict[str, int], indexes: dict[str, int],
             rejects: dict[str, int]) -> list[str]:
    out = []
    for name in sorted(indexes):
        stem = name.removesuffix(".parquet")
        if stem not in built:
            out.append(f"{fmt.INDEX_DIR}/{name}: committed index not in dataset.json (the next build records it)")
    for folder, listed, suffix in ((fmt.SHARDS_DIR, shards, ".h5"), (fmt.REJECTS_DIR, rejects, ".parquet")):
        for name in sorted(listed):
            stem = name.removesuffix(suffix)
            if stem == fmt.MANIFEST_REJECTS_NAME and folder == fmt.REJECTS_DIR:
                continue
            if stem not in built and f"{stem}.parquet" not in indexes:
                out.append(f"{folder}/{name}: no index commits it (an unfinished attempt; the next build replaces it)")
    tmp = root / fmt.TMP_DIR
    leftovers = list(tmp.iter_objects()) if isinstance(tmp, ObjectPath) else (
        [p for p in Path(tmp).rglob("*") if p.is_file()] if Path(tmp).is_dir() else [])
    if leftovers:
        out.append(f"{fmt.TMP_DIR}/: {len(leftovers)} temporary objects of unfinished attempts")
    return out
