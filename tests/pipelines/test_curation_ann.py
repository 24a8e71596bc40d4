"""The ANN index beside an embedding store: same top-k as exact search on a small store, visibly
stale when the store changes (search falls back to exact), extended incrementally when shards are
added, and the same on an object store."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest

from pipelines.binding.search import search, search_store
from pipelines.curation.ann import AnnIndex, IndexStaleWarning
from pipelines.curation.ann_build import build_index
from pipelines.curation.ann_files import index_dir, index_status
from pipelines.curation.ann_index import IndexParams, exact_topk, normalize, recall_at
from storage.embeddings import commit_embeddings

STORE = "toy-encoder"
DIM = 32


def clustered(rng: np.random.Generator, n: int, centres: np.ndarray) -> np.ndarray:
    """Vectors around a few centres, like real embeddings (random uniform vectors have no neighbourhoods)."""
    pick = rng.integers(len(centres), size=n)
    return normalize(centres[pick] + 0.35 * rng.standard_normal((n, DIM)).astype(np.float32))


def write_store(root, shards: dict[int, np.ndarray], prefix: str = "s") -> dict[int, list[str]]:
    ids = {}
    for shard, vectors in shards.items():
        ids[shard] = [f"{prefix}{shard:02d}-{i:04d}" for i in range(len(vectors))]
        commit_embeddings(root, STORE, shard, ids[shard], {"image": vectors})
    return ids


def exact_ids(shards: dict[int, np.ndarray], ids: dict[int, list[str]], queries: np.ndarray, k: int) -> list[list[str]]:
    order = sorted(shards)
    all_ids = [s for shard in order for s in ids[shard]]
    idx, _ = search(queries, np.concatenate([shards[s] for s in order]), k)
    return [[all_ids[i] for i in row] for row in idx]


@pytest.fixture
def store(tmp_path):
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((12, DIM)).astype(np.float32)
    shards = {s: clustered(rng, 600, centres) for s in range(3)}
    ids = write_store(tmp_path, shards)
    queries = clustered(rng, 40, centres)
    return tmp_path, shards, ids, queries, centres, rng


def test_index_gives_the_same_top_k_as_exact_search(store):
    root, shards, ids, queries, _, _ = store
    # a small store gets an exact Flat index: the same answers as numpy
    report = build_index(root, STORE, "image")
    assert report.action == "built" and report.kind == "Flat" and report.count == 1800
    index = AnnIndex.load(root, STORE, "image")
    found, scores = index.search(queries, 10)
    assert found == exact_ids(shards, ids, queries, 10)
    # an IVF index probing every list is exact too; tuned, it reaches the target recall
    ivf = build_index(root, STORE, "image", IndexParams(nlist=16, nprobe=16))
    assert ivf.action == "rebuilt" and ivf.kind == "IVF16,Flat"
    found, _ = AnnIndex.load(root, STORE, "image").search(queries, 10)
    assert found == exact_ids(shards, ids, queries, 10)
    tuned = build_index(root, STORE, "image", IndexParams(nlist=16))
    assert tuned.nprobe is not None and tuned.nprobe <= 16 and tuned.recall_at_10 >= 0.95
    found, _ = AnnIndex.load(root, STORE, "image").search(queries, 10)
    truth = exact_ids(shards, ids, queries, 10)
    assert np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth)]) >= 0.9
    # search_store goes through the index (no warning) and agrees with exact search
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        hits = search_store(root, STORE, "image", queries[0], k=5)
    exact_hits = search_store(root, STORE, "image", queries[0], k=5, use_index=False)
    assert [h.sample_id for h in hits][:3] == [h.sample_id for h in exact_hits][:3]


def test_changed_store_makes_the_index_stale_and_search_falls_back_to_exact(store):
    root, shards, ids, queries, centres, rng = store
    build_index(root, STORE, "image")
    assert index_status(root, STORE, "image").fresh
    # a copy of the store with new mtimes but the same bytes stays fresh (checked by sha256)
    f = root / "embeddings" / STORE / "00001.parquet"
    os.utime(f, ns=(1_000_000_000, 1_000_000_000))
    assert index_status(root, STORE, "image").fresh
    # shard 1 re-embedded with other vectors
    shards[1] = clustered(rng, 600, centres)
    commit_embeddings(root, STORE, 1, ids[1], {"image": shards[1]})
    status = index_status(root, STORE, "image")
    assert status.state == "stale" and status.changed == ["00001.parquet"] and not status.appendable
    assert "changed since it was built" in status.describe()
    with pytest.warns(IndexStaleWarning, match="stale"):
        hits = search_store(root, STORE, "image", queries[0], k=10)
    assert [h.sample_id for h in hits] == exact_ids(shards, ids, queries[:1], 10)[0]
    report = build_index(root, STORE, "image")
    assert report.action == "rebuilt" and "changed" in report.reason
    assert index_status(root, STORE, "image").fresh
    # a removed shard file is visible too
    (root / "embeddings" / STORE / "00002.parquet").unlink()
    assert index_status(root, STORE, "image").removed == ["00002.parquet"]


def test_shards_embedded_later_are_added_without_a_rebuild(store):
    root, shards, ids, queries, centres, rng = store
    first = build_index(root, STORE, "image", IndexParams(nlist=16, nprobe=16))
    gen1 = first.manifest["index_file"]
    shards[3] = clustered(rng, 500, centres)
    ids.update(write_store(root, {3: shards[3]}))
    status = index_status(root, STORE, "image")
    assert status.appendable and [f.name for f in status.added] == ["00003.parquet"]
    with pytest.warns(IndexStaleWarning, match="1 store file\\(s\\) added"):
        search_store(root, STORE, "image", queries[0], k=3)
    report = build_index(root, STORE, "image", IndexParams(nlist=16, nprobe=16))
    assert report.action == "extended" and report.added == 500 and report.count == 2300
    # the lists trained on the first 1800 vectors were kept: no new k-means
    assert report.manifest["trained_on_count"] == 1800 and report.manifest["generation"] == 2
    found, _ = AnnIndex.load(root, STORE, "image").search(queries, 10)
    assert found == exact_ids(shards, ids, queries, 10)
    # up to date now; a third generation drops the first one's files
    assert build_index(root, STORE, "image", IndexParams(nlist=16, nprobe=16)).action == "up to date"
    ids.update(write_store(root, {4: clustered(rng, 50, centres)}))
    build_index(root, STORE, "image", IndexParams(nlist=16, nprobe=16))
    assert not (index_dir(root, STORE) / gen1).exists()


def test_exact_topk_and_recall_helpers():
    rng = np.random.default_rng(1)
    x = normalize(rng.standard_normal((300, 16)).astype(np.float32))
    q = normalize(rng.standard_normal((7, 16)).astype(np.float32))
    idx, val = exact_topk(q, x, 5)
    ref, ref_scores = search(q, x, 5)
    assert np.array_equal(idx, ref) and np.allclose(val, ref_scores, atol=1e-6)
    assert recall_at(idx, ref) == 1.0 and recall_at(idx[:, :1], ref[:, :2]) == 0.5


def test_cli_index_status_and_build(store, capsys):
    from flows.cli import main

    root = store[0]
    assert main(["index", str(root), "--encoder", STORE, "--status"]) == 0
    assert "missing" in capsys.readouterr().out
    assert main(["index", str(root), "--encoder", STORE, "--nlist", "8"]) == 0
    out = capsys.readouterr().out
    assert "built (IVF8,Flat, 1800 vectors" in out and "recall@10" in out
    assert main(["index", str(root), "--encoder", STORE, "--nlist", "8"]) == 0
    assert "up to date" in capsys.readouterr().out
    assert main(["index", str(root), "--encoder", STORE, "--modality", "audio"]) == 2


def test_index_on_an_object_store(s3_bucket):
    rng = np.random.default_rng(2)
    centres = rng.standard_normal((6, DIM)).astype(np.float32)
    root = f"s3://{s3_bucket}/ds"
    shards = {0: clustered(rng, 300, centres), 1: clustered(rng, 300, centres)}
    ids = write_store(root, shards)
    assert build_index(root, STORE, "image").action == "built"
    assert index_status(root, STORE, "image").fresh
    q = clustered(rng, 3, centres)
    found, _ = AnnIndex.load(root, STORE, "image").search(q, 5)
    assert found == exact_ids(shards, ids, q, 5)
    shards[2] = clustered(rng, 100, centres)
    ids.update(write_store(root, {2: shards[2]}))
    assert index_status(root, STORE, "image").appendable
    assert build_index(root, STORE, "image").action == "extended"
    found, _ = AnnIndex.load(root, STORE, "image").search(q, 5)
    assert found == exact_ids(shards, ids, q, 5)
