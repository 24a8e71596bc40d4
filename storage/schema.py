"""Typed Parquet schemas of the index and rejects, so every shard's files concatenate cleanly
in ``pl.scan_parquet`` whatever modalities a shard happens to hold."""

from __future__ import annotations

from typing import Any

import polars as pl

URI_COLUMNS = ("uri_image", "uri_depth", "uri_thermal", "uri_video", "uri_audio", "uri_imu")

# Per-sample quality figures computed during the build ("q_" prefix): inspect is then a query.
QUALITY_COLUMNS = {
    "q_image_mean": pl.Float32,  # mean RGB intensity in [0,1]; near 0 or 1 flags black/blown frames
    "q_depth_valid_fraction": pl.Float32,  # share of valid depth pixels in the stored crop
    "q_thermal_dynamic_range": pl.Float32,  # p99 - p1 of the [0,1] thermal crop
    "q_audio_silence_fraction": pl.Float32,
    "q_imu_gap_fraction": pl.Float32,
    "q_imu_saturation_fraction": pl.Float32,
    "q_clip_coverage": pl.Float32,  # share of the media duration covered by the stored clips
}

INDEX_SCHEMA: dict[str, pl.DataType] = {
    "sample_id": pl.Utf8,
    "shard": pl.Int32,
    "row": pl.Int32,
    "source": pl.Utf8,
    "layout": pl.Utf8,
    "split": pl.Utf8,
    "modalities": pl.List(pl.Utf8),
    **{c: pl.Utf8 for c in URI_COLUMNS},
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
    **QUALITY_COLUMNS,
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
    return _frame(rows, INDEX_SCHEMA)


def reject_frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    return _frame(rows, REJECT_SCHEMA)
