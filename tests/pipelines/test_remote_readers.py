"""inspect, validate, search and report on an s3:// dataset (a real S3 server on loopback) give what
they give on the same dataset built locally; validate catches a corrupted shard object; the Ray
executor's reachability check names the node that has no credentials for the bucket."""

import os
from types import SimpleNamespace

import numpy as np
import pytest

import storage
from pipelines.binding.search import Query, embed_query, search_store
from pipelines.build import build_dataset
from pipelines.config import BuildConfig
from pipelines.embed import EncoderSpec, embed_dataset
from pipelines.executors import LocalExecutor
from pipelines.report import write_report
from pipelines.sources import create_source
from pipelines.summary import dataset_summary
from pipelines.synth import synthesize
from pipelines.validate import validate_dataset

SPEC = EncoderSpec("openclip:bindset-tiny-clip", None, ("image",), options={"seed": 0})  # seeded random init


def _build(src, out):
    build_dataset([create_source("llvip", src, name="llvip")], out, BuildConfig(shard_size=2), progress=False)


@pytest.fixture(scope="module")
def twins(s3_server, tmp_path_factory):
    """One source tree built twice, into a local folder and into s3://, each with an embedding store."""
    root = tmp_path_factory.mktemp("readers")
    synthesize(root / "src", "llvip", 4, seed=0)
    bucket = s3_server.new_bucket()
    url = f"s3://{bucket}/ds"
    encoder_id = None
    for out in (root / "ds", url):
        _build(root / "src", out)
        encoder_id = embed_dataset(out, SPEC, executor=LocalExecutor(), progress=False).encoder_id
    return SimpleNamespace(local=root / "ds", url=url, bucket=bucket, src=root / "src", encoder_id=encoder_id)


def test_inspect_gives_the_same_summary(twins):
    remote, local = dataset_summary(twins.url), dataset_summary(twins.local)
    assert remote.pop("dataset") == twins.url and local.pop("dataset") == str(twins.local.resolve())
    assert remote == local
    assert remote["samples"] == 4 and remote["embeddings"] == [
        {"encoder_id": twins.encoder_id, "samples": 4, "coverage": 1.0}
    ]


def test_validate_gives_the_same_verdict_and_lists_uncommitted_objects(twins, s3_server):
    remote, local = validate_dataset(twins.url), validate_dataset(twins.local)
    assert remote.ok and local.ok and remote.checked == local.checked == 2
    assert remote.lines()[1:] == local.lines()[1:] == []
    # What a killed attempt leaves: a shard no index commits, a temp object. Not data, not an error.
    client = s3_server.client()
    strays = ["ds/shards/00007.h5", "ds/_tmp/attempt-1/00007.h5"]
    for key in strays:
        client.put_object(Bucket=twins.bucket, Key=key, Body=b"partial")
    try:
        report = validate_dataset(twins.url)
        assert report.ok and len(report.orphans) == 2
        assert any("shards/00007.h5" in o for o in report.orphans) and any("_tmp/" in o for o in report.orphans)
    finally:
        for key in strays:
            client.delete_object(Bucket=twins.bucket, Key=key)


