"""Streaming the loader from an object store (a real S3 server: moto on loopback): every sample once
per epoch over ranks x DataLoader workers, exact mid-epoch resume, a bounded verified shard cache, and
tensors equal to the local copy's."""

import os
from collections import Counter
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from torch.utils.data import DataLoader

import storage
from pipelines.build import build_dataset
from pipelines.config import BuildConfig
from pipelines.executors import LocalExecutor
from pipelines.sources import create_source
from pipelines.synth import synthesize
from preprocess.augment import AugmentConfig
from storage.cache import CacheFullError, ShardCache, ShardIntegrityError
from storage.catalog import load_catalog
from storage.loader import ShardDataset, collate
from storage.reader import DatasetReader
from storage.shard import ShardReader

N = 16
SHARD_SIZE = 3  # six shards, the last one short: workers get uneven plans


@pytest.fixture(scope="module")
def local_ds(tmp_path_factory):
    root = tmp_path_factory.mktemp("stream")
    synthesize(root / "src", "sunrgbd", N, seed=2)
    report = build_dataset(
        [create_source("sunrgbd", root / "src")],
        root / "ds",
        BuildConfig(shard_size=SHARD_SIZE),
        executor=LocalExecutor(),
        progress=False,
    )
    assert report.stored == N
    return root / "ds"


def _upload(s3_server, local: Path, bucket: str, prefix: str) -> str:
    return s3_server.upload_tree(local, bucket, prefix)


@pytest.fixture(scope="module")
def s3_ds(s3_server, local_ds):
    """The local dataset uploaded file for file; the tests never read the local copy through it."""
    return _upload(s3_server, local_ds, s3_server.new_bucket("loader"), "ds")


@pytest.fixture(scope="module")
def ids(local_ds):
    return sorted(storage.scan_index(local_ds).collect()["sample_id"].to_list())


@pytest.fixture(scope="module")
def shard_bytes(local_ds):
    return {int(name): entry["bytes"] for name, entry in load_catalog(local_ds)["shards"].items()}


def _batches(ds, num_workers=2, batch_size=2, **kw):
    loader = DataLoader(ds, batch_size=batch_size, num_workers=num_workers, collate_fn=collate, **kw)
    it = iter(loader)
    try:
        return loader, list(it)
    except Exception as exc:
        # Drop the traceback (it holds the iterator) so the workers stop now: torch otherwise waits
        # 5 s per worker when the garbage collector reaps the iterator later.
        exc = exc.with_traceback(None)
        del it
        raise exc


def _ids_of(batches):
    return [sid for b in batches for sid in b["sample_id"]]


def test_every_sample_once_per_epoch_over_two_ranks_by_two_workers_from_s3(s3_ds, ids, tmp_path):
    for epoch, granularity in ((0, "auto"), (1, "auto"), (2, "row")):
        got = []
        cache = tmp_path / f"cache-{granularity}"  # "row": both workers of a rank fetch the same shards at once
        for rank in (0, 1):
            ds = ShardDataset(
                s3_ds, seed=3, rank=rank, world_size=2, granularity=granularity, cache_dir=cache, modalities=["image"]
            )
            ds.set_epoch(epoch)
            rank_ids = _ids_of(_batches(ds)[1])
            assert len(rank_ids) == len(ds)
            got += rank_ids
        assert Counter(got) == Counter(ids), f"epoch {epoch} {granularity}"
        assert not list(cache.glob("*.part"))


