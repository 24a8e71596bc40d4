"""ImageBind-architecture model: reference layout (keys, shapes, order), strict loading, forward
shapes and norms, and hand checks of the README's description on a tiny config.

The huge model is only ever built on the meta device (no memory, ~2 s).
"""

from __future__ import annotations

import math
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from encoders import create_encoder
from encoders.base import sha256_file
from encoders.imagebind import (
    HUGE,
    MODALITIES,
    TINY,
    ImageBindEncoder,
    ImageBindModel,
    build_model,
    drop_path_rates,
    load_imagebind_state_dict,
)
from encoders.imagebind_config import ImageBindConfig

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
TSV = SHARED / "reference" / "imagebind" / "imagebind_huge_state_dict.tsv"


@pytest.fixture(scope="module")
def huge_listing() -> list[tuple[str, list[int], str]]:
    if not TSV.is_file():
        pytest.skip(f"{TSV} not found: the huge state-dict listing lives in ../shared beside the checkout")
    rows = []
    for line in TSV.read_text().splitlines():
        key, shape, dtype = line.split("\t")
        rows.append((key, [int(s) for s in shape.strip("[]").split(",") if s.strip()], dtype))
    return rows


@pytest.fixture(scope="module")
def huge_meta() -> ImageBindModel:
    return build_model(HUGE, device="meta")


def tiny(seed: int = 0, randomize: bool = True) -> ImageBindModel:
    """A tiny model in eval mode; `randomize` spreads every weight so that any wrong order shows."""
    model = build_model(TINY, seed=seed).eval()
    if randomize:
        g = torch.Generator().manual_seed(1000 + seed)
        with torch.no_grad():
            for module in model.modules():
                for name, p in module.named_parameters(recurse=False):
                    if name == "log_logit_scale":
                        continue
                    noise = torch.randn(p.shape, generator=g) * 0.2
                    layer_norm_weight = isinstance(module, torch.nn.LayerNorm) and name == "weight"
                    p.copy_(1.0 + noise if layer_norm_weight else noise)
    return model