def test_validate_detects_a_corrupted_shard_object(twins, s3_server):
    url = f"s3://{twins.bucket}/corrupt"
    _build(twins.src, url)
    assert validate_dataset(url).ok
    client = s3_server.client()
    data = client.get_object(Bucket=twins.bucket, Key="corrupt/shards/00000.h5")["Body"].read()
    flipped = data[:-100] + bytes([data[-100] ^ 0xFF]) + data[-99:]  # same size, other bytes
    client.put_object(Bucket=twins.bucket, Key="corrupt/shards/00000.h5", Body=flipped)
    data = client.get_object(Bucket=twins.bucket, Key="corrupt/shards/00001.h5")["Body"].read()
    client.put_object(Bucket=twins.bucket, Key="corrupt/shards/00001.h5", Body=data[: len(data) // 2])
    report = validate_dataset(url)
    assert not report.ok and report.missing == []
    assert report.corrupt == [
        "00000: shard sha256 differs from dataset.json",
        f"00001: shard is {len(data) // 2} bytes, dataset.json says {len(data)}",
    ]


def test_search_gives_the_same_hits_and_takes_query_files_by_url(twins, s3_server):
    ids, vectors = (
        storage.scan_embeddings(twins.local, twins.encoder_id)
        .sort("sample_id")
        .collect()
        .pipe(lambda f: (f["sample_id"].to_list(), f["image"].to_numpy()))
    )
    query = vectors[1]
    remote = search_store(twins.url, twins.encoder_id, "image", query, k=3)
    local = search_store(twins.local, twins.encoder_id, "image", query, k=3)
    assert [(h.sample_id, h.fields) for h in remote] == [(h.sample_id, h.fields) for h in local]
    assert np.allclose([h.score for h in remote], [h.score for h in local])
    assert remote[0].sample_id == ids[1] and remote[0].fields["source"] == "llvip"
    # A query image in the bucket embeds exactly as the same file on disk.
    from encoders import create_encoder

    encoder = create_encoder(SPEC.name, modality="image", seed=0)
    image = next(twins.src.rglob("visible/*/*.jpg"))
    s3_server.client().upload_file(str(image), twins.bucket, "queries/q.jpg")
    by_url = embed_query(f"s3://{twins.bucket}/queries/q.jpg", "image", encoder)
    assert np.array_equal(by_url, embed_query(image, "image", encoder))
    hits = search_store(
        twins.url, twins.encoder_id, "image", [Query(f"s3://{twins.bucket}/queries/q.jpg", "image", encoder)], k=1
    )
    assert len(hits) == 1


def test_report_from_and_to_s3_equals_the_local_report(twins, s3_server, tmp_path):
    page = write_report(twins.url, f"s3://{twins.bucket}/report", n=2, seed=0)
    assert str(page) == f"s3://{twins.bucket}/report/index.html"
    assert s3_server.keys(twins.bucket, "report/") == [
        "report/index.html",
        "report/quality.png",
        "report/sample_00.png",
        "report/sample_01.png",
    ]
    local_page = write_report(twins.local, tmp_path / "out", n=2, seed=0)
    client = s3_server.client()

    def remote_bytes(name):
        return client.get_object(Bucket=twins.bucket, Key=f"report/{name}")["Body"].read()

    html = remote_bytes("index.html").decode().replace(twins.url, "DATASET")
    assert html == local_page.read_text(encoding="utf-8").replace(str(twins.local), "DATASET")
    for name in ("quality.png", "sample_00.png", "sample_01.png"):
        assert remote_bytes(name) == (tmp_path / "out" / name).read_bytes(), name
    # A smaller report into the same place drops the figures it no longer links.
    write_report(twins.url, f"s3://{twins.bucket}/report", n=1, seed=0)
    assert "report/sample_01.png" not in s3_server.keys(twins.bucket, "report/")


# -- reachability from every node, with each node's own credentials --------------------------------


@pytest.fixture
def cluster_with_a_node_without_credentials(s3_server):
    """Head (with the bucket's credentials) + one worker node started without any: no keys in its
    environment and the instance-metadata fallback pointed at a closed loopback port (a cloud node
    without an instance role; nothing leaves this machine)."""
    import ray
    from conftest import _free_port, loopback_ray_cluster

    bare = {
        k: v
        for k, v in os.environ.items()
        if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE")
    }
    bare.update(
        AWS_METADATA_ENDPOINT=f"http://127.0.0.1:{_free_port()}",
        AWS_SHARED_CREDENTIALS_FILE="/nonexistent",
        AWS_CONFIG_FILE="/nonexistent",
        RAY_USAGE_STATS_ENABLED="0",
    )
    with loopback_ray_cluster(worker_env=bare, worker_resources={"no_credentials": 1}) as address:
        bare_node = next(n["NodeID"] for n in ray.nodes() if n["Alive"] and "no_credentials" in n["Resources"])
        yield address, bare_node


def test_check_root_reachable_names_the_node_without_credentials(
    cluster_with_a_node_without_credentials, s3_bucket, tmp_path
):
    from pipelines.executors.ray import RayExecutor

    address, bare_node = cluster_with_a_node_without_credentials
    executor = RayExecutor(address=address)
    with pytest.raises(RuntimeError) as caught:
        executor.check_root_reachable(f"s3://{s3_bucket}/ds")
    message = str(caught.value)
    assert "not reachable from every Ray node" in message and "\n" not in message
    # The node is named with its one-line reason: with no keys, the credential chain fell through to
    # the instance-metadata lookup, which found no role.
    assert f"{bare_node[:12]} (" in message and "no credentials for s3://" in message
    import ray

    head = next(n["NodeID"] for n in ray.nodes() if n["Alive"] and n["NodeID"] != bare_node)
    assert head[:12] not in message  # the node with credentials reached the bucket
    # A local root keeps the mounted-path check (both nodes share this machine's disk here).
    executor.check_root_reachable(tmp_path)
