"""Source adapters turn a dataset layout on disk into manifest rows (one per sample, no pixels).

Every adapter reports what it could not pair (unpaired or missing files, paths outside the root) as
``Problem`` records: they are counted, shown with the first few names and stored as manifest-stage
rejects, never dropped silently.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import polars as pl

from preprocess.registry import uri_columns
from storage.location import Location, as_location, is_remote, is_url


def manifest_schema() -> dict[str, pl.DataType]:
    """The manifest's columns: one ``uri_<modality>`` per registered file-backed modality."""
    return {**_MANIFEST_HEAD, **{c: pl.Utf8 for c in uri_columns().values()}, **_MANIFEST_TAIL}


_MANIFEST_HEAD: dict[str, pl.DataType] = {
    "sample_id": pl.Utf8,
    "source": pl.Utf8,
    "layout": pl.Utf8,
    "split": pl.Utf8,
    # The declared root; every uri_* is relative to it and must resolve inside it.
    "root": pl.Utf8,
}
_MANIFEST_TAIL: dict[str, pl.DataType] = {
    "caption": pl.Utf8,
    "label": pl.Utf8,
    "sensor": pl.Utf8,
    "fx": pl.Float64,
    "baseline_m": pl.Float64,
    "depth_encoding": pl.Utf8,
    "fps": pl.Float64,
    "t0": pl.Float64,
    "t1": pl.Float64,
    "anchor_s": pl.Float64,
}


class PathOutsideRoot(ValueError):
    """A manifest path resolves outside its source's declared root (``..``, absolute, symlink)."""


def resolve_inside(root: str | Path | Location, relative: str | Path) -> Location:
    """Resolve ``root/relative`` and refuse anything that lands outside ``root`` (``..``, an absolute
    path, a symlink out of a local root, a URL where a relative key belongs)."""
    root = as_location(root).resolve()
    text = str(relative)
    if is_url(text) or text.startswith("/") and is_remote(root):
        raise PathOutsideRoot(f"path {text!r} is not relative to the declared root {root}")
    candidate = (root / relative).resolve()
    if not candidate.is_relative_to(root):
        raise PathOutsideRoot(f"path {text!r} resolves to {candidate}, outside the declared root {root}")
    return candidate


def make_sample_id(source: str, relative_paths: list[str], t0: float | None = None, t1: float | None = None) -> str:
    """Stable id from the source name, the sample's relative paths and its time span, so reruns
    and other machines agree on it whatever the order of discovery."""
    span = "" if t0 is None and t1 is None else f"{t0!r}:{t1!r}"
    key = "\x1f".join([source, *sorted(relative_paths), span])
    return hashlib.sha1(key.encode()).hexdigest()[:20]


@dataclass(frozen=True)
class Problem:
    """An input that could not become a sample."""

    kind: str  # "unpaired", "missing", "outside_root", "unreadable"
    path: str
    message: str


@dataclass
class ScanResult:
    rows: list[dict[str, Any]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


class Source(ABC):
    """One dataset layout. Subclasses implement ``scan``; everything else is shared."""

    layout: ClassVar[str]
    # The modalities that make one sample of this layout (a pair): a source item without one of
    # them is a reject ("no audio stream"), unless the build keeps partial samples.
    partners: ClassVar[tuple[str, ...]] = ()
    # What the layout's scan looks for, for the error when a non-empty tree yields no sample.
    looks_for: ClassVar[str] = ""

    def __init__(self, root: str | Path | Location, name: str | None = None, split: str | None = None):
        # A local folder or a URL prefix: workers read the files straight from there.
        self.root = as_location(root).resolve()
        if not self.root.is_dir():
            kind = "prefix holds no objects" if is_remote(self.root) else "is not a directory"
            raise FileNotFoundError(f"{self.layout} source root {self.root} {kind}")
        self.name = name or f"{self.layout}:{self.root.name}"
        self.default_split = split

    @abstractmethod
    def scan(self) -> ScanResult:
        """Walk the root and return manifest rows and problems."""

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "layout": self.layout, "root": str(self.root)}

    # helpers for subclasses ---------------------------------------------------------------------
    def rel(self, path: Location) -> str:
        return path.resolve().relative_to(self.root).as_posix()

    def row(
        self, uris: dict[str, str], split: str, t0: float | None = None, t1: float | None = None, **meta: Any
    ) -> dict[str, Any]:
        columns = uri_columns()
        unknown = set(uris) - columns.keys()
        if unknown:
            raise ValueError(f"unknown modality {sorted(unknown)}; file-backed modalities: {sorted(columns)}")
        unique_paths = sorted(set(uris.values()))
        row: dict[str, Any] = {
            "sample_id": make_sample_id(self.name, unique_paths, t0, t1),
            "source": self.name,
            "layout": self.layout,
            "split": split,
            "root": str(self.root),
            "t0": t0,
            "t1": t1,
        }
        for modality, rel in uris.items():
            row[columns[modality]] = rel
        row.update(meta)
        return row


def check_inside(source: Source, relative: str, result: ScanResult) -> Location | None:
    """Resolve a path from a table; record a problem (and return None) if it escapes or is missing."""
    try:
        path = resolve_inside(source.root, relative)
    except PathOutsideRoot as exc:
        result.problems.append(Problem("outside_root", str(relative), str(exc)))
        return None
    if not path.is_file():
        result.problems.append(Problem("missing", str(relative), f"{relative} does not exist under {source.root}"))
        return None
    return path
