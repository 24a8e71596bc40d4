"""Check a dataset against its catalog: every shard's size, sha256 and row count, every chunk's
checksum, nothing missing, and what lies in the dataset's folders without being committed data.

Works on a local directory or an object-store URL alike: one listing per folder gives every object
and its size. Each committed shard is hashed and then read chunk by chunk through ``ShardReader``
(so HDF5 checks each chunk's Fletcher-32 checksum and a bad chunk is named by shard, row and sample);
a remote shard is downloaded once into a temporary file for both and removed afterwards. Shards
written before checksums existed (format 1) are named in a warning line, not counted as errors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from storage import format as fmt
from storage.atomic import sha256_file
from storage.catalog import load_catalog
from storage.location import (
    Location,
    as_location,
    list_files,
    local_file,
    polars_storage_options,
    sha256_of,
)
from storage.object_path import ObjectPath
from storage.shard import CorruptSampleError, ShardReader


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
    #: samples whose stored bytes fail their chunk checksum, one per (shard, row, array)
    corrupt_samples: list[CorruptSampleError] = field(default_factory=list)
    #: shards without per-chunk checksums (format 1): readable, but a corrupt chunk there reads as
    #: data; only the whole-file sha256 above protects them. A warning, not an error.
    unchecked: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.corrupt)

    def lines(self) -> list[str]:
        out = [
            f"dataset {self.root}: {self.checked} shards checked, "
            f"{len(self.missing)} missing, {len(self.corrupt)} corrupt, {len(self.uncommitted)} not built yet, "
            f"{len(self.orphans)} uncommitted objects"
        ]
        out += [f"  missing {m}" for m in self.missing]
        out += [f"  corrupt {c}" for c in self.corrupt]
        out += [
            f"  corrupt sample: shard {fmt.shard_name(e.shard)} row {e.row} (sample {e.sample_id or 'unknown'}) "
            f"{e.key}: {e.reason}"
            for e in self.corrupt_samples
        ]
        if self.unchecked:
            out.append(
                f"  warning: {len(self.unchecked)} shard(s) have no per-chunk checksums (format 1; a corrupt "
                f"chunk there reads as data until the sha256 check; rebuild to add them): "
                f"{', '.join(self.unchecked)}"
            )
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
    return (
        pl.scan_parquet(str(index_file), storage_options=polars_storage_options(root)).select(pl.len()).collect().item()
    )


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
            # cut short or padded: the chunks no longer sit where the file says
            report.corrupt.append(f"{name}: shard is {shards[shard_name]} bytes, dataset.json says {expected_bytes}")
        elif not _check_shard(root, name, entry, report):
            pass
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


def _check_shard(root: Location, name: str, entry: dict, report: ValidationReport) -> bool:
    """Hash the shard and read every chunk of it (one local copy of a remote shard serves both);
    record what fails. True when the shard is sound."""
    shard_id = int(name)
    with local_file(root / fmt.SHARDS_DIR / f"{name}.h5") as path:
        sha_ok = sha256_file(path) == entry["sha256"]
        if not sha_ok:
            report.corrupt.append(f"{name}: shard sha256 differs from dataset.json")
        try:
            with ShardReader(root, shard_id, path=path) as reader:
                bad = reader.verify()
                if reader.unchecked_keys():
                    report.unchecked.append(name)
        except (OSError, RuntimeError, KeyError, ValueError) as exc:
            # the HDF5 metadata itself is damaged: nothing to name below the shard
            if sha_ok:
                report.corrupt.append(f"{name}: shard is not a readable HDF5 file ({str(exc).splitlines()[0]})")
            return False
    report.corrupt_samples += bad
    if bad and sha_ok:  # bytes went bad before the hash was taken (the writer's disk or memory)
        report.corrupt.append(f"{name}: {len(bad)} chunk(s) fail their checksum though the sha256 matches")
    return sha_ok and not bad


def _orphans(
    root: Location, built: set[str], shards: dict[str, int], indexes: dict[str, int], rejects: dict[str, int]
) -> list[str]:
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
    leftovers = (
        list(tmp.iter_objects())
        if isinstance(tmp, ObjectPath)
        else ([p for p in Path(tmp).rglob("*") if p.is_file()] if Path(tmp).is_dir() else [])
    )
    if leftovers:
        out.append(f"{fmt.TMP_DIR}/: {len(leftovers)} temporary objects of unfinished attempts")
    return out
