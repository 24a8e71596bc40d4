"""Check a dataset against its catalog: every shard's sha256 and row count, nothing missing."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from storage import format as fmt
from storage.atomic import sha256_file
from storage.catalog import load_catalog


@dataclass
class ValidationReport:
    root: Path
    checked: int = 0
    missing: list[str] = field(default_factory=list)
    corrupt: list[str] = field(default_factory=list)  # "00003: shard sha256 differs"
    uncommitted: list[str] = field(default_factory=list)  # planned shards never built

    @property
    def ok(self) -> bool:
        return not (self.missing or self.corrupt)

    def lines(self) -> list[str]:
        out = [f"dataset {self.root}: {self.checked} shards checked, "
               f"{len(self.missing)} missing, {len(self.corrupt)} corrupt, {len(self.uncommitted)} not built yet"]
        out += [f"  missing {m}" for m in self.missing]
        out += [f"  corrupt {c}" for c in self.corrupt]
        return out


def validate_dataset(root: str | Path) -> ValidationReport:
    root = Path(root)
    catalog = load_catalog(root)
    if catalog is None:
        raise FileNotFoundError(f"{root} is not a bindset dataset (no dataset.json)")
    report = ValidationReport(root)
    for name, entry in sorted(catalog["shards"].items()):
        report.checked += 1
        shard_file = root / fmt.SHARDS_DIR / f"{name}.h5"
        index_file = root / fmt.INDEX_DIR / f"{name}.parquet"
        absent = [p.name for p in (shard_file, index_file) if not p.exists()]
        if absent:
            report.missing.append(f"{name}: {', '.join(absent)} absent")
            continue
        if sha256_file(shard_file) != entry["sha256"]:
            report.corrupt.append(f"{name}: shard sha256 differs from dataset.json")
        elif sha256_file(index_file) != entry["index_sha256"]:
            report.corrupt.append(f"{name}: index sha256 differs from dataset.json")
        else:
            rows = pl.scan_parquet(index_file).select(pl.len()).collect().item()
            if rows != entry["rows"]:
                report.corrupt.append(f"{name}: index has {rows} rows, dataset.json says {entry['rows']}")
    built = set(catalog["shards"])
    report.uncommitted = [fmt.shard_name(i) for i in range(catalog["planned_shards"]) if fmt.shard_name(i) not in built]
    return report
