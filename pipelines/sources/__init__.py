"""Dataset layouts on disk -> ``manifest.parquet`` rows. One adapter per layout."""

from __future__ import annotations

from pathlib import Path

from pipelines.sources.base import (
    PathOutsideRoot,
    Problem,
    ScanResult,
    Source,
    make_sample_id,
    manifest_schema,
    resolve_inside,
)
from pipelines.sources.llvip import LlvipSource
from pipelines.sources.sunrgbd import SunRgbdSource
from pipelines.sources.tables import GenericSource, ImageTextSource
from pipelines.sources.temporal import AudioSetSource, Ego4dSource
from storage.location import as_location

SOURCE_TYPES: dict[str, type[Source]] = {
    cls.layout: cls for cls in (SunRgbdSource, LlvipSource, ImageTextSource, AudioSetSource, Ego4dSource, GenericSource)
}
LAYOUTS = tuple(SOURCE_TYPES)


def create_source(layout: str, root: str | Path, **options) -> Source:
    """``create_source("llvip", "/data/LLVIP")``; for ``generic`` the root is the table file."""
    try:
        cls = SOURCE_TYPES[layout]
    except KeyError:
        raise ValueError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}") from None
    if cls is GenericSource:
        path = as_location(root)
        if path.is_dir():
            tables = sorted(p for ext in ("parquet", "csv", "jsonl") for p in path.glob(f"*.{ext}"))
            if len(tables) != 1:
                raise ValueError(f"generic source {path}: pass the table file itself (found {len(tables)} tables)")
            path = tables[0]
        return GenericSource(path, **options)
    return cls(root, **options)


__all__ = [
    "LAYOUTS",
    "PathOutsideRoot",
    "Problem",
    "ScanResult",
    "Source",
    "create_source",
    "make_sample_id",
    "manifest_schema",
    "resolve_inside",
]