def test_resume_from_a_mid_epoch_state_yields_exactly_the_remaining_batches(s3_ds, tmp_path):
    cache, epoch, augment = tmp_path / "cache", 1, AugmentConfig()

    def make(rank):
        return ShardDataset(
            s3_ds,
            seed=5,
            rank=rank,
            world_size=2,
            cache_dir=cache,
            augment=augment,
            train=True,
            modalities=["image", "depth"],
        )

    # The run that crashes: rank 0 consumes 2 batches and checkpoints the state.
    crashed = make(0)
    crashed.set_epoch(epoch)
    loader = DataLoader(crashed, batch_size=2, num_workers=2, collate_fn=collate)
    for k, _ in enumerate(loader, 1):
        if k == 2:
            state = crashed.state_dict(k, loader)
            break
    del loader
    assert state["epoch"] == epoch and state["batches_consumed"] == 2
    uneven = False
    for rank in (0, 1):
        ds = make(rank)
        ds.set_epoch(epoch)
        full = _batches(ds)[1]
        sizes = [ds.plan(epoch, worker=w, num_workers=2).size for w in (0, 1)]
        uneven |= -(-sizes[0] // 2) != -(-sizes[1] // 2)  # one worker runs out before the other
        for k in range(len(full) + 1):  # one state serves every rank: only the batch count matters
            resumed = make(rank)
            resumed.load_state_dict({**state, "batches_consumed": k})
            rest = _batches(resumed)[1]
            assert [b["sample_id"] for b in rest] == [b["sample_id"] for b in full[k:]], (rank, k)
            for got, want in zip(rest, full[k:]):
                assert all(torch.equal(got[key], want[key]) for key in ("image", "depth", "depth_valid"))
            if rank == 0 and k == 2:
                resumed.set_epoch(epoch + 1)  # the next epoch is whole again
                ds.set_epoch(epoch + 1)
                assert [b["sample_id"] for b in _batches(resumed)[1]] == [b["sample_id"] for b in _batches(ds)[1]]
    assert uneven


def test_resume_with_persistent_workers_in_the_same_process(s3_ds, tmp_path):
    ds = ShardDataset(s3_ds, seed=6, cache_dir=tmp_path / "cache", modalities=["image"])
    loader = DataLoader(ds, batch_size=3, num_workers=2, collate_fn=collate, persistent_workers=True)
    ds.set_epoch(0)
    full = [b["sample_id"] for b in loader]
    state = ds.state_dict(2, loader)
    ds.set_epoch(1)
    assert len([b for b in loader]) == len(full)  # another epoch on the same workers
    ds.load_state_dict(state)  # the workers see it through shared memory
    assert [b["sample_id"] for b in loader] == full[2:]
    # drop_last: each worker's short last batch is never delivered, and the state knows it.
    ds.set_epoch(2)
    dropping = DataLoader(ds, batch_size=4, num_workers=2, collate_fn=collate, drop_last=True)
    full = [b["sample_id"] for b in dropping]
    assert sum(map(len, full)) < ds.num_samples
    ds.load_state_dict(ds.state_dict(len(full) - 1, dropping))
    assert [b["sample_id"] for b in dropping] == full[-1:]


def test_resume_without_workers_and_refusals(s3_ds, tmp_path):
    ds = ShardDataset(s3_ds, seed=1, shuffle=True, cache_dir=tmp_path / "cache", modalities=["image"])
    order = [s["sample_id"] for s in ds]
    state = ds.state_dict(5)  # 5 samples consumed from the dataset itself
    again = ShardDataset(s3_ds, seed=1, cache_dir=tmp_path / "cache", modalities=["image"])
    again.load_state_dict(state)
    assert [s["sample_id"] for s in again] == order[5:]
    assert [s["sample_id"] for s in again] == order[5:]  # the same epoch again: still a resume
    with pytest.raises(ValueError, match="seed 1 .saved. != 2"):
        ShardDataset(s3_ds, seed=2, cache_dir=tmp_path / "cache", modalities=["image"]).load_state_dict(state)
    with pytest.raises(ValueError, match="num_workers=0"):
        _batches(again, num_workers=2)
    other = ShardDataset(s3_ds, seed=1, cache_dir=tmp_path / "cache", modalities=["image"], split="nope")
    with pytest.raises(ValueError, match="fingerprint"):
        other.load_state_dict(state)


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.iterdir() if p.is_file()) if path.exists() else 0


def test_the_cache_never_exceeds_its_limit(s3_ds, ids, shard_bytes, tmp_path):
    cache = tmp_path / "small-cache"
    limit = 2 * max(shard_bytes.values())  # a third of the dataset
    ds = ShardDataset(
        s3_ds,
        seed=4,
        cache_dir=cache,
        cache_limit_bytes=limit,
        buffer_shards=1,
        prefetch_shards=2,
        modalities=["image"],
    )
    peak = 0
    for epoch in (0, 1):
        ds.set_epoch(epoch)
        seen = []
        for batch in DataLoader(ds, batch_size=1, num_workers=2, collate_fn=collate):
            seen += batch["sample_id"]
            used = _dir_bytes(cache)
            peak = max(peak, used)
            assert used <= limit, f"cache holds {used} bytes after {len(seen)} samples, limit {limit}"
        assert Counter(seen) == Counter(ids)
    assert peak > limit // 2  # it was used, and evicted to stay under the limit
    assert _dir_bytes(cache) <= limit and len(list(cache.glob("*.h5"))) <= 2


def test_cache_refuses_what_cannot_fit_naming_the_sizes(s3_ds, shard_bytes, tmp_path):
    biggest = max(shard_bytes.values())
    with pytest.raises(
        CacheFullError,
        match=rf"shard 00000 of {s3_ds} is {shard_bytes[0]} bytes, larger than "
        r"the cache limit of 1000 bytes",
    ):
        ShardReader(s3_ds, 0, cache=ShardCache(tmp_path / "tiny", limit_bytes=1000))
    # One shard fits, but a window of two open shards cannot: refused at once, not a deadlock.
    ds = ShardDataset(
        s3_ds, cache_dir=tmp_path / "one", cache_limit_bytes=biggest, buffer_shards=2, modalities=["image"]
    )
    with (
        pytest.raises(CacheFullError, match="shards this process has open"),
        pytest.warns(UserWarning, match="more than the cache limit"),
    ):
        list(ds)


