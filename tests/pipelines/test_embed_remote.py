"""Embedding an s3:// dataset (a real S3 server on loopback): the store lands on s3, a rerun embeds
nothing, appended shards are the only ones embedded; on Ray the actor pool of the build executor
(``map_on_workers``) writes the same vectors, and restarts actors that die."""

import shutil
import sys

import numpy as np
import pytest

import storage
from pipelines.build import build_dataset
from pipelines.config import BuildConfig
from pipelines.embed import EncoderSpec, embed_dataset
from pipelines.executors import LocalExecutor
from pipelines.sources import create_source
from pipelines.synth import synthesize
from storage.location import as_location, remove_tree

SPEC = EncoderSpec("openclip:bindset-tiny-clip", None, ("image",), options={"seed": 0})  # seeded random init


def _build(src, url):
    return build_dataset([create_source("llvip", src, name="llvip")], url, BuildConfig(shard_size=2), progress=False)


def _store_keys(s3_server, bucket, encoder_id):
    prefix = f"ds/embeddings/{encoder_id}/"
    return [k.removeprefix(prefix) for k in s3_server.keys(bucket, prefix)]


@pytest.fixture
def ray_executor(ray_cluster):
    """An executor on the session's two-node cluster."""
    ray = pytest.importorskip("ray")
    from pipelines.executors.ray import RayExecutor

    executor = RayExecutor(address=ray_cluster)
    executor.connect()
    # Workers defined in this test module travel by value (tests/ is not importable on workers).
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield executor
    ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def test_s3_store_rerun_and_appended_shards(s3_server, s3_bucket, tmp_path):
    src = tmp_path / "src"
    synthesize(src, "llvip", 4, seed=0)
    url = f"s3://{s3_bucket}/ds"
    _build(src, url)
    first = embed_dataset(url, SPEC, executor=LocalExecutor(), progress=False)
    assert [s.shard_id for s in first.embedded] == [0, 1] and first.already_done == 0
    assert _store_keys(s3_server, s3_bucket, first.encoder_id) == ["00000.parquet", "00001.parquet", "encoder.json"]
    assert not (tmp_path / "s3:").exists() and not list(tmp_path.glob("**/embeddings"))  # nothing went local

    again = embed_dataset(url, SPEC, executor="local", progress=False)
    assert again.embedded == [] and again.already_done == 2

    # The sources grow (same bytes for the old samples): the rebuild appends shards, and only those are embedded.
    synthesize(tmp_path / "more", "llvip", 6, seed=0)
    for f in (tmp_path / "more").rglob("*.jpg"):
        target = src / f.relative_to(tmp_path / "more")
        if not target.exists():
            shutil.copy(f, target)
    _build(src, url)
    committed = storage.committed_shard_ids(url)
    assert len(committed) > 2
    third = embed_dataset(url, SPEC, executor=LocalExecutor(), progress=False)
    assert sorted(s.shard_id for s in third.embedded) == committed[2:] and third.already_done == 2
    assert _store_keys(s3_server, s3_bucket, first.encoder_id) == [
        *(f"{i:05d}.parquet" for i in committed),
        "encoder.json",
    ]
    store = storage.scan_embeddings(url, first.encoder_id).collect()
    index_ids = storage.scan_index(url).collect()["sample_id"]
    assert store.height == 6 and sorted(store["sample_id"]) == sorted(index_ids)
    assert store["image"].null_count() == 0


def test_ray_actor_pool_writes_the_same_vectors_to_s3(s3_server, s3_bucket, tmp_path, ray_executor):
    src = tmp_path / "src"
    synthesize(src, "llvip", 4, seed=0)
    url = f"s3://{s3_bucket}/ds"
    _build(src, url)
    local = embed_dataset(url, SPEC, executor=LocalExecutor(), progress=False)
    expected = storage.scan_embeddings(url, local.encoder_id).collect().sort("sample_id")
    remove_tree(as_location(url) / "embeddings")

    # The flows' form (executor name + address) goes through create_executor to the same Ray connection.
    report = embed_dataset(url, SPEC, executor="ray", actors=2, progress=False)
    assert sorted(s.shard_id for s in report.embedded) == [0, 1] and report.encoder_id == local.encoder_id
    got = storage.scan_embeddings(url, report.encoder_id).collect().sort("sample_id")
    assert got["sample_id"].to_list() == expected["sample_id"].to_list()
    assert np.abs(got["image"].to_numpy() - expected["image"].to_numpy()).max() <= 1e-5
    assert _store_keys(s3_server, s3_bucket, report.encoder_id) == ["00000.parquet", "00001.parquet", "encoder.json"]


class _DiesOnce:
    """A worker whose process dies the first time it meets each item (a lost node, an OOM kill)."""

    def __init__(self, marks: str):
        self.marks = marks

    def work(self, item: int) -> tuple[int, int]:
        import os
        from pathlib import Path

        mark = Path(self.marks) / str(item)
        if not mark.exists():
            mark.touch()
            os._exit(1)
        return item * 10, os.getpid()


class _Refuses:
    def __init__(self):
        raise RuntimeError("checkpoint differs between nodes")


class _Raises:
    def work(self, item):
        raise ValueError(f"bad item {item}")


def test_map_on_workers_restarts_dead_actors_and_surfaces_worker_errors(ray_executor, tmp_path):
    import functools

    (tmp_path / "2").touch()  # only item 1 kills its worker
    got = dict(ray_executor.map_on_workers(functools.partial(_DiesOnce, str(tmp_path)), "work", [1, 2], workers=1))
    assert {k: v[0] for k, v in got.items()} == {1: 10, 2: 20}
    assert (tmp_path / "1").exists()  # item 1's first attempt died with its actor; the restarted actor did it
    # A worker that cannot start: one line naming the cause, not a Ray traceback.
    with pytest.raises(RuntimeError, match="checkpoint differs between nodes"):
        list(ray_executor.map_on_workers(_Refuses, "work", [1]))
    # An error the worker raises is the worker's answer: not retried, raised as is.
    with pytest.raises(ValueError, match="bad item 3"):
        list(ray_executor.map_on_workers(_Raises, "work", [3]))
    # In-process: one worker, the same results.
    assert dict(LocalExecutor().map_on_workers(functools.partial(_DiesOnce, str(tmp_path)), "work", [1, 2])).keys() == {
        1,
        2,
    }
