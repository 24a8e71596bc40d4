"""Builds from s3:// sources into s3:// datasets against a real S3 server (moto on loopback): equal to
local builds shard for shard, resumable after a driver SIGKILL, refused while another build holds the
lease, and spread over a two-node Ray cluster that shares no dataset path."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipelines.build import build_dataset
from pipelines.config import BuildConfig
from pipelines.executors import LocalExecutor
from pipelines.sources import create_source
from pipelines.synth import synthesize
from storage import scan_index, scan_rejects
from storage.catalog import content_hash, load_catalog
from storage.location import as_location
from storage.locks import DatasetLocked

REPO = Path(__file__).resolve().parents[2]
N_SAMPLES = 8


@pytest.fixture(scope="module")
def local_sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("llvip")
    synthesize(root, "llvip", N_SAMPLES, seed=5)
    return root


@pytest.fixture(scope="module")
def s3_sources(s3_server, local_sources):
    """The same tree uploaded to a bucket: the s3 build never sees the local copy."""
    return s3_server.upload_tree(local_sources, s3_server.new_bucket("src"), "llvip")


@pytest.fixture(scope="module")
def local_reference(local_sources, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "ds"
    build_dataset(
        [create_source("llvip", local_sources, name="llvip")],
        out,
        BuildConfig(shard_size=2),
        executor=LocalExecutor(),
        progress=False,
    )
    return out


def _build(sources_url, out, executor=None):
    return build_dataset(
        [create_source("llvip", sources_url, name="llvip")],
        out,
        BuildConfig(shard_size=2),
        executor=executor or LocalExecutor(),
        progress=False,
    )


def test_s3_build_equals_local_build_and_reruns_build_nothing(s3_server, s3_sources, local_reference):
    bucket = s3_server.new_bucket()
    out = f"s3://{bucket}/ds"
    report = _build(s3_sources, out)
    assert report.stored == N_SAMPLES and report.rejected == 0
    keys = s3_server.keys(bucket)
    assert "ds/dataset.json" in keys and "ds/index/00000.parquet" in keys and "ds/shards/00003.h5" in keys
    assert not any("_tmp" in k for k in keys), "object stores are staged on the worker, not in the bucket"
    assert content_hash(out) == content_hash(local_reference)
    remote, local = load_catalog(out)["shards"], load_catalog(local_reference)["shards"]
    assert {k: v["sha256"] for k, v in remote.items()} == {k: v["sha256"] for k, v in local.items()}
    # Polars scans the bucket natively and sees exactly the local build's rows.
    assert scan_index(out).collect().sort("sample_id").equals(scan_index(local_reference).collect().sort("sample_id"))
    assert scan_rejects(out).collect().height == 0
    rerun = _build(s3_sources, out)
    assert rerun.summaries == [] and rerun.skipped_shards == 4


def test_a_shard_without_its_index_is_not_data(s3_server, s3_sources, local_reference):
    """What a worker killed between uploads leaves (a shard object, no index) is neither read nor
    trusted by a resume: the rerun rebuilds that shard and overwrites it with the same bytes."""
    bucket = s3_server.new_bucket()
    out = as_location(f"s3://{bucket}/ds")
    _build(s3_sources, out)
    (out / "index" / "00002.parquet").unlink()
    (out / "shards" / "00002.h5").write_bytes(b"half an upload")
    assert scan_index(out).collect().height == N_SAMPLES - 2
    report = _build(s3_sources, out)
    assert [s.shard_id for s in report.summaries] == [2]
    assert content_hash(out) == content_hash(local_reference)


def _wait_for(predicate, timeout=120.0, what=""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_driver_sigkill_mid_build_then_rerun_gives_the_same_dataset(s3_server, s3_sources, local_reference, tmp_path):
    bucket = s3_server.new_bucket()
    out = f"s3://{bucket}/ds"
    code = (
        "from pipelines.build import build_dataset\n"
        "from pipelines.config import BuildConfig\n"
        "from pipelines.executors import LocalExecutor\n"
        "from pipelines.sources import create_source\n"
        f"build_dataset([create_source('llvip', {s3_sources!r}, name='llvip')], {out!r}, BuildConfig(shard_size=2),"
        " executor=LocalExecutor(), progress=False)\n"
    )
    env = {**os.environ, "BINDSET_FAULTS": "shard:*=slow", "BINDSET_FAULTS_DELAY_S": "1.5", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", code], env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        _wait_for(lambda: len(s3_server.keys(bucket, "ds/index/")) >= 1, what="a committed shard")
        # A second live build is refused, naming the holder.
        with pytest.raises(DatasetLocked, match=rf"pid {proc.pid} on "):
            _build(s3_sources, out)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    committed = s3_server.keys(bucket, "ds/index/")
    assert 1 <= len(committed) < 4, committed
    assert "ds/_locks/build.lock" in s3_server.keys(bucket), "the killed driver's lock is still there"
    report = _build(s3_sources, out)  # same host, dead pid: the lock is taken over at once
    assert report.skipped_shards == len(committed)
    assert report.stored + report.skipped_shards * 2 == N_SAMPLES
    ids = scan_index(out).select("sample_id").collect()["sample_id"]
    assert ids.len() == N_SAMPLES and ids.n_unique() == N_SAMPLES, "no duplicate and no missing sample"
    assert content_hash(out) == content_hash(local_reference)
    assert "ds/_locks/build.lock" not in s3_server.keys(bucket)


# -- two nodes, nothing shared but the bucket ----------------------------------------------------------


def test_two_node_cluster_builds_s3_to_s3_equal_to_local(ray_cluster, s3_server, s3_sources, local_reference):
    from pipelines.executors.ray import RayExecutor

    bucket = s3_server.new_bucket()
    out = f"s3://{bucket}/ds"
    report = _build(s3_sources, out, executor=RayExecutor(address=ray_cluster, max_in_flight=4))
    assert report.stored == N_SAMPLES
    shards = load_catalog(out)["shards"]
    assert len({entry["node_id"] for entry in shards.values()}) == 2, "shards were not committed from both nodes"
    assert content_hash(out) == content_hash(local_reference)