def test_a_corrupted_remote_shard_is_refused_naming_it(s3_server, local_ds, tmp_path):
    bucket = s3_server.new_bucket("corrupt")
    url = _upload(s3_server, local_ds, bucket, "ds")
    client = s3_server.client()
    data = bytearray(client.get_object(Bucket=bucket, Key="ds/shards/00001.h5")["Body"].read())
    data[len(data) // 2] ^= 0xFF  # same size, one byte flipped
    client.put_object(Bucket=bucket, Key="ds/shards/00001.h5", Body=bytes(data))
    expected = load_catalog(local_ds)["shards"]["00001"]["sha256"]
    cache = tmp_path / "cache"
    with ShardReader(url, 0, cache=ShardCache(cache)) as ok:
        assert len(ok) == SHARD_SIZE
    with pytest.raises(
        ShardIntegrityError,
        match=rf"shard 00001 of {url} .*is corrupt: sha256 [0-9a-f]{{64}} "
        rf".*catalog says {expected}",
    ):
        ShardReader(url, 1, cache=ShardCache(cache))
    ds = ShardDataset(url, shuffle=False, cache_dir=cache, modalities=["image"])
    with pytest.raises(ShardIntegrityError, match=f"shard 00001 of {url}"):  # from a forked worker too
        _batches(ds, num_workers=2)
    # Nothing of the bad shard stays (a worker shut down mid-prefetch may leave another shard's .part:
    # never used, and deleted by the next fetcher once its owner is gone).
    assert not list(cache.glob(f"{expected}*"))


def test_a_killed_fetch_or_truncated_copy_is_never_used(s3_ds, local_ds, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    sha = load_catalog(local_ds)["shards"]["00000"]["sha256"]
    size = load_catalog(local_ds)["shards"]["00000"]["bytes"]
    (cache / f"{sha}.999.dead.part").write_bytes(b"\0" * size)  # a fetcher killed mid-download
    store = ShardCache(cache, limit_bytes=size * 2)
    with ShardReader(s3_ds, 0, cache=store) as reader:
        assert reader.read_stored(0)["image/pixels"].any()
    assert not list(cache.glob("*.part")) and store.stats["requests"] == 1
    with open(cache / f"{sha}.h5", "r+b") as fh:
        fh.truncate(size // 2)  # damaged on disk afterwards: refetched, not read
    with ShardReader(s3_ds, 0, cache=store) as reader:
        assert reader.read_stored(2)["image/pixels"].any()
    assert (cache / f"{sha}.h5").stat().st_size == size and store.stats["requests"] == 2


def test_model_ready_tensors_from_s3_equal_the_local_copy(s3_ds, local_ds, ids, tmp_path, monkeypatch):
    monkeypatch.setenv("BINDSET_CACHE_DIR", str(tmp_path / "default-cache"))
    with storage.open_dataset(s3_ds) as remote, DatasetReader(local_ds) as local:
        for sid in ids:
            a, b = remote[sid], local[sid]
            assert set(a) == set(b) and all(np.array_equal(a[k], b[k]) for k in b), sid
    assert len(list((tmp_path / "default-cache").glob("*.h5"))) == len(load_catalog(local_ds)["shards"])
    got = {s["sample_id"]: s for s in ShardDataset(s3_ds, shuffle=False, train=False, cache_dir=tmp_path / "c2")}
    want = {s["sample_id"]: s for s in ShardDataset(local_ds, shuffle=False, train=False)}
    assert got.keys() == want.keys() == set(ids)
    for sid in ids:
        assert all(torch.equal(got[sid][k], want[sid][k]) for k in want[sid] if k != "sample_id"), sid
    # One GET per shard, however many rows are read from it.
    cache = ShardCache(tmp_path / "counted")
    for shard in range(len(load_catalog(local_ds)["shards"])):
        with ShardReader(s3_ds, shard, cache=cache) as reader:
            for row in range(len(reader)):
                reader.read_stored(row)
    assert cache.stats["requests"] == cache.stats["fetches"] == len(load_catalog(local_ds)["shards"])
    assert storage.committed_shard_ids(s3_ds) == sorted(range(len(load_catalog(local_ds)["shards"])))
    assert os.environ.get("AWS_ENDPOINT_URL")  # the S3 server, never the network


def test_frozen_embeddings_are_joined_from_an_s3_store(s3_server, local_ds, ids, tmp_path):
    bucket = s3_server.new_bucket("emb")
    url = _upload(s3_server, local_ds, bucket, "ds")
    rng = np.random.default_rng(1)
    vectors = {}
    client = s3_server.client()
    for index_file in sorted((local_ds / "index").glob("*.parquet")):
        sids = pl.read_parquet(index_file)["sample_id"].to_list()
        rows = [rng.standard_normal(4).astype(np.float32) for _ in sids]
        vectors.update(zip(sids, rows))
        out = tmp_path / index_file.name
        pl.DataFrame({"sample_id": sids, "image": pl.Series(rows, dtype=pl.Array(pl.Float32, 4))}).write_parquet(out)
        client.upload_file(str(out), bucket, f"ds/embeddings/enc-1/{index_file.name}")
    ds = ShardDataset(url, embeddings="enc-1", modalities=["depth"], cache_dir=tmp_path / "cache")
    got = {sid: v.numpy() for b in _batches(ds)[1] for sid, v in zip(b["sample_id"], b["image_embedding"])}
    assert set(got) == set(ids)  # read in forked workers, through the download helper
    for sid, vec in got.items():
        np.testing.assert_array_equal(vec, vectors[sid])
