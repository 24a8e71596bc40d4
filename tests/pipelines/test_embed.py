"""Embedding stores: backfills embed only what is missing; stores are readable with Polars."""

import numpy as np
import polars as pl
import pytest
import torch

import storage
from encoders import create_encoder
from pipelines.build import build_dataset
from pipelines.config import BuildConfig
from pipelines.embed import EncoderSpec, embed_dataset
from pipelines.sources import create_source
from pipelines.synth import synthesize
from storage.embeddings import embedded_shard_ids, missing_shard_ids


@pytest.fixture
def tiny_clip_checkpoint(tmp_path):
    """Weights written once, so every process (Ray actors included) loads the same model."""
    from safetensors.torch import save_file

    from encoders.openclip import TINY_NAME, load_openclip_model

    model, _ = load_openclip_model(TINY_NAME, None, torch.device("cpu"), seed=0)
    path = tmp_path / "tiny-clip.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def test_backfill_embeds_only_new_shards_and_matches_the_encoder(tmp_path, tiny_clip_checkpoint):
    src = tmp_path / "src"
    synthesize(src, "image-text", 4, seed=1)
    ds = tmp_path / "ds"
    build_dataset([create_source("image-text", src)], ds, BuildConfig(shard_size=2), progress=False)
    spec = EncoderSpec("openclip:bindset-tiny-clip", str(tiny_clip_checkpoint), ("image", "text"))
    first = embed_dataset(ds, spec, executor="local", progress=False)
    assert [s.shard_id for s in first.embedded] == [0, 1]

    # Sources grow: the rebuild appends a shard; the backfill embeds only that one.
    synthesize(tmp_path / "more", "image-text", 6, seed=1)
    (tmp_path / "more" / "captions.parquet").replace(src / "captions.parquet")
    for img in (tmp_path / "more" / "images").iterdir():
        if not (src / "images" / img.name).exists():
            img.replace(src / "images" / img.name)
    build_dataset([create_source("image-text", src)], ds, BuildConfig(shard_size=2), progress=False)
    assert missing_shard_ids(ds, first.encoder_id) == [2]
    second = embed_dataset(ds, spec, executor="local", progress=False)
    assert [s.shard_id for s in second.embedded] == [2] and second.already_done == 2
    assert embedded_shard_ids(ds, first.encoder_id) == [0, 1, 2]

    store = storage.scan_embeddings(ds, first.encoder_id).collect()
    assert store.height == 6 and store["sample_id"].n_unique() == 6
    assert store.schema["image"] == pl.Array(pl.Float32, 32)
    # The stored vectors are what the encoder gives for the reader's model-ready tensors.
    encoder = create_encoder("openclip:bindset-tiny-clip", checkpoint=tiny_clip_checkpoint, modality="image")
    with storage.open_dataset(ds) as reader:
        sid = store["sample_id"][0]
        expected = encoder.encode(reader[sid]["image"][None])[0]
    assert np.abs(store.filter(pl.col("sample_id") == sid)["image"].to_numpy()[0] - expected).max() <= 1e-5
    assert "text" in store.columns


def test_new_checkpoint_makes_a_new_store_and_keeps_the_old(tmp_path, tiny_clip_checkpoint):
    from safetensors.torch import load_file, save_file

    src = tmp_path / "src"
    synthesize(src, "image-text", 2, seed=3)
    ds = tmp_path / "ds"
    build_dataset([create_source("image-text", src)], ds, BuildConfig(shard_size=2), progress=False)
    old = embed_dataset(
        ds, EncoderSpec("openclip:bindset-tiny-clip", str(tiny_clip_checkpoint)), executor="local", progress=False
    )
    old_file = next((ds / "embeddings" / old.encoder_id).glob("*.parquet"))
    before = old_file.read_bytes()
    weights = {k: v * 1.01 if v.is_floating_point() else v for k, v in load_file(str(tiny_clip_checkpoint)).items()}
    new_ckpt = tmp_path / "tiny-v2.safetensors"
    save_file(weights, str(new_ckpt))
    new = embed_dataset(ds, EncoderSpec("openclip:bindset-tiny-clip", str(new_ckpt)), executor="local", progress=False)
    assert new.encoder_id != old.encoder_id and len(new.embedded) == 1
    assert old_file.read_bytes() == before
    assert sorted(p.name for p in (ds / "embeddings").iterdir()) == sorted([old.encoder_id, new.encoder_id])


