"""Sources -> one manifest frame (sorted, typed, unique ids) plus the problems found on the way."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import polars as pl

from pipelines.sources import Problem, Source, manifest_schema
from preprocess.registry import uri_columns


@dataclass(frozen=True)
class Manifest:
    frame: pl.DataFrame
    problems: list[tuple[str, Problem]]  # (source name, problem)

    def problem_summary(self, first: int = 3) -> list[str]:
        """Human lines: count per (source, kind) with the first few names, so nothing is silent."""
        by_key: dict[tuple[str, str], list[Problem]] = {}
        for source, problem in self.problems:
            by_key.setdefault((source, problem.kind), []).append(problem)
        lines = []
        for (source, kind), items in sorted(by_key.items()):
            names = ", ".join(p.path for p in items[:first])
            more = f", ... (+{len(items) - first} more)" if len(items) > first else ""
            lines.append(f"{source}: {len(items)} {kind} ({names}{more})")
        return lines


class NoSamplesFound(ValueError):
    """A layout found no sample in a tree that holds files: most likely the wrong ``--layout``."""


def _has_files(root) -> bool:
    try:
        return next(iter(root.iterdir()), None) is not None
    except OSError:
        return False


def _nothing_matched(source: Source) -> str:
    """Name the layout, what it looked for, and the layouts whose pattern the tree does match."""
    from pipelines.sources import SOURCE_TYPES

    matching = []
    for layout, cls in SOURCE_TYPES.items():
        if layout in (source.layout, "generic"):
            continue
        try:
            if cls(source.root).scan().rows:
                matching.append(layout)
        except Exception:  # noqa: BLE001 - a layout whose files are absent simply does not match
            continue
    hint = (
        f"; the tree matches layout {' and '.join(matching)} (--layout {matching[0]})"
        if matching
        else "; no other layout matches it either"
    )
    return f"layout {source.layout} found no samples in {source.root}: it looks for {source.looks_for}{hint}"


def build_manifest(sources: list[Source]) -> Manifest:
    rows: list[dict] = []
    problems: list[tuple[str, Problem]] = []
    names = Counter(s.name for s in sources)
    duplicated = [n for n, c in names.items() if c > 1]
    if duplicated:
        raise ValueError(f"source names must be unique, repeated: {duplicated} (pass name=... per source)")
    for source in sources:
        scanned = source.scan()
        if not scanned.rows and all(p.kind == "missing" for p in scanned.problems) and _has_files(source.root):
            raise NoSamplesFound(_nothing_matched(source))
        rows.extend(scanned.rows)
        problems.extend((source.name, p) for p in scanned.problems)
    schema = manifest_schema()
    frame = pl.DataFrame({name: [r.get(name) for r in rows] for name in schema}, schema=schema)
    # Sorted by source, then media file, then time: independent of filesystem listing order (so plans
    # agree across runs), and the samples of one long video (Ego4D narrations) land in the same shard,
    # where its decoded audio and parsed IMU are reused instead of re-read per sample.
    media_key = pl.concat_str([pl.col(c).fill_null("") for c in uri_columns().values()], separator="|")
    frame = frame.sort([pl.col("source"), media_key, pl.col("t0"), pl.col("sample_id")], nulls_last=True)
    dupes = frame.filter(pl.col("sample_id").is_duplicated())
    if dupes.height:
        raise ValueError(f"{dupes.height} manifest rows share a sample_id, e.g. {dupes['sample_id'][0]}")
    return Manifest(frame, problems)


def problem_rejects(manifest: Manifest) -> list[dict]:
    """Manifest problems as reject rows (stage "manifest")."""
    return [
        {
            "sample_id": None,
            "shard": None,
            "stage": "manifest",
            "error_type": problem.kind,
            "message": f"{source}: {problem.message}",
            "input_path": problem.path,
        }
        for source, problem in manifest.problems
    ]
