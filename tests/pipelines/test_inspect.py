"""`bindset inspect` is a query over the index: counts, quality figures, filters' drops, coverage."""

import json

import numpy as np
import polars as pl
import pytest

import storage
from flows.cli import main
from pipelines.build import build_dataset
from pipelines.config import BuildConfig
from pipelines.sources import create_source
from pipelines.summary import dataset_summary
from pipelines.synth import synthesize
from storage.embeddings import commit_embeddings


@pytest.fixture(scope="module")
def sun_src(tmp_path_factory):
    root = tmp_path_factory.mktemp("sun")
    synthesize(root, "sunrgbd", 8, seed=5)
    return root


def test_quality_figures_are_stored_and_filters_count_drops(sun_src, tmp_path):
    plain = tmp_path / "plain"
    build_dataset([create_source("sunrgbd", sun_src)], plain, BuildConfig(shard_size=4), progress=False)
    fractions = storage.scan_index(plain).select("q_depth_valid_fraction").collect().to_series()
    assert fractions.null_count() == 0 and 0 < fractions.min() <= fractions.max() <= 1
    threshold = float(np.median(fractions.to_numpy()))
    filtered = tmp_path / "filtered"
    cfg = BuildConfig.from_dict({"shard_size": 4, "filters": {"min_depth_valid_fraction": threshold}})
    report = build_dataset([create_source("sunrgbd", sun_src)], filtered, cfg, progress=False)
    dropped = int((fractions < threshold).sum())
    assert dropped >= 1 and report.stored == 8 - dropped
    rejects = storage.scan_rejects(filtered).filter(pl.col("stage") == "filter").collect()
    assert rejects.height == dropped
    assert all("q_depth_valid_fraction=" in m for m in rejects["message"])
    summary = dataset_summary(filtered)
    assert {"stage": "filter", "error_type": "QualityFilterFailed", "count": dropped} in summary["rejects"]


def test_inspect_json_reports_counts_quality_and_embedding_coverage(sun_src, tmp_path, capsys):
    ds = tmp_path / "ds"
    build_dataset([create_source("sunrgbd", sun_src)], ds, BuildConfig(shard_size=4), progress=False)
    ids = storage.scan_index(ds).filter(pl.col("shard") == 0).collect()["sample_id"].to_list()
    commit_embeddings(ds, "toy-encoder", 0, ids, {"image": np.ones((len(ids), 8), np.float32)})
    assert main(["inspect", str(ds), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["samples"] == 8 and out["shards_committed"] == 2
    assert {"modality": "depth", "samples": 8} in out["by_modality"]
    figures = {q["figure"]: q for q in out["quality"]}
    assert figures["depth_valid_fraction"]["samples"] == 8
    assert 0 <= figures["depth_valid_fraction"]["p5"] <= figures["depth_valid_fraction"]["p95"] <= 1
    assert out["embeddings"] == [{"encoder_id": "toy-encoder", "samples": 4, "coverage": 0.5}]
    assert main(["inspect", str(ds)]) == 0
    text = capsys.readouterr().out
    assert "quality figures" in text and "toy-encoder" in text
