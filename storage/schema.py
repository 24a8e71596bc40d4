"""Typed Parquet schemas of the index and rejects, so every shard's files concatenate cleanly
in ``pl.scan_parquet`` whatever modalities a shard happens to hold."""

from __future__ import annotations

from typing import Any

import polars as pl

# Per-sample quality figures computed during the build ("q_" prefix): inspect is then a query. Each
# modality's spec declares its own (preprocess.registry); these are the built-ins', in their order
# in the index files.
BUILTIN_QUALITY_COLUMNS = (
    "q_image_mean",
    "q_depth_valid_fraction",
    "q_thermal_dynamic_range",
    "q_audio_silence_fraction",
    "q_imu_gap_fraction",
    "q_imu_saturation_fraction",
    "q_clip_coverage",
)

_HEAD: dict[str, pl.DataType] = {
    "sample_id": pl.Utf8,
    "shard": pl.Int32,
    "row": pl.Int32,
    "source": pl.Utf8,
    "layout": pl.Utf8,
    "split": pl.Utf8,
    "modalities": pl.List(pl.Utf8),
}
_TAIL: dict[str, pl.DataType] = {
    "caption": pl.Utf8,
    "label": pl.Utf8,
    "sensor": pl.Utf8,
    "fx": pl.Float64,
    "baseline_m": pl.Float64,
    "fps": pl.Float64,
    "anchor_s": pl.Float64,
    # Eval crop box, normalized source coordinates, shared by every spatial modality of the sample.
    "crop_y0": pl.Float32,
    "crop_x0": pl.Float32,
    "crop_y1": pl.Float32,
    "crop_x1": pl.Float32,
    # [t0, t1) of every stored clip, seconds from the media start.
    "video_clip_t0": pl.List(pl.Float64),
    "video_clip_t1": pl.List(pl.Float64),
    "audio_clip_t0": pl.List(pl.Float64),
    "audio_clip_t1": pl.List(pl.Float64),
    "imu_t0": pl.Float64,
    "imu_t1": pl.Float64,
    "media_duration_s": pl.Float64,
}


def quality_columns() -> tuple[str, ...]:
    """Every per-sample quality column: the built-ins, then registered modalities' own."""
    from preprocess.registry import quality_labels

    return BUILTIN_QUALITY_COLUMNS + tuple(q for q in quality_labels() if q not in BUILTIN_QUALITY_COLUMNS)


def index_schema() -> dict[str, pl.DataType]:
    """The index's columns, from the registry: a ``uri_<modality>`` per file-backed modality and
    the quality figures of every modality (computed per call: a modality may be registered later)."""
    from preprocess.registry import uri_columns

    return {
        **_HEAD,
        **{c: pl.Utf8 for c in uri_columns().values()},
        **_TAIL,
        **{q: pl.Float32 for q in quality_columns()},
    }


REJECT_SCHEMA: dict[str, pl.DataType] = {
    "sample_id": pl.Utf8,
    "shard": pl.Int32,
    "stage": pl.Utf8,
    "error_type": pl.Utf8,
    "message": pl.Utf8,
    "input_path": pl.Utf8,
    # A failure that may pass on another attempt (I/O error, timeout, object-store error), which
    # `bindset build --retry-rejects` tries again; decode errors and bad content are permanent.
    "transient": pl.Boolean,
}


def _frame(rows: list[dict[str, Any]], schema: dict[str, pl.DataType]) -> pl.DataFrame:
    unknown = {k for r in rows for k in r} - schema.keys()
    if unknown:
        raise ValueError(f"unknown column(s) {sorted(unknown)}: add them to storage.schema")
    columns = {name: [r.get(name) for r in rows] for name in schema}
    return pl.DataFrame(columns, schema=schema)


def index_frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    return _frame(rows, index_schema())


def reject_frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    return _frame(rows, REJECT_SCHEMA)
