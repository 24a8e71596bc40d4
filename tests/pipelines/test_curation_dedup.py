"""Deduplication on a dataset with planted duplicates, with known precision and recall.

The dataset (tests/pipelines/curation_data.py): 24 distinct base images; 7 exact duplicates (4 byte
copies under other names, the same decoded pixels saved as BMP, lossless WebP, and a JPEG's pixels as
PNG) and 9 near duplicates (JPEG re-encode at quality 40, crops of 4 % per border, noise sigma 6).

Near duplicates are judged on an embedding store this test writes itself with
``storage.embeddings.commit_embeddings``: a deterministic descriptor (the model-ready image pooled to
8x8 per channel, centred, normalized; see ``curation_data.descriptor``). A random-weights tiny CLIP
does separate these images too, but only in the fourth decimal of cosine (planted pairs >= 0.9996,
distinct ones up to 0.9968), so a threshold on it would test the weights rather than the method.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

import storage
from pipelines.build import build_dataset
from pipelines.config import BuildConfig
from pipelines.curation.dedup import content_hashes, dedup_dataset
from pipelines.sources import create_source
from storage.dedup import read_dedup, read_dedup_meta
from storage.embeddings import commit_embeddings

sys.path.insert(0, str(Path(__file__).parent))
from curation_data import descriptor, pair_set, plant  # noqa: E402

STORE = "pixels8x8"


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    base = tmp_path_factory.mktemp("dedup")
    p = plant(base / "src")
    ds = base / "ds"
    build_dataset([create_source("generic", p.table)], ds, BuildConfig(shard_size=16), progress=False)
    index = storage.scan_index(ds).select("sample_id", "shard", "row", "uri_image").collect().sort("shard", "row")
    with storage.open_dataset(ds) as reader:
        for shard in index["shard"].unique().sort().to_list():
            part = index.filter(pl.col("shard") == shard)
            images = reader.read_batch(shard, part["row"].to_list(), "image")
            commit_embeddings(
                ds, STORE, shard, part["sample_id"].to_list(), {"image": np.stack([descriptor(img) for img in images])}
            )
    uri = dict(zip(index["sample_id"].to_list(), index["uri_image"].to_list()))
    return p, ds, uri


def _truth(p, kinds: set[str]) -> set[tuple[str, str]]:
    groups: dict[str, list[str]] = {}
    for path, base in p.group_of.items():
        if p.kind[path] == "base" or p.kind[path] in kinds:
            groups.setdefault(base, []).append(path)
    return pair_set(groups)


def _predicted(table: pl.DataFrame, uri: dict[str, str]) -> set[tuple[str, str]]:
    groups: dict[int, list[str]] = {}
    for sid, group in zip(table["sample_id"].to_list(), table["group"].to_list()):
        groups.setdefault(group, []).append(uri[sid])
    return pair_set(groups)


def _precision_recall(found: set, truth: set) -> tuple[float, float]:
    hit = len(found & truth)
    return (hit / len(found) if found else 1.0), (hit / len(truth) if truth else 1.0)


def test_exact_duplicates_by_decoded_content_precision_and_recall_are_one(planted):
    p, ds, uri = planted
    shards_before = {f.name: f.read_bytes() for f in (ds / "shards").iterdir()}
    report = dedup_dataset(ds, name="exact")
    table = read_dedup(ds, "exact")
    assert table.height == 40 and report.samples == 40
    precision, recall = _precision_recall(_predicted(table, uri), _truth(p, {"exact"}))
    assert (precision, recall) == (1.0, 1.0)
    assert report.exact_dropped == report.dropped == 7 and report.near_dropped == 0
    # one representative per group, the lowest sample_id; the others point at it
    for _, group in table.group_by("group"):
        assert group["kept"].sum() == 1
        assert group.filter(pl.col("kept"))["sample_id"][0] == min(group["sample_id"])
    assert set(table.filter(~pl.col("kept"))["reason"]) == {"exact"}
    assert table.filter(pl.col("reason") == "exact")["similarity"].to_list() == [1.0] * 7
    # non-destructive: every shard is still there, byte for byte
    assert {f.name: f.read_bytes() for f in (ds / "shards").iterdir()} == shards_before
    assert read_dedup_meta(ds, "exact")["dropped"] == 7


def test_near_duplicates_precision_and_recall(planted):
    p, ds, uri = planted
    report = dedup_dataset(ds, name="near", encoder_id=STORE, threshold=0.95)
    table = read_dedup(ds, "near")
    found, truth = _predicted(table, uri), _truth(p, {"exact", "near"})
    precision, recall = _precision_recall(found, truth)
    # the near pairs alone: pairs with at least one planted near duplicate in them
    is_near = lambda pair: "near" in (p.kind[pair[0]], p.kind[pair[1]])  # noqa: E731
    found_near, truth_near = {x for x in found if is_near(x)}, {x for x in truth if is_near(x)}
    near_precision = len(found_near & truth) / len(found_near)
    near_recall = len(found_near & truth_near) / len(truth_near)
    print(
        f"exact+near pairs: precision {precision:.3f} recall {recall:.3f}; near pairs: precision "
        f"{near_precision:.3f} recall {near_recall:.3f}"
    )
    assert precision >= 0.9 and recall >= 0.8
    assert near_precision >= 0.9 and near_recall >= 0.8
    assert report.exact_dropped == 7 and report.near_dropped == 9
    dropped_near = table.filter(pl.col("reason") == "near")
    assert (dropped_near["similarity"] >= 0.95).all()
    # The scalable path (k-means cells, 2 probes) finds the same groups as all-pairs here.
    dedup_dataset(ds, name="near-cells", encoder_id=STORE, threshold=0.95, exact=False, nlist=4, probes=2)
    cells = read_dedup(ds, "near-cells")
    assert _predicted(cells, uri) == _truth(p, {"exact", "near"})
    assert "cells" in read_dedup_meta(ds, "near-cells")["pair_method"]


def test_loader_yields_each_group_once(planted):
    p, ds, uri = planted
    dedup_dataset(ds, name="loader", encoder_id=STORE, threshold=0.95)
    table = read_dedup(ds, "loader")
    loader = storage.ShardDataset(ds, dedup="loader", shuffle=False)
    seen = [item["sample_id"] for item in loader]
    assert sorted(seen) == sorted(table.filter(pl.col("kept"))["sample_id"].to_list())
    groups = {}
    for sid in seen:
        base = p.group_of[uri[sid]]
        groups[base] = groups.get(base, 0) + 1
    assert groups == {base: 1 for base in set(p.group_of.values())}  # every planted group exactly once
    assert len(storage.ShardDataset(ds, shuffle=False)) == 40  # without the option nothing is skipped


def test_keep_rule_by_index_column_and_training_pairs(planted):
    from pipelines.binding.pairs import load_pairs

    p, ds, uri = planted
    dedup_dataset(ds, name="bright", encoder_id=STORE, threshold=0.95, exact=False, keep="max:q_image_mean")
    table = read_dedup(ds, "bright").join(
        storage.scan_index(ds).select("sample_id", "q_image_mean").collect(), on="sample_id"
    )
    for _, group in table.group_by("group"):
        assert group.filter(pl.col("kept"))["q_image_mean"][0] == group["q_image_mean"].max()
    with pytest.raises(ValueError, match="no column"):
        dedup_dataset(ds, name="bad", exact=False, encoder_id=STORE, keep="max:nope")
    # exact copies have identical vectors, so the vectors-only pass groups them as well: 24 groups
    assert int(table["kept"].sum()) == 24
    pairs = load_pairs(ds, "image", STORE, "image", dedup="bright")
    assert len(pairs) == 24 and set(pairs.sample_ids) <= set(table.filter(pl.col("kept"))["sample_id"])


def test_cli_dedup_writes_the_table(planted, capsys):
    from flows.cli import main

    _, ds, _ = planted
    assert main(["dedup", str(ds), "--encoder", STORE, "--name", "cli", "--threshold", "0.95", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "left out: 16 (exact 7, near 9)" in out and "kept: 24" in out
    assert main(["dedup", str(ds), "--name", "../escape", "--no-progress"]) == 2
    assert main(["dedup", str(ds), "--encoder", "no-such-store", "--no-progress"]) == 2


def test_temporal_exact_copies_and_windows(tmp_path):
    """A byte copy of an AudioSet clip hashes like its original (decoded frames and audio); the
    narrations of one Ego4D video (other windows of the same files) do not."""
    from pipelines.synth import synthesize

    src = tmp_path / "as"
    synthesize(src, "audioset", 2, seed=0)
    lines = (src / "labels.csv").read_text().splitlines()
    first = next(ln for ln in lines if not ln.startswith("#"))
    ytid = first.split(",")[0]
    shutil.copyfile(src / "videos" / f"{ytid}.mp4", src / "videos" / "COPYOFCLIP1.mp4")
    (src / "labels.csv").write_text("\n".join(lines + [first.replace(ytid, "COPYOFCLIP1")]) + "\n")
    ds = tmp_path / "as-ds"
    build_dataset([create_source("audioset", src)], ds, BuildConfig(shard_size=4), progress=False)
    hashes = content_hashes(ds)
    assert hashes.height == 3 and hashes["error"].is_null().all()
    assert hashes["content_hash"].n_unique() == 2
    report = dedup_dataset(ds, name="exact")
    assert report.exact_dropped == 1

    ego = tmp_path / "ego"
    synthesize(ego, "ego4d", 1, seed=0)
    ego_ds = tmp_path / "ego-ds"
    build_dataset([create_source("ego4d", ego)], ego_ds, BuildConfig(shard_size=8), progress=False)
    hashes = content_hashes(ego_ds)
    assert hashes.height >= 2 and hashes["content_hash"].n_unique() == hashes.height


def test_dedup_of_a_dataset_on_an_object_store(tmp_path, s3_bucket):
    """Sources read through the manifest, the table written through the location layer, the loader
    reading it back: the same groups as on disk."""
    p = plant(tmp_path / "src")
    url = f"s3://{s3_bucket}/planted"
    build_dataset([create_source("generic", p.table)], url, BuildConfig(shard_size=20), progress=False)
    report = dedup_dataset(url, name="exact")
    assert (report.samples, report.exact_dropped) == (40, 7)
    assert str(report.path) == f"{url}/dedup/exact.parquet"
    kept = read_dedup(url, "exact").filter(pl.col("kept"))["sample_id"].to_list()
    loader = storage.ShardDataset(url, dedup="exact", shuffle=False, cache_dir=tmp_path / "cache")
    assert len(loader) == 33 and sorted(item["sample_id"] for item in loader) == sorted(kept)
