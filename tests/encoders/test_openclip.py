"""OpenCLIP encoders: parity with open_clip's own encode_image / encode_text, video reduction,
local-checkpoint-only loading, encoder ids. A tiny random-init config keeps every test fast."""

from __future__ import annotations

import json
import re

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from encoders import create_encoder
from encoders.base import sha256_file
from encoders.openclip import (
    TINY_CONFIG,
    TINY_NAME,
    OpenCLIPImageEncoder,
    OpenCLIPTextEncoder,
    register_model_config,
)

NAME = f"openclip:{TINY_NAME}"


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """open_clip's own model (seeded random init) and the same weights saved as .safetensors and .pt."""
    torch.manual_seed(123)
    model = open_clip.create_model(TINY_NAME, pretrained=None).eval()
    root = tmp_path_factory.mktemp("ckpt")
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(sd, root / "tiny.safetensors")
    torch.save(sd, root / "tiny.pt")
    return model, root


def images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, 224, 224)).astype(np.float32)


@pytest.mark.parametrize("fmt", ["safetensors", "pt"])
def test_image_encoder_equals_open_clip_encode_image(reference, fmt):
    model, root = reference
    enc = create_encoder(NAME, checkpoint=root / f"tiny.{fmt}", device="cpu")
    assert isinstance(enc, OpenCLIPImageEncoder) and enc.modality == "image" and enc.dim == 32
    x = images(7)
    ours = enc.encode(x)
    with torch.inference_mode():
        theirs = model.encode_image(torch.from_numpy(x), normalize=True).numpy()
    assert ours.dtype == np.float32 and ours.shape == (7, 32)
    assert np.abs(ours - theirs).max() <= 1e-5
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)  # documented: normalized
    enc.batch_size = 3  # chunked: same numbers
    assert np.abs(enc.encode(torch.from_numpy(x)) - theirs).max() <= 1e-5


def test_text_encoder_equals_open_clip_encode_text(reference):
    model, root = reference
    enc = create_encoder(NAME, checkpoint=root / "tiny.safetensors", modality="text")
    assert isinstance(enc, OpenCLIPTextEncoder) and enc.modality == "text"
    captions = ["A dog.", "A car", "A bird on a wire", ""]
    tokens = open_clip.get_tokenizer(TINY_NAME)(captions)
    with torch.inference_mode():
        theirs = model.encode_text(tokens, normalize=True).numpy()
    from_ids = enc.encode(tokens.numpy().astype(np.int32))  # shards store int32 token ids
    from_strings = enc.encode(captions)
    assert np.abs(from_ids - theirs).max() <= 1e-5
    assert np.abs(from_strings - theirs).max() <= 1e-5
    with pytest.raises(ValueError, match=r"\[N,77\]"):
        enc.encode(tokens[:, :20].numpy())


def test_video_clip_embeddings_are_averaged_after_normalization(reference):
    model, root = reference
    enc = create_encoder(NAME, checkpoint=root / "tiny.safetensors", modality="video")
    rng = np.random.default_rng(1)
    video = rng.standard_normal((2, 3, 3, 2, 224, 224)).astype(np.float32)  # [N, S clips, 3, T, H, W]
    video[:, 1] *= 4.0  # make the clips differ
    out = enc.encode(video)
    assert out.shape == (2, 32)
    with torch.inference_mode():
        frames = torch.from_numpy(video).permute(0, 1, 3, 2, 4, 5).reshape(-1, 3, 224, 224)
        per_frame = model.encode_image(frames, normalize=True).reshape(2, 3, 2, -1)
        per_clip = F.normalize(per_frame.mean(dim=2), dim=-1)
        expected = per_clip.mean(dim=1).numpy()
    assert np.abs(out - expected).max() <= 1e-5
    norms = np.linalg.norm(out, axis=1)
    assert (norms <= 1 + 1e-5).all() and (norms < 1 - 1e-6).all()  # not renormalized

    # [N, S, 3, H, W]: S image clips, averaged
    clips = video[:, :, :, 0]
    with torch.inference_mode():
        expected = model.encode_image(torch.from_numpy(clips).flatten(0, 1), normalize=True).reshape(2, 3, -1).mean(1)
    assert np.abs(enc.encode(clips) - expected.numpy()).max() <= 1e-5


