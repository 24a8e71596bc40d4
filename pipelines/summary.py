"""Polars summaries of a dataset: what `bindset demo` and `bindset inspect` print."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from storage import load_catalog, scan_index, scan_rejects


def dataset_summary(dataset: str | Path) -> dict:
    root = Path(dataset)
    catalog = load_catalog(root)
    if catalog is None:
        raise FileNotFoundError(f"{root} is not a bindset dataset (no dataset.json)")
    index = scan_index(root)
    by_source = (
        index.group_by("source", "split").agg(pl.len().alias("samples")).sort("source", "split").collect()
    )
    by_modality = (
        index.select(pl.col("modalities").explode().alias("modality"))
        .group_by("modality").agg(pl.len().alias("samples")).sort("modality").collect()
    )
    rejects = (
        scan_rejects(root).group_by("stage", "error_type").agg(pl.len().alias("count"))
        .sort("count", descending=True).collect()
    )
    return {
        "dataset": str(root.resolve()),
        "format_version": catalog["format_version"],
        "config_hash": catalog["config_hash"],
        "shards_committed": len(catalog["shards"]),
        "shards_planned": catalog["planned_shards"],
        "samples": int(index.select(pl.len()).collect().item()),
        "by_source_split": by_source.to_dicts(),
        "by_modality": by_modality.to_dicts(),
        "rejects": rejects.to_dicts(),
    }


def _table(rows: list[dict], empty: str) -> str:
    if not rows:
        return f"  {empty}"
    with pl.Config(tbl_hide_dataframe_shape=True, tbl_formatting="ASCII_MARKDOWN", tbl_hide_column_data_types=True):
        return str(pl.DataFrame(rows))


def format_summary(summary: dict) -> str:
    return "\n".join(
        [
            f"dataset {summary['dataset']}",
            f"  {summary['samples']} samples in {summary['shards_committed']}/{summary['shards_planned']} shards, "
            f"format v{summary['format_version']}, config {summary['config_hash']}",
            "samples by source and split:",
            _table(summary["by_source_split"], "(none)"),
            "samples by modality:",
            _table(summary["by_modality"], "(none)"),
            "rejects by reason:",
            _table(summary["rejects"], "(none)"),
        ]
    )