def inputs(batch: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    text = torch.zeros(batch, 77, dtype=torch.long)
    for b in range(batch):
        n = 3 + 2 * b
        text[b, 0] = 49406
        text[b, 1 : 1 + n] = torch.randint(1, 49000, (n,), generator=g)
        text[b, 1 + n] = 49407
    return {
        "vision": torch.randn(batch, 3, 224, 224, generator=g),
        "text": text,
        "audio": torch.randn(batch, 3, 1, 128, 204, generator=g),
        "depth": torch.randn(batch, 1, 224, 224, generator=g),
        "thermal": torch.randn(batch, 1, 224, 224, generator=g),
        "imu": torch.randn(batch, 6, 2000, generator=g),
    }


# --------------------------------------------------------------------------------------------------
# Layout: keys, shapes, order; strict loading


def test_huge_keys_shapes_and_order_match_reference_listing(huge_meta, huge_listing):
    ours = [(k, list(v.shape), str(v.dtype)) for k, v in huge_meta.state_dict().items()]
    assert len(ours) == len(huge_listing) == 1311
    assert {k for k, _, _ in ours} == {k for k, _, _ in huge_listing}
    assert ours == huge_listing  # same keys, same shapes, float32, and the same order
    n_params = sum(p.numel() for p in huge_meta.parameters())
    n_buffers = sum(b.numel() for b in huge_meta.buffers())
    assert (n_params, n_buffers) == (1_200_781_057, 5933)


def test_huge_learnable_vs_fixed_scales(huge_meta):
    params = dict(huge_meta.named_parameters())
    buffers = dict(huge_meta.named_buffers())
    assert "modality_postprocessors.text.1.log_logit_scale" in params
    for m in ("audio", "depth", "thermal", "imu"):
        assert f"modality_postprocessors.{m}.1.log_logit_scale" in buffers
    assert "modality_preprocessors.text.mask" in buffers


def test_huge_meta_state_dict_loads_strict(huge_listing):
    model = build_model(HUGE, device="meta")
    meta_sd = {k: torch.empty(shape, device="meta") for k, shape, _ in huge_listing}
    model.load_state_dict(meta_sd, strict=True, assign=True)  # torch's own strict check
    load_imagebind_state_dict(model, meta_sd, assign=True)  # ours (same check, readable errors)

    missing = dict(meta_sd)
    missing.pop("modality_trunks.audio.blocks.0.attn.bias_k")
    with pytest.raises(ValueError, match="1 missing"):
        load_imagebind_state_dict(build_model(HUGE, device="meta"), missing, assign=True)
    wrong = dict(meta_sd)
    wrong["modality_heads.imu.3.weight"] = torch.empty(1024, 768, device="meta")
    with pytest.raises(ValueError, match="1 shape mismatches"):
        load_imagebind_state_dict(build_model(HUGE, device="meta"), wrong, assign=True)


def test_tiny_has_the_same_structure_as_huge(huge_meta):
    def shape_free(model):  # key order with block indices folded: depths differ, structure does not
        keys = [re.sub(r"blocks\.\d+\.", "blocks.N.", k) for k in model.state_dict()]
        return list(dict.fromkeys(keys))

    assert shape_free(build_model(TINY, device="meta")) == shape_free(huge_meta)


def test_tiny_safetensors_roundtrip_loads_strict_and_reproduces_outputs(tmp_path):
    a, b = tiny(seed=0), tiny(seed=1)
    x = inputs()
    with torch.inference_mode():
        out_a = a(x)
        out_b = b(x)
    assert not torch.allclose(out_a["vision"], out_b["vision"])
    save_file({k: v.contiguous() for k, v in a.state_dict().items()}, tmp_path / "tiny.safetensors")
    b.load_state_dict(load_file(tmp_path / "tiny.safetensors"), strict=True)
    with torch.inference_mode():
        out_b = b(x)
    for m in MODALITIES:
        assert torch.equal(out_a[m], out_b[m]), m


# --------------------------------------------------------------------------------------------------
# Forward shapes and norms


@pytest.mark.parametrize(
    "modality,shape,norm",
    [
        ("vision", (2, 3, 224, 224), 1.0),
        ("text", None, 1 / 0.07),
        ("audio", (2, 1, 1, 128, 204), 20.0),  # one clip: exactly the scale
        ("audio", (2, 1, 128, 204), 20.0),  # 4-D: no clip axis at all
        ("depth", (2, 1, 224, 224), 5.0),
        ("thermal", (2, 1, 224, 224), 10.0),
        ("imu", (2, 6, 2000), 5.0),
    ],
)
def test_forward_shape_and_norm(modality, shape, norm):
    model = tiny()
    x = inputs()["text"] if shape is None else torch.randn(shape)
    with torch.inference_mode():
        out = model.embed(modality, x)
    assert out.shape == (2, TINY.embed_dim) and out.dtype == torch.float32
    assert torch.allclose(out.norm(dim=-1), torch.full((2,), norm), rtol=1e-5)


def test_video_clips_are_averaged_after_normalization():
    model = tiny()
    video = torch.randn(1, 15, 3, 2, 224, 224)
    with torch.inference_mode():
        out = model.embed("vision", video)
        per_clip = model.embed_single("vision", video[0])
    assert out.shape == (1, TINY.embed_dim)
    assert torch.allclose(per_clip.norm(dim=-1), torch.ones(15), atol=1e-5)
    assert torch.allclose(out[0], per_clip.mean(dim=0), atol=1e-6)
    assert out.norm() <= 1 + 1e-5


def test_image_is_repeated_to_two_frames_only_when_t_is_1():
    model = tiny()
    img = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        as_image = model.embed("vision", img)
        as_one_frame = model.embed_single("vision", img[:, :, None])
        as_two_frames = model.embed_single("vision", torch.stack([img, img], dim=2))
        other = model.embed_single("vision", torch.stack([img, torch.zeros_like(img)], dim=2))
    assert torch.allclose(as_image, as_two_frames, atol=1e-6)
    assert torch.allclose(as_image, as_one_frame, atol=1e-6)
    assert not torch.allclose(as_image, other, atol=1e-3)


def test_wrong_input_shapes_are_refused_with_the_expected_layout():
    model = tiny()
    with pytest.raises(ValueError, match=r"\[B,1,128,204\]"):
        model.embed("audio", torch.randn(1, 1, 128, 100))
    with pytest.raises(ValueError, match=r"\[B,6,2000\]"):
        model.embed("imu", torch.randn(1, 6, 1000))
    with pytest.raises(KeyError):
        build_model(TINY, modalities=["audio"]).embed("vision", torch.randn(1, 3, 224, 224))


# --------------------------------------------------------------------------------------------------
# Hand checks of the description


def test_text_head_picks_the_argmax_token():
    model = tiny()
    ids = inputs()["text"]
    with torch.inference_mode():
        out = model.embed("text", ids)
        # by hand: preprocessor + trunk, then the token at argmax(ids), LN -> Linear -> normalize -> scale
        tokens, mask = model.modality_preprocessors["text"](ids)
        tokens = model.modality_trunks["text"](tokens, attn_mask=mask)
        eot = ids.argmax(dim=-1)
        assert eot.tolist() == [(row == 49407).nonzero().item() for row in ids]
        picked = tokens[torch.arange(2), eot]
        manual = model.modality_heads["text"].proj(picked)
        manual = F.normalize(manual, dim=-1) * (1 / 0.07)
        assert torch.allclose(out, manual, atol=1e-5)

        # causal mask + EOT pooling: anything after the EOT cannot change the embedding ...
        tail = ids.clone()
        tail[:, -5:] = 17
        assert torch.allclose(model.embed("text", tail), out, atol=1e-6)
        # ... while changing a token before it does
        head = ids.clone()
        head[:, 1] = 999
        assert not torch.allclose(model.embed("text", head), out, atol=1e-4)


def test_bias_kv_adds_one_learned_key_value_position():
    model = tiny()
    block = model.modality_trunks["audio"].blocks[0]
    attn = block.attn
    w = TINY.audio.width
    heads, d = TINY.audio.heads, w // TINY.audio.heads
    assert attn.bias_k.shape == attn.bias_v.shape == (1, 1, w)
    assert model.modality_trunks["text"].blocks[0].attn.bias_k is None
    x = torch.randn(7, 2, w)  # [L, B, W], sequence-first
    with torch.inference_mode():
        ours = attn(x, x, x, need_weights=False)[0]
        q, k, v = F.linear(x, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
        k = torch.cat([k, attn.bias_k.expand(1, 2, w)])  # 7 + 1 key positions
        v = torch.cat([v, attn.bias_v.expand(1, 2, w)])
        split = lambda t: t.reshape(t.shape[0], 2, heads, d).permute(1, 2, 0, 3)  # noqa: E731
        weights = (split(q) @ split(k).transpose(-1, -2) / math.sqrt(d)).softmax(-1)
        assert weights.shape[-1] == 8
        manual = (weights @ split(v)).permute(2, 0, 1, 3).reshape(7, 2, w)
        manual = F.linear(manual, attn.out_proj.weight, attn.out_proj.bias)
    assert torch.allclose(ours, manual, atol=1e-5)


def test_audio_clip_mean_is_after_normalization_and_scale():
    model = tiny()
    clips = torch.randn(2, 3, 1, 128, 204) * torch.tensor([0.1, 1.0, 3.0]).reshape(1, 3, 1, 1, 1)
    with torch.inference_mode():
        out = model.embed("audio", clips)
        per_clip = model.embed_single("audio", clips.flatten(0, 1)).reshape(2, 3, -1)
    assert torch.allclose(per_clip.norm(dim=-1), torch.full((2, 3), 20.0), rtol=1e-5)
    assert torch.allclose(out, per_clip.mean(dim=1), atol=1e-5)
    norms = out.norm(dim=-1)
    assert (norms < 20.0 - 1e-3).all()  # clips differ, mean not renormalized


def test_logit_scales():
    model = tiny()
    text_scale = model.modality_postprocessors["text"][1]
    assert isinstance(text_scale.log_logit_scale, torch.nn.Parameter)
    assert math.isclose(text_scale.log_logit_scale.item(), math.log(1 / 0.07), rel_tol=1e-6)
    for m, s in (("audio", 20.0), ("depth", 5.0), ("thermal", 10.0), ("imu", 5.0)):
        buf = model.modality_postprocessors[m][1].log_logit_scale
        assert not isinstance(buf, torch.nn.Parameter)
        assert math.isclose(buf.exp().item(), s, rel_tol=1e-6)
    # the learned text scale is clamped at 100
    with torch.no_grad():
        text_scale.log_logit_scale.fill_(math.log(250.0))
        out = model.embed("text", inputs()["text"])
    assert torch.allclose(out.norm(dim=-1), torch.full((2,), 100.0), rtol=1e-5)


def test_drop_path_rises_linearly_and_is_training_only():
    assert drop_path_rates(0.1, 12)[0] == 0.0 and math.isclose(drop_path_rates(0.1, 12)[-1], 0.1)
    rates = [b.drop_path.p for b in build_model(HUGE, device="meta").modality_trunks["imu"].blocks]
    assert rates == pytest.approx([0.0, 0.14, 0.28, 0.42, 0.56, 0.7])
    model = tiny()
    x = torch.randn(4, 6, 2000)
    with torch.no_grad():
        assert torch.equal(model.embed("imu", x), model.embed("imu", x))
        model.train()
        model.modality_heads["imu"][2].p = 0.0  # isolate drop-path from the head dropout
        torch.manual_seed(0)
        a = model.embed("imu", x)
        torch.manual_seed(1)
        b = model.embed("imu", x)
    assert not torch.allclose(a, b)


# --------------------------------------------------------------------------------------------------
# An independent functional forward, written from the README description, on the tiny weights


def _ln(x, sd, p, eps):
    return F.layer_norm(x, (x.shape[-1],), sd[p + "weight"], sd[p + "bias"], eps)


def _attention(x, sd, p, heads, mask):
    b, n, w = x.shape
    d = w // heads
    q, k, v = F.linear(x, sd[p + "in_proj_weight"], sd[p + "in_proj_bias"]).chunk(3, dim=-1)
    if p + "bias_k" in sd:
        k = torch.cat([k, sd[p + "bias_k"].reshape(1, 1, w).expand(b, 1, w)], dim=1)
        v = torch.cat([v, sd[p + "bias_v"].reshape(1, 1, w).expand(b, 1, w)], dim=1)
    q, k, v = (t.reshape(b, t.shape[1], heads, d).transpose(1, 2) for t in (q, k, v))
    scores = q @ k.transpose(-1, -2) / math.sqrt(d)
    if mask is not None:
        scores = scores + mask
    out = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, n, w)
    return F.linear(out, sd[p + "out_proj.weight"], sd[p + "out_proj.bias"])


def _trunk(x, sd, m, cfg, mask=None):
    if cfg.pre_trunk_ln:
        x = _ln(x, sd, f"modality_trunks.{m}.pre_transformer_layer.0.", 1e-6)
    for i in range(cfg.depth):
        p = f"modality_trunks.{m}.blocks.{i}."
        x = x + _attention(_ln(x, sd, p + "norm_1.", 1e-6), sd, p + "attn.", cfg.heads, mask)
        h = _ln(x, sd, p + "norm_2.", 1e-6)
        h = F.linear(
            F.gelu(F.linear(h, sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"])),
            sd[p + "mlp.fc2.weight"],
            sd[p + "mlp.fc2.bias"],
        )
        x = x + h
    return x


def _with_cls_and_pos(tokens, cls, pos):
    return torch.cat([cls.expand(tokens.shape[0], 1, -1), tokens], dim=1) + pos


def reference_embed(sd, cfg: ImageBindConfig, m: str, x: torch.Tensor) -> torch.Tensor:
    if x.ndim >= 5:  # (B, S, ...): every clip through the whole tower, then the mean over S
        b, s = x.shape[:2]
        return _reference_single(sd, cfg, m, x.flatten(0, 1)).reshape(b, s, -1).mean(1)
    return _reference_single(sd, cfg, m, x)


def _reference_single(sd, cfg: ImageBindConfig, m: str, x: torch.Tensor) -> torch.Tensor:
    pre = f"modality_preprocessors.{m}."
    if m == "vision":
        if x.ndim == 4:
            x = x.unsqueeze(2).repeat(1, 1, 2, 1, 1)
        t = F.conv3d(x, sd[pre + "rgbt_stem.proj.1.weight"], stride=(2, 14, 14)).flatten(2).transpose(1, 2)
        t = _with_cls_and_pos(t, sd[pre + "cls_token"], sd[pre + "pos_embedding_helper.pos_embed"])
    elif m in ("audio", "depth", "thermal"):
        stem = pre + ("depth_stem." if m == "depth" else "rgbt_stem.")
        stride = 10 if m == "audio" else 16
        t = F.conv2d(x, sd[stem + "proj.weight"], stride=stride).flatten(2).transpose(1, 2)
        t = _ln(t, sd, stem + "norm_layer.", 1e-5)
        t = _with_cls_and_pos(t, sd[pre + "cls_token"], sd[pre + "pos_embedding_helper.pos_embed"])
    elif m == "imu":
        b = x.shape[0]
        n = torch.arange(250).reshape(250, 1, 1)
        c = torch.arange(6).reshape(1, 6, 1)
        k = torch.arange(8).reshape(1, 1, 8)
        feats = x[:, c, n * 8 + k].reshape(b, 250, 48)  # feature c*8+k of window n = x[c, 8n+k]
        t = F.layer_norm(
            F.linear(feats, sd[pre + "imu_stem.proj.weight"]),
            (cfg.imu.width,),
            sd[pre + "imu_stem.norm_layer.weight"],
            sd[pre + "imu_stem.norm_layer.bias"],
            1e-5,
        )
        t = _with_cls_and_pos(t, sd[pre + "cls_token"], sd[pre + "pos_embed"])
    elif m == "text":
        t = sd[pre + "token_embedding.weight"][x] + sd[pre + "pos_embed"]
        mask = torch.full((77, 77), float("-inf")).triu(1)
        t = _trunk(t, sd, m, cfg.text, mask)
        picked = t[torch.arange(x.shape[0]), x.argmax(-1)]
        out = F.linear(_ln(picked, sd, "modality_heads.text.proj.0.", 1e-6), sd["modality_heads.text.proj.1.weight"])
        scale = min(math.exp(sd["modality_postprocessors.text.1.log_logit_scale"].item()), 100.0)
        return F.normalize(out, dim=-1) * scale
    t = _trunk(t, sd, m, getattr(cfg, m))
    h = f"modality_heads.{m}."
    cls = _ln(t, sd, h + "0.", 1e-6)[:, 0]
    out = F.linear(cls, sd[h + ("3" if m == "imu" else "2") + ".weight"])
    scale = {"vision": 1.0, "audio": 20.0, "depth": 5.0, "thermal": 10.0, "imu": 5.0}[m]
    return F.normalize(out, dim=-1) * scale


@pytest.mark.parametrize("modality", MODALITIES)
def test_forward_matches_a_functional_reading_of_the_description(modality):
    model = tiny()
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    x = inputs()[modality]
    with torch.inference_mode():
        ours = model.embed(modality, x)
        ref = reference_embed(sd, TINY, modality, x)
    assert torch.allclose(ours, ref, rtol=1e-5, atol=2e-5), (ours - ref).abs().max()


def test_video_matches_the_functional_reference():
    model = tiny()
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    video = torch.randn(1, 3, 3, 2, 224, 224)
    with torch.inference_mode():
        assert torch.allclose(model.embed("vision", video), reference_embed(sd, TINY, "vision", video), atol=2e-5)


# --------------------------------------------------------------------------------------------------
# The Encoder wrapper


class Payload:  # an arbitrary object: weights_only loading must refuse to unpickle it
    pass


def _tiny_checkpoint(path: Path, seed: int = 0) -> ImageBindModel:
    model = tiny(seed=seed)
    torch.save(model.state_dict(), path)
    return model


def test_encoder_loads_local_checkpoint_strict_and_embeds_one_modality(tmp_path):
    ckpt = tmp_path / "imagebind_tiny.pth"
    model = _tiny_checkpoint(ckpt)
    enc = create_encoder("imagebind:tiny", checkpoint=ckpt, modality="audio", device="cpu")
    assert isinstance(enc, ImageBindEncoder)
    assert enc.modality == "audio" and enc.dim == TINY.embed_dim and enc.precision == "fp32"
    sha = sha256_file(ckpt)[:12]
    assert enc.encoder_id == f"imagebind-tiny-audio-{sha}-p1"
    assert enc.model_id == f"imagebind-tiny-{sha}-p1"
    assert enc.scale == pytest.approx(20.0)
    # only the audio tower is kept, frozen
    assert list(enc.model.modality_trunks.keys()) == ["audio"]
    assert not any(p.requires_grad for p in enc.model.parameters())
    assert not enc.model.training

    batch = np.random.default_rng(0).standard_normal((5, 3, 1, 128, 204)).astype(np.float16)  # as stored
    emb = enc.encode(batch)
    assert emb.shape == (5, TINY.embed_dim) and emb.dtype == np.float32
    with torch.inference_mode():
        expected = model.embed("audio", torch.from_numpy(batch.astype(np.float32))).numpy()
    assert np.abs(emb - expected).max() <= 1e-5

    enc.batch_size = 2  # chunking does not change the result
    assert np.abs(enc.encode(batch) - emb).max() <= 1e-5


@pytest.mark.parametrize("modality,tower", [("image", "vision"), ("video", "vision"), ("text", "text"), ("imu", "imu")])
def test_encoder_modalities_and_aliases(tmp_path, modality, tower):
    ckpt = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in tiny().state_dict().items()}, ckpt)
    enc = create_encoder("imagebind:tiny", checkpoint=str(ckpt), modality=modality)
    assert enc.tower == tower and enc.modality == modality
    x = {
        "image": np.zeros((2, 3, 224, 224), np.float32),
        "video": np.zeros((1, 2, 3, 2, 224, 224), np.float32),
        "text": inputs()["text"].numpy().astype(np.int32),  # shards store int32 tokens
        "imu": np.zeros((2, 6, 2000), np.float32),
    }[modality]
    out = enc.encode(x)
    assert out.shape == (x.shape[0], TINY.embed_dim) and out.dtype == np.float32


def test_encoder_refuses_mismatched_or_pickled_checkpoints(tmp_path):
    sd = tiny().state_dict()
    partial = dict(sd)
    partial.pop("modality_heads.vision.2.weight")
    torch.save(partial, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match="1 missing"):
        create_encoder("imagebind:tiny", checkpoint=tmp_path / "partial.pth", modality="audio")
    with pytest.raises(ValueError, match="does not match ImageBind 'huge'"):
        torch.save(sd, tmp_path / "tiny.pth")
        create_encoder("imagebind:huge", checkpoint=tmp_path / "tiny.pth", modality="audio", device="meta")

    torch.save({"state_dict": sd, "extra": Payload()}, tmp_path / "pickled.pth")
    with pytest.raises(pickle.UnpicklingError):
        create_encoder("imagebind:tiny", checkpoint=tmp_path / "pickled.pth", modality="audio")


def test_huge_encoder_loads_a_reference_layout_checkpoint(tmp_path, huge_listing, monkeypatch):
    """The huge path end to end on the meta device: strict load, one tower kept, sha in the id."""
    ckpt = tmp_path / "imagebind_huge.pth"
    ckpt.write_bytes(b"stand-in: the reader is replaced below")
    meta_sd = {k: torch.empty(shape, device="meta") for k, shape, _ in huge_listing}
    import encoders.imagebind as ib

    monkeypatch.setattr(ib, "load_state_dict", lambda path: dict(meta_sd))
    enc = create_encoder("imagebind:huge", checkpoint=ckpt, modality="audio", device="meta")
    assert enc.dim == 1024
    assert enc.encoder_id == f"imagebind-huge-audio-{sha256_file(ckpt)[:12]}-p1"
    assert set(k.split(".")[1] for k in enc.model.state_dict()) == {"audio"}
    assert sum(p.numel() for p in enc.model.parameters()) == sum(
        math.prod(s) for k, s, _ in huge_listing if ".audio." in k and "log_logit_scale" not in k
    )


@pytest.fixture(scope="module")
def reference_inputs() -> Path:
    root = SHARED / "reference" / "imagebind"
    if not (root / "audio_dog.npy").is_file():
        pytest.skip(f"{root} not found: ImageBind's reference inputs live in ../shared beside the checkout")
    return root


def test_reference_preprocessed_inputs_have_the_layouts_the_model_takes(reference_inputs):
    """ImageBind's own data.py outputs (audio 3 clips, video 15 clips, tokens) go in unchanged."""
    model = tiny()
    expected = {
        "audio_dog.npy": ("audio", 20.0),
        "video_mov_bbb.npy": ("vision", 1.0),
        "vision_dog.npy": ("vision", 1.0),
        "text_tokens.npy": ("text", 1 / 0.07),
    }
    for name, (modality, scale) in expected.items():
        x = torch.from_numpy(np.load(reference_inputs / name))
        with torch.inference_mode():
            out = model.embed(modality, x)
        assert out.shape == (x.shape[0], TINY.embed_dim), name
        norms = out.norm(dim=-1)
        assert (norms <= scale * (1 + 1e-5)).all(), name
        if x.ndim < 5:  # no clip mean: exactly the scale
            assert torch.allclose(norms, torch.full_like(norms, scale), rtol=1e-5), name


def test_config_from_toml(tmp_path):
    (tmp_path / "small.toml").write_text(
        'base = "tiny"\nname = "small"\nembed_dim = 16\n[audio]\ndepth = 1\nheads = 4\n'
    )
    cfg = ImageBindConfig.from_toml(tmp_path / "small.toml")
    assert (cfg.name, cfg.embed_dim, cfg.audio.depth, cfg.audio.heads) == ("small", 16, 1, 4)
    assert cfg.audio.bias_kv and cfg.audio.drop_path == 0.1 and cfg.vision == TINY.vision  # the rest from the base
    model = build_model(cfg, modalities=["audio"], seed=0).eval()
    with torch.inference_mode():
        assert model.embed("audio", torch.randn(2, 3, 1, 128, 204)).shape == (2, 16)
    with pytest.raises(ValueError, match="unknown ImageBind config keys"):
        ImageBindConfig.from_dict({"widht": 3})
    with pytest.raises(ValueError, match="not divisible"):
        ImageBindConfig.from_dict({"imu": {"width": 30, "heads": 4}})
