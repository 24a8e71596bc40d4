"""WebDataset export: tar shards the ``webdataset`` package reads as-is, equal to the loader's
tensors, with a dedup table applied, a Polars-readable listing, and an object-store destination."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
import torch

import storage
from pipelines.build import build_dataset
from pipelines.config import BuildConfig
from pipelines.curation.export import export_webdataset
from pipelines.sources import create_source
from pipelines.synth import synthesize
from storage.dedup import write_dedup
from storage.embeddings import commit_embeddings

wds = pytest.importorskip("webdataset")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """SUN RGB-D-like samples (image + depth + depth_valid), a store, and a dedup table that leaves
    one sample out."""
    base = tmp_path_factory.mktemp("export")
    synthesize(base / "src", "sunrgbd", 5, seed=2)
    ds = base / "ds"
    build_dataset([create_source("sunrgbd", base / "src")], ds, BuildConfig(shard_size=2), progress=False)
    index = storage.scan_index(ds).select("sample_id", "shard").collect().sort("sample_id")
    ids = index["sample_id"].to_list()
    rng = np.random.default_rng(0)
    for shard in index["shard"].unique().to_list():
        part = index.filter(pl.col("shard") == shard)["sample_id"].to_list()
        commit_embeddings(ds, "toy", shard, part, {"image": rng.standard_normal((len(part), 8)).astype(np.float32)})
    table = pl.DataFrame(
        {
            "sample_id": ids,
            "group": [0, 0] + list(range(1, len(ids) - 1)),
            "kept": [True, False] + [True] * (len(ids) - 2),
            "reason": ["representative", "near"] + ["unique"] * (len(ids) - 2),
            "similarity": [1.0, 0.97] + [None] * (len(ids) - 2),
            "representative": [ids[0], ids[0]] + ids[2:],
        }
    )
    write_dedup(ds, "hand", table, {"note": "written by the test"})
    return ds, ids


def read_webdataset(urls) -> list[dict]:
    return list(wds.WebDataset(urls, shardshuffle=False).decode())


def loader_items(ds, **kw) -> dict[str, dict]:
    return {item["sample_id"]: item for item in storage.ShardDataset(ds, shuffle=False, train=False, **kw)}


def assert_equal_to_loader(samples: list[dict], expected: dict[str, dict]) -> None:
    assert sorted(s["__key__"] for s in samples) == sorted(expected)
    for sample in samples:
        item = expected[sample["__key__"]]
        arrays = {k[: -len(".npy")]: v for k, v in sample.items() if k.endswith(".npy")}
        assert set(arrays) == set(item) - {"sample_id"}
        for key, value in arrays.items():
            assert isinstance(value, np.ndarray) and value.dtype == item[key].numpy().dtype
            assert torch.equal(torch.from_numpy(value), item[key]), key
        meta = sample["json"]
        assert meta["sample_id"] == sample["__key__"] and "image" in meta["modalities"]


def test_export_reads_back_with_webdataset_equal_to_the_loader(dataset, tmp_path):
    ds, ids = dataset
    out = tmp_path / "wds"
    report = export_webdataset(ds, out, dedup="hand", shard_size=2, embeddings="toy")
    assert report.samples == 4 and report.skipped_duplicates == 1 and len(report.tars) == 2
    meta = json.loads((out / "export.json").read_text())
    assert meta["pattern"] == "shard-{000000..000001}.tar" and meta["dedup"] == "hand"
    samples = read_webdataset(str(out / meta["pattern"]))
    assert_equal_to_loader(samples, loader_items(ds, dedup="hand", embeddings="toy"))
    assert ids[1] not in {s["__key__"] for s in samples}  # the duplicate the table leaves out
    assert {"image.npy", "depth.npy", "depth_valid.npy", "image_embedding.npy", "json"} <= set(samples[0])
    listing = pl.read_parquet(out / "listing.parquet")
    assert listing.height == 4 and listing["sample_id"].n_unique() == 4
    assert set(listing["tar"]) == set(report.tars)
    first = listing.row(0, named=True)
    assert f"{first['key']}.json" in first["members"] and first["position"] == 0
    # tars are deterministic: the same export gives the same bytes; a second export needs --overwrite
    with pytest.raises(FileExistsError, match="overwrite"):
        export_webdataset(ds, out, dedup="hand", shard_size=2, embeddings="toy")
    before = {t: (out / t).read_bytes() for t in report.tars}
    export_webdataset(ds, out, dedup="hand", shard_size=2, embeddings="toy", overwrite=True)
    assert {t: (out / t).read_bytes() for t in report.tars} == before


def test_cli_export_without_dedup_and_to_an_object_store(dataset, tmp_path, s3_bucket, capsys):
    import obstore

    from flows.cli import main
    from storage.location import as_location, polars_storage_options

    ds, ids = dataset
    url = f"s3://{s3_bucket}/exports/sunrgbd"
    assert main(["export", str(ds), "--format", "webdataset", "--out", url, "--shard-size", "3", "--no-progress"]) == 0
    assert "exported 5 samples to 2 tar shards" in capsys.readouterr().out
    out = as_location(url)
    meta = json.loads((out / "export.json").read_text())
    local = tmp_path / "fetched"
    local.mkdir()
    for tar in meta["tars"]:
        (local / tar["name"]).write_bytes((out / tar["name"]).read_bytes())
    samples = read_webdataset([str(local / t["name"]) for t in meta["tars"]])
    assert_equal_to_loader(samples, loader_items(ds))
    listing = pl.scan_parquet(f"{url}/listing.parquet", storage_options=polars_storage_options(out)).collect()
    assert sorted(listing["sample_id"]) == sorted(ids)
    assert not [p for p in obstore.list(out.store, prefix=out.key + "/") for p in p if "export-" in p["path"]]
    assert main(["export", str(ds), "--out", str(tmp_path / "x"), "--dedup", "nope"]) == 2