def test_missing_modality_is_null_not_numbers(tmp_path, tiny_clip_checkpoint):
    src = tmp_path / "src"
    synthesize(src, "llvip", 2, seed=1)
    ds = tmp_path / "ds"
    build_dataset([create_source("llvip", src)], ds, BuildConfig(shard_size=4), progress=False)
    report = embed_dataset(
        ds,
        EncoderSpec("openclip:bindset-tiny-clip", str(tiny_clip_checkpoint), ("image", "text")),
        executor="local",
        progress=False,
    )
    store = storage.scan_embeddings(ds, report.encoder_id).collect()
    assert store["text"].null_count() == 2 and store["image"].null_count() == 0


def test_backfill_on_ray_actor_pool(tmp_path, tiny_clip_checkpoint):
    src = tmp_path / "src"
    synthesize(src, "image-text", 6, seed=2)
    ds = tmp_path / "ds"
    build_dataset([create_source("image-text", src)], ds, BuildConfig(shard_size=2), progress=False)
    spec = EncoderSpec("openclip:bindset-tiny-clip", str(tiny_clip_checkpoint), ("image",))
    local = embed_dataset(ds, spec, executor="local", progress=False)
    expected = storage.scan_embeddings(ds, local.encoder_id).collect().sort("sample_id")
    import shutil

    shutil.rmtree(ds / "embeddings")
    import ray

    try:
        report = embed_dataset(ds, spec, executor="ray", actors=2, progress=False)
    finally:
        ray.shutdown()
    assert sorted(s.shard_id for s in report.embedded) == [0, 1, 2]
    assert report.encoder_id == local.encoder_id
    got = storage.scan_embeddings(ds, report.encoder_id).collect().sort("sample_id")
    assert got.height == 6
    assert np.abs(got["image"].to_numpy() - expected["image"].to_numpy()).max() <= 1e-5


def test_embed_worker_reuses_the_drivers_checkpoint_hash_and_refuses_another_model(tiny_clip_checkpoint):
    import os

    import encoders.base as base
    from pipelines.embed import _EmbedWorker

    spec = EncoderSpec("openclip:bindset-tiny-clip", str(tiny_clip_checkpoint), ("image",))
    st = tiny_clip_checkpoint.stat()
    key = (str(tiny_clip_checkpoint.resolve()), st.st_size, st.st_mtime_ns)
    real = base.sha256_file(tiny_clip_checkpoint)
    # A digest handed over for this exact (path, size, mtime) is used as is: the file is not read
    # again (the planted digest shows up in the encoder id).
    base._SHA_CACHE.clear()
    planted = "ab" * 32
    worker = _EmbedWorker(spec, None, {key: planted})
    assert planted[:12] in worker.encoder_id and real[:12] not in worker.encoder_id
    # A file changed since the driver hashed it misses that key and is hashed again.
    base._SHA_CACHE.clear()
    os.utime(tiny_clip_checkpoint, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    worker = _EmbedWorker(spec, None, {key: planted})
    assert real[:12] in worker.encoder_id
    # A worker whose model differs from the one the driver planned for refuses to embed.
    with pytest.raises(RuntimeError, match="differs between nodes"):
        _EmbedWorker(spec, worker.encoder_id.replace(real[:12], planted[:12]))
    base._SHA_CACHE.clear()


def test_reading_overlaps_compute_only_on_an_accelerator():
    import threading

    from pipelines.embed import _overlapped

    readers = []

    def batches():
        for i in range(4):
            readers.append(threading.current_thread().name)
            yield np.full((2, 3), i, np.float32)

    # on CUDA the next batch is read on a thread while the model runs; order and content are kept
    got = list(_overlapped(batches(), torch.device("cuda")))
    assert [int(b[0, 0]) for b in got] == [0, 1, 2, 3]
    assert all(name != threading.current_thread().name for name in readers)
    # on the CPU, where the model's threads use every core, reading stays on the caller's thread
    readers.clear()
    got = list(_overlapped(batches(), torch.device("cpu")))
    assert [int(b[0, 0]) for b in got] == [0, 1, 2, 3]
    assert set(readers) == {threading.current_thread().name}