def test_encoder_id_names_model_checkpoint_and_preprocessing(reference):
    _, root = reference
    ckpt = root / "tiny.safetensors"
    enc = create_encoder(NAME, checkpoint=ckpt)
    assert enc.encoder_id == f"openclip-{TINY_NAME}-image-{sha256_file(ckpt)[:12]}-p1"
    assert enc.model_id == f"openclip-{TINY_NAME}-{sha256_file(ckpt)[:12]}-p1"
    assert re.fullmatch(r"[A-Za-z0-9._-]+", enc.encoder_id)
    other = create_encoder(NAME, checkpoint=root / "tiny.pt", modality="text", preprocess_version="p2")
    assert other.encoder_id == f"openclip-{TINY_NAME}-text-{sha256_file(root / 'tiny.pt')[:12]}-p2"
    rand = create_encoder(NAME)
    assert rand.encoder_id == f"openclip-{TINY_NAME}-image-random-p1"
    assert enc.metadata()["dim"] == 32 and enc.metadata()["normalized"] is True


def test_frozen_and_seeded_random_init():
    a = create_encoder(NAME, seed=5)
    b = create_encoder(NAME, seed=5)
    c = create_encoder(NAME, seed=6)
    assert not a.model.training
    assert not any(p.requires_grad for p in a.model.parameters())
    x = images(2)
    assert np.array_equal(a.encode(x), b.encode(x))
    assert not np.allclose(a.encode(x), c.encode(x))


@pytest.mark.parametrize("tag", ["openai", "laion2b_s32b_b79k", "hf-hub:laion/CLIP-ViT-H-14-laion2B-s32B-b79K"])
def test_hub_tags_fail_at_once(tag, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("no model may be built for a hub tag")

    monkeypatch.setattr(open_clip, "create_model", boom)
    with pytest.raises(ValueError, match="cannot download") as err:
        create_encoder("openclip:ViT-H-14", checkpoint=tag)
    assert "local .pt/.pth/.bin/.safetensors path" in str(err.value)


def test_missing_or_odd_checkpoint_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        create_encoder(NAME, checkpoint=tmp_path / "nope.safetensors")
    odd = tmp_path / "weights.npz"
    odd.write_bytes(b"x")
    with pytest.raises(ValueError, match="unsupported suffix"):
        create_encoder(NAME, checkpoint=odd)


def test_wrong_image_size_and_modality_are_refused():
    enc = create_encoder(NAME)
    with pytest.raises(ValueError, match="224"):
        enc.encode(np.zeros((1, 3, 112, 112), np.float32))
    with pytest.raises(ValueError, match="'image'"):
        create_encoder(NAME, modality="audio")


def test_registering_a_config_at_run_time():
    cfg = dict(TINY_CONFIG, embed_dim=16)
    register_model_config("bindset-test-clip16", cfg)
    assert "bindset-test-clip16" in open_clip.list_models()
    enc = create_encoder("openclip:bindset-test-clip16", modality="text")
    assert enc.dim == 16 and enc.encode(["hello"]).shape == (1, 16)


def test_registration_goes_through_open_clip_add_model_config(tmp_path):
    # open_clip's public registration (a JSON file per config): a rescan it does for anyone else's
    # add_model_config keeps ours, and registering the name again replaces the config
    register_model_config("bindset-test-clip8", dict(TINY_CONFIG, embed_dim=8))
    other = tmp_path / "bindset-test-other.json"
    other.write_text(json.dumps(dict(TINY_CONFIG, embed_dim=24)))
    open_clip.add_model_config(other)
    assert open_clip.get_model_config("bindset-test-clip8")["embed_dim"] == 8
    assert open_clip.get_model_config("bindset-test-other")["embed_dim"] == 24
    register_model_config("bindset-test-clip8", dict(TINY_CONFIG, embed_dim=12))
    assert open_clip.get_model_config("bindset-test-clip8")["embed_dim"] == 12
    # a config file in open_clip's wrapped format ({"model_cfg": ...}) registers under the given name
    wrapped = tmp_path / "anything.json"
    wrapped.write_text(json.dumps({"model_cfg": dict(TINY_CONFIG, embed_dim=20)}))
    register_model_config("bindset-test-wrapped", wrapped)
    assert open_clip.get_model_config("bindset-test-wrapped")["embed_dim"] == 20


@pytest.mark.parametrize("name", ["", "a/b", ".hidden", "x.json"])
def test_a_name_that_is_not_a_file_stem_is_refused(name):
    with pytest.raises(ValueError, match="plain file stem"):
        register_model_config(name, TINY_CONFIG)
