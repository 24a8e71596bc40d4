"""Adapters driven by a table: image–caption pairs and a user's own CSV/Parquet of paired paths."""

from __future__ import annotations

import io
from pathlib import Path

import polars as pl

from pipelines.sources.base import Problem, ScanResult, Source, check_inside
from preprocess.registry import uri_columns
from storage.location import Location, as_location, is_remote

_META_COLUMNS = {
    "split",
    "caption",
    "label",
    "sensor",
    "fx",
    "baseline_m",
    "depth_encoding",
    "fps",
    "t0",
    "t1",
    "anchor_s",
}


def read_table(path: Location) -> pl.DataFrame:
    suffix = path.suffix.lower()
    source = io.BytesIO(path.read_bytes()) if is_remote(path) else path
    if suffix == ".parquet":
        return pl.read_parquet(source)
    if suffix == ".csv":
        return pl.read_csv(source, infer_schema_length=10000)
    if suffix in (".jsonl", ".ndjson"):
        return pl.read_ndjson(source)
    raise ValueError(f"{path}: unsupported table format {suffix!r} (use .parquet, .csv or .jsonl)")


class ImageTextSource(Source):
    """``images/*.jpg`` plus a table of (path, caption), paths relative to the root."""

    layout = "image-text"
    looks_for = "captions.parquet|csv|jsonl (path, caption) and the images it lists"
    partners = ("image", "text")

    def __init__(self, root, name=None, split=None, table: str | None = None):
        super().__init__(root, name, split)
        candidates = [table] if table else ["captions.parquet", "captions.csv", "captions.jsonl"]
        found = [self.root / c for c in candidates if (self.root / c).is_file()]
        if not found:
            raise FileNotFoundError(f"image-text source {self.root}: none of {candidates} exists")
        self.table_path = found[0]

    def scan(self) -> ScanResult:
        table = read_table(self.table_path)
        missing = {"path", "caption"} - set(table.columns)
        if missing:
            raise ValueError(f"{self.table_path} lacks column(s) {sorted(missing)}; has {table.columns}")
        result = ScanResult()
        for record in table.iter_rows(named=True):
            rel = str(record["path"])
            if check_inside(self, rel, result) is None:
                continue
            caption = record["caption"]
            if caption is None or not str(caption).strip():
                result.problems.append(Problem("missing", rel, f"{rel}: empty caption"))
                continue
            split = record.get("split") or self.default_split or "train"
            result.rows.append(self.row({"image": rel}, split, caption=str(caption)))
        return result


class GenericSource(Source):
    """A user's own table of paired paths: columns named after file-backed modalities (image, depth,
    thermal, video, audio, imu, and any registered one) plus optional metadata (split, caption, label, sensor, fx, baseline_m,
    depth_encoding, fps, t0, t1, anchor_s). Paths are relative to the root (default: the table's folder)."""

    layout = "generic"

    def __init__(self, table: str | Path, root: str | Path | None = None, name=None, split=None):
        self.table_path = as_location(table).resolve()
        if not self.table_path.is_file():
            raise FileNotFoundError(f"generic source table {self.table_path} does not exist")
        super().__init__(root or self.table_path.parent, name or f"generic:{self.table_path.stem}", split)

    def scan(self) -> ScanResult:
        table = read_table(self.table_path)
        known = uri_columns()
        modalities = [m for m in known if m in table.columns]
        if not modalities:
            raise ValueError(
                f"{self.table_path}: no modality column; expected some of {sorted(known)}, got {table.columns}"
            )
        result = ScanResult()
        for record in table.iter_rows(named=True):
            uris = {m: str(record[m]) for m in modalities if record[m] not in (None, "")}
            if not all(check_inside(self, rel, result) is not None for rel in uris.values()):
                continue
            if len(uris) < len(modalities):
                present = ", ".join(uris.values()) or "(no path)"
                result.problems.append(
                    Problem("unpaired", present, f"row with {present} lacks {sorted(set(modalities) - set(uris))}")
                )
                continue
            meta = {k: record[k] for k in _META_COLUMNS & set(table.columns) if k != "split"}
            if "text" in table.columns and "caption" not in meta:
                meta["caption"] = record["text"]
            split = record.get("split") or self.default_split or "train"
            result.rows.append(self.row(uris, split, meta.pop("t0", None), meta.pop("t1", None), **meta))
        return result
