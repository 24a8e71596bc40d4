"""The by-name factory, checkpoint rules and device/precision choice."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

import encoders
from encoders import available_encoders, create_encoder
from encoders.base import Encoder, load_state_dict, make_encoder_id, resolve_checkpoint, safe_name
from encoders.device import autocast, normalize_precision, select_device, select_precision


def test_available_encoders_lists_both_families():
    names = available_encoders()
    for expected in (
        "imagebind:huge",
        "imagebind:tiny",
        "openclip:ViT-H-14",
        "openclip:ViT-B-32",
        "openclip:bindset-tiny-clip",
    ):
        assert expected in names


@pytest.mark.parametrize("name", ["clip:ViT-B-32", "ViT-B-32", "imagebind", "", "resnet:50"])
def test_unknown_family_lists_valid_names(name):
    with pytest.raises(ValueError) as err:
        create_encoder(name)
    msg = str(err.value)
    assert "imagebind:<size>" in msg and "openclip:<model>" in msg and "'huge'" in msg and "ViT-B-32" in msg


def test_unknown_model_in_a_family():
    with pytest.raises(ValueError, match="imagebind:huge"):
        create_encoder("imagebind:gigantic")
    with pytest.raises(ValueError, match="unknown openclip model 'ViT-Q-99'"):
        create_encoder("openclip:ViT-Q-99")


def test_unknown_imagebind_modality():
    with pytest.raises(ValueError, match="unknown ImageBind modality 'smell'"):
        create_encoder("imagebind:tiny", modality="smell")


def test_hub_tag_for_imagebind_is_refused():
    with pytest.raises(ValueError, match="cannot download"):
        create_encoder("imagebind:huge", checkpoint="imagebind_huge", modality="audio")


def test_encoders_is_a_small_import():
    assert issubclass(type(create_encoder("imagebind:tiny", modality="depth")), Encoder)
    assert "create_encoder" in encoders.__all__


def test_encode_contract_empty_batch_and_dtype():
    enc = create_encoder("imagebind:tiny", modality="depth", batch_size=3)
    assert enc.batch_size == 3
    out = enc.encode(np.zeros((0, 1, 224, 224), np.float32))
    assert out.shape == (0, enc.dim) and out.dtype == np.float32
    out = enc.encode(torch.zeros(4, 1, 224, 224, dtype=torch.float16))
    assert out.shape == (4, enc.dim) and out.dtype == np.float32
    with pytest.raises(TypeError):
        enc.encode([[0.0]])


def test_encoder_ids_are_safe_directory_names():
    assert safe_name("hf-hub:org/Model Name") == "hf-hub-org-Model-Name"
    assert (
        make_encoder_id("openclip", "ViT-H-14", "image", "abc123def456", "p1")
        == "openclip-ViT-H-14-image-abc123def456-p1"
    )
    assert make_encoder_id("imagebind", "huge", None, "random", "p1") == "imagebind-huge-random-p1"


def test_resolve_checkpoint(tmp_path):
    assert resolve_checkpoint(None) is None
    f = tmp_path / "m.bin"
    f.write_bytes(b"")
    assert resolve_checkpoint(str(f)) == f
    assert resolve_checkpoint(f) == f
    for tag in ("openai", "laion2b_s32b_b79k", "https://example.org/m.pt"):
        with pytest.raises(ValueError, match="local .pt/.pth/.bin/.safetensors"):
            resolve_checkpoint(tag)
    with pytest.raises(FileNotFoundError):
        resolve_checkpoint(tmp_path / "missing.pt")


class Evil:
    def __reduce__(self):
        return (print, ("unpickled!",))


def test_load_state_dict_never_unpickles_objects(tmp_path):
    torch.save({"w": torch.ones(2), "evil": Evil()}, tmp_path / "bad.pt")
    with pytest.raises(pickle.UnpicklingError):
        load_state_dict(tmp_path / "bad.pt")
    torch.save({"model": {"module.w": torch.ones(2)}}, tmp_path / "wrapped.pt")
    sd = load_state_dict(tmp_path / "wrapped.pt")
    assert list(sd) == ["w"] and torch.equal(sd["w"], torch.ones(2))
    # legacy (non-zip) torch format: cannot be memory-mapped, still loads weights-only
    torch.save({"w": torch.ones(3)}, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    assert load_state_dict(tmp_path / "legacy.pt")["w"].shape == (3,)


def test_device_and_precision_defaults_and_overrides(monkeypatch):
    monkeypatch.delenv("BINDSET_DEVICE", raising=False)
    monkeypatch.delenv("BINDSET_PRECISION", raising=False)
    dev = select_device()
    assert dev.type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert select_precision(torch.device("cpu")) == "fp32"
    if torch.cuda.is_available():
        assert select_precision(torch.device("cuda")) in ("bf16", "fp16")
    else:
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            select_device("cuda")
    assert select_device("cpu") == torch.device("cpu")
    assert select_precision(torch.device("cpu"), "bfloat16") == "bf16"
    assert normalize_precision(torch.float16) == "fp16"
    with pytest.raises(ValueError):
        normalize_precision("int8")
    monkeypatch.setenv("BINDSET_PRECISION", "bf16")
    assert select_precision(torch.device("cpu")) == "bf16"
    assert select_precision(torch.device("cpu"), "fp32") == "fp32"  # explicit wins
    monkeypatch.setenv("BINDSET_DEVICE", "cpu")
    assert select_device() == torch.device("cpu")


def test_cpu_bf16_autocast_is_available_on_request():
    enc = create_encoder("imagebind:tiny", modality="thermal", device="cpu", precision="bf16")
    assert enc.precision == "bf16"
    ref = create_encoder("imagebind:tiny", modality="thermal", device="cpu")
    x = np.random.default_rng(0).standard_normal((2, 1, 224, 224)).astype(np.float32)
    low, full = enc.encode(x), ref.encode(x)
    assert low.dtype == np.float32
    assert np.allclose(np.linalg.norm(low, axis=1), 10.0, rtol=2e-2)
    assert np.abs(low - full).max() < 0.5  # same weights (same seed), lower precision
    with autocast(torch.device("cpu"), "fp32"):
        assert not torch.is_autocast_enabled("cpu")


def test_a_registered_encoder_family_is_created_by_name(tmp_path, monkeypatch):
    """A user's family, in a module of their own, becomes a valid encoder name."""
    import sys

    import numpy as np
    import torch

    from encoders import Encoder, create_encoder, register_encoder_family

    (tmp_path / "my_encoders.py").write_text(
        "import torch\n"
        "from encoders import Encoder\n"
        "class Mean(Encoder):\n"
        "    dim = 3\n"
        "    batch_size = 4\n"
        "    encoder_id = model_id = 'my-mean'\n"
        "    modality, device, precision = 'image', torch.device('cpu'), 'fp32'\n"
        "    def _forward(self, batch):\n"
        "        return batch.flatten(2).mean(-1)\n"
        "def available_models():\n"
        "    return ['mean']\n"
        "def create(model, checkpoint=None, modality=None, device=None, precision=None, **kw):\n"
        "    return Mean()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    register_encoder_family("mine", "my_encoders:create")
    try:
        encoder = create_encoder("mine:mean")
        assert isinstance(encoder, Encoder)
        batch = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
        np.testing.assert_allclose(encoder.encode(batch), torch.tensor(batch).mean(-1).numpy(), rtol=1e-6)
        with pytest.raises(ValueError, match="unknown mine model 'other'"):
            create_encoder("mine:other")
        with pytest.raises(ValueError, match="already registered"):
            register_encoder_family("mine", "elsewhere:create")
    finally:
        from encoders import base

        base._FAMILIES.pop("mine", None)
        sys.modules.pop("my_encoders", None)
