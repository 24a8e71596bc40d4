"""`bindset embed --encoder binding:<size>`: a trained binding embeds through the embed step like any
other encoder family, and its store is keyed by the checkpoint it was given."""

import numpy as np
import polars as pl
import pytest
import torch

import storage
from encoders import create_encoder
from encoders.base import sha256_file
from encoders.binding import BindingEncoder
from flows.cli import main
from pipelines.binding.train import TrainConfig, train_binding
from pipelines.build import build_dataset
from pipelines.config import BuildConfig
from pipelines.sources import create_source
from pipelines.synth import synthesize
from storage.embeddings import commit_embeddings, read_encoder_info

TARGET = "fake-image-store"
N = 6


@pytest.fixture(scope="module")
def thermal_run(tmp_path_factory):
    """LLVIP-like visible+thermal pairs in two shards, random 16-d 'image' target vectors, and a tiny
    thermal binding trained for two epochs (both checkpoints kept)."""
    root = tmp_path_factory.mktemp("bind-embed")
    synthesize(root / "src", "llvip", N, seed=0)
    ds = root / "ds"
    build_dataset([create_source("llvip", root / "src")], ds, BuildConfig(shard_size=4), progress=False)
    rng = np.random.default_rng(0)
    index = storage.scan_index(ds).select("sample_id", "shard").collect()
    for shard in sorted(set(index["shard"].to_list())):
        ids = index.filter(pl.col("shard") == shard)["sample_id"].to_list()
        commit_embeddings(ds, TARGET, shard, ids, {"image": rng.standard_normal((len(ids), 16)).astype(np.float32)})
    config = TrainConfig(epochs=2, batch_size=3, lr=3e-3, device="cpu", keep_checkpoints=None, progress=False)
    run = train_binding(ds, "thermal", TARGET, root / "run", config)
    assert run.n_samples == N and len(run.checkpoints) == 2
    return ds, run


def _embed(ds, checkpoint, *extra):
    return main(
        ["embed", str(ds), "--encoder", "binding:tiny", "--checkpoint", str(checkpoint)]
        + list(extra)
        + ["--executor", "local", "--no-prefect"]
    )


def test_bindset_embed_stores_what_the_binding_encoder_gives(thermal_run, capsys):
    ds, run = thermal_run
    assert _embed(ds, run.checkpoint, "--modalities", "thermal") == 0
    encoder = BindingEncoder(run.checkpoint, device="cpu")
    assert encoder.encoder_id == run.encoder_id  # the id the trainer reported
    assert f"encoder {encoder.model_id}: 2 shards embedded ({N} samples" in capsys.readouterr().out

    store = storage.scan_embeddings(ds, encoder.model_id).sort("sample_id").collect()
    assert store.height == N and store.schema["thermal"] == pl.Array(pl.Float32, 16)
    with storage.open_dataset(ds) as reader:
        inputs = np.stack([reader[sid]["thermal"] for sid in store["sample_id"]])
    np.testing.assert_allclose(store["thermal"].to_numpy(), encoder.encode(inputs), rtol=0, atol=1e-6)
    info = read_encoder_info(ds, encoder.model_id)
    assert info["family"] == "binding" and info["target_encoder_id"] == TARGET and info["name"] == "binding:tiny"

    # the epoch-1 checkpoint is another model: another store, the first one left as it was
    assert _embed(ds, run.checkpoints[0], "--modalities", "thermal") == 0
    earlier = BindingEncoder(run.checkpoints[0], device="cpu").model_id
    assert earlier != encoder.model_id
    assert storage.scan_embeddings(ds, earlier).collect().height == N
    assert storage.scan_embeddings(ds, encoder.model_id).sort("sample_id").collect().equals(store)

    # the CLI's default modality (image) is not what this binding embeds: one line, exit code 2
    capsys.readouterr()
    assert _embed(ds, run.checkpoint) == 2
    assert "binds 'thermal', not 'image'" in capsys.readouterr().err


def test_the_encoder_id_follows_the_checkpoint_and_loading_never_unpickles(thermal_run, monkeypatch):
    _, run = thermal_run

    def no_pickle(*args, **kwargs):
        raise AssertionError("a binding checkpoint must load without torch.load")

    monkeypatch.setattr(torch, "load", no_pickle)
    first = create_encoder("binding:tiny", checkpoint=run.checkpoints[0], modality="thermal", device="cpu")
    last = create_encoder("binding:tiny", checkpoint=run.checkpoints[1], device="cpu")
    assert last.modality == "thermal" and last.encoder_id == run.encoder_id
    assert first.encoder_id != last.encoder_id and first.model_id != last.model_id
    for enc, path in ((first, run.checkpoints[0]), (last, run.checkpoints[1])):
        assert enc.encoder_id == f"bindset-imagebind-tiny-thermal-{sha256_file(path)[:12]}-p1"

    with pytest.raises(ValueError, match="needs the checkpoint of a trained binding"):
        create_encoder("binding:tiny")
    with pytest.raises(ValueError, match="binding of ImageBind size 'tiny', not 'huge'"):
        create_encoder("binding:huge", checkpoint=run.checkpoint)
    with pytest.raises(ValueError, match="binds 'thermal', not 'audio'"):
        create_encoder("binding:tiny", checkpoint=run.checkpoint, modality="audio")
