"""Polars summaries of a dataset: what `bindset demo` and `bindset inspect` print.

Everything is a query over the Parquet index, rejects and embedding stores (no shard is opened), so
inspecting a million-sample dataset takes seconds; all queries run in one ``collect_all``. The
dataset may be a local path or an object-store URL: Polars scans the objects natively.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from storage import load_catalog, scan_index, scan_rejects
from storage.embeddings import list_encoder_ids, scan_embeddings
from storage.location import Location, as_location
from storage.schema import quality_columns


def _quality_query(index: pl.LazyFrame) -> pl.LazyFrame:
    aggs = []
    for column in quality_columns():
        c = pl.col(column)
        aggs += [
            c.count().alias(f"{column}:n"),
            c.mean().alias(f"{column}:mean"),
            c.quantile(0.05).alias(f"{column}:p5"),
            c.median().alias(f"{column}:p50"),
            c.quantile(0.95).alias(f"{column}:p95"),
        ]
    return index.select(aggs)


def _quality_rows(wide: pl.DataFrame) -> list[dict]:
    row = wide.row(0, named=True) if wide.height else {}
    out = []
    for column in quality_columns():
        n = row.get(f"{column}:n") or 0
        if n:
            out.append(
                {
                    "figure": column.removeprefix("q_"),
                    "samples": n,
                    **{k: round(float(row[f"{column}:{k}"]), 4) for k in ("mean", "p5", "p50", "p95")},
                }
            )
    return out


def dataset_summary(dataset: str | Path | Location) -> dict:
    root = as_location(dataset)
    catalog = load_catalog(root)
    if catalog is None:
        raise FileNotFoundError(f"{root} is not a bindset dataset (no dataset.json)")
    index = scan_index(root)
    encoders = list_encoder_ids(root)
    queries = [
        index.select(pl.len().alias("samples")),
        index.group_by("source", "split").agg(pl.len().alias("samples")).sort("source", "split"),
        index.select(pl.col("modalities").explode().alias("modality"))
        .group_by("modality")
        .agg(pl.len().alias("samples"))
        .sort("modality"),
        scan_rejects(root)
        .group_by("stage", "error_type")
        .agg(pl.len().alias("count"))
        .sort(["count", "stage", "error_type"], descending=[True, False, False]),
        _quality_query(index),
        *[scan_embeddings(root, e).select(pl.len().alias("rows")) for e in encoders],
    ]
    total, by_source, by_modality, rejects, quality, *stores = pl.collect_all(queries)
    samples = int(total.item())
    shard_rows = [entry["rows"] for entry in catalog["shards"].values()]
    shard_bytes = [entry.get("bytes", 0) for entry in catalog["shards"].values()]
    return {
        "dataset": str(root.resolve()),
        "format_version": catalog["format_version"],
        "config_hash": catalog["config_hash"],
        "shards_committed": len(catalog["shards"]),
        "shards_planned": catalog["planned_shards"],
        "shard_rows": {
            "min": min(shard_rows, default=0),
            "max": max(shard_rows, default=0),
            "mean": round(sum(shard_rows) / len(shard_rows), 1) if shard_rows else 0,
        },
        "bytes": sum(shard_bytes),
        "samples": samples,
        "by_source_split": by_source.to_dicts(),
        "by_modality": by_modality.to_dicts(),
        "rejects": rejects.to_dicts(),
        "quality": _quality_rows(quality),
        "embeddings": [
            {
                "encoder_id": e,
                "samples": int(s.item()),
                "coverage": round(int(s.item()) / samples, 4) if samples else 0.0,
            }
            for e, s in zip(encoders, stores)
        ],
    }


def _table(rows: list[dict], empty: str) -> str:
    if not rows:
        return f"  {empty}"
    with pl.Config(
        tbl_hide_dataframe_shape=True,
        tbl_formatting="ASCII_MARKDOWN",
        tbl_hide_column_data_types=True,
        tbl_rows=100,
        tbl_cols=20,
        fmt_str_lengths=80,
    ):
        return str(pl.DataFrame(rows))


def format_summary(summary: dict) -> str:
    rows = summary["shard_rows"]
    return "\n".join(
        [
            f"dataset {summary['dataset']}",
            f"  {summary['samples']} samples in {summary['shards_committed']}/{summary['shards_planned']} shards "
            f"({rows['min']}..{rows['max']} rows, {summary['bytes'] / 1e6:.1f} MB), "
            f"format v{summary['format_version']}, config {summary['config_hash']}",
            "samples by source and split:",
            _table(summary["by_source_split"], "(none)"),
            "samples by modality:",
            _table(summary["by_modality"], "(none)"),
            "rejects by reason:",
            _table(summary["rejects"], "(none)"),
            "quality figures:",
            _table(summary["quality"], "(none)"),
            "embedding stores:",
            _table(summary["embeddings"], "(none)"),
        ]
    )
