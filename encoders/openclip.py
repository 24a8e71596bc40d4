"""Frozen OpenCLIP image and text encoders (through open_clip_torch).

Any architecture in `open_clip.list_models()` works, plus configs registered at run time with
`register_model_config` (tests use `TINY_CONFIG`: width 64, 2 layers). Weights come from a local
.pt/.pth/.bin/.safetensors file (open_clip's own loader, `weights_only=True`) or, with no checkpoint,
from a seeded random init. Hub tags ("openai", "laion2b_s32b_b79k") are refused before anything is
built: nothing can be downloaded here.

Outputs are L2-normalized: an image row equals `model.encode_image(x, normalize=True)`, a text row
`model.encode_text(ids, normalize=True)`.

Inputs (model-ready, CLIP-normalized as the shard reader returns them):

    image   [N,3,H,W]                     -> [N,D]
    clips   [N,S,3,H,W]                   -> mean over S of the S image embeddings
    video   [N,S,3,T,H,W]                 -> per clip: mean of the T normalized frame embeddings,
                                             renormalized (so each clip embedding is unit length,
                                             as ImageBind's per-clip postprocessor makes it); then
                                             the mean over the S clips, *not* renormalized
                                             (ImageBind's reduction: norm <= 1, < 1 when clips differ)
    text    [N,context_length] int token ids, or a list of strings (tokenized with open_clip's tokenizer)
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import open_clip
import torch
import torch.nn.functional as F

from encoders.base import (
    DEFAULT_PREPROCESS_VERSION,
    Encoder,
    _resolve_runtime,
    checkpoint_fingerprint,
    make_encoder_id,
    resolve_checkpoint,
)

__all__ = [
    "OpenCLIPImageEncoder",
    "OpenCLIPTextEncoder",
    "TINY_CONFIG",
    "TINY_NAME",
    "register_model_config",
    "register_tiny_config",
    "load_openclip_model",
    "available_models",
    "create",
]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

#: a ViT small enough to build in ~20 ms: for tests and smoke runs (random init or self-trained)
TINY_NAME = "bindset-tiny-clip"
TINY_CONFIG: dict[str, Any] = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 224, "layers": 2, "width": 64, "head_width": 32, "patch_size": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


_CONFIG_DIR: Path | None = None
_REGISTERED: dict[str, None] = {}  # names registered here, in order (listed after open_clip's own)


def _config_dir() -> Path:
    """This process's folder of configs written for open_clip (removed when the process exits)."""
    global _CONFIG_DIR
    if _CONFIG_DIR is None:
        _CONFIG_DIR = Path(tempfile.mkdtemp(prefix="bindset-openclip-configs-"))
        atexit.register(shutil.rmtree, _CONFIG_DIR, True)
    return _CONFIG_DIR


def register_model_config(name: str, config: dict[str, Any] | str | os.PathLike) -> None:
    """Add an architecture to open_clip's registry (a config dict, or a JSON file in open_clip's format).

    Through open_clip's public `add_model_config(path)`, which registers a JSON file under its stem:
    the config is written as `<name>.json` into a private temp folder and that file is added (its
    later rescans re-read it, so a registration made here outlives them and wins over a built-in
    config of the same name, as open_clip's own added paths do).
    """
    if not isinstance(config, dict):
        with open(config, encoding="utf-8") as fh:
            config = json.load(fh)
        config = config.get("model_cfg", config)
    missing = {"embed_dim", "vision_cfg", "text_cfg"} - set(config)
    if missing:
        raise ValueError(f"open_clip config {name!r} lacks {sorted(missing)}")
    if not name or name.startswith(".") or Path(name).name != name or name.endswith(".json"):
        raise ValueError(f"open_clip model name {name!r} must be a plain file stem (no '/', no leading '.')")
    try:
        text = json.dumps(config)
    except TypeError as exc:
        raise ValueError(
            f"open_clip config {name!r} is not JSON (open_clip reads configs as JSON files): {exc}"
        ) from None
    path = _config_dir() / f"{name}.json"
    tmp = path.with_name(f".{name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)  # a concurrent rescan sees the old file or the new one, never half of one
    open_clip.add_model_config(path)
    _REGISTERED.setdefault(name)


def register_tiny_config(name: str = TINY_NAME) -> str:
    register_model_config(name, TINY_CONFIG)
    return name


def available_models() -> list[str]:
    """open_clip's architectures, then the ones registered here (so listings lead with open_clip's own)."""
    models = list(open_clip.list_models())
    return [m for m in models if m not in _REGISTERED] + [m for m in _REGISTERED if m in models]


@contextlib.contextmanager
def _without_log_records(prefix: str) -> Iterator[None]:
    """Drop root-logger records starting with `prefix` (open_clip logs through the root logger)."""

    def keep(record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(prefix)

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


def load_openclip_model(
    model_name: str,
    checkpoint: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> tuple[torch.nn.Module, Path | None]:
    """Build `model_name` (fp32, eval, frozen) from a local checkpoint, or seeded random init."""
    if model_name not in open_clip.list_models():
        raise ValueError(
            f"unknown open_clip model {model_name!r}; see open_clip.list_models() "
            f"(or register one with encoders.openclip.register_model_config)"
        )
    path = resolve_checkpoint(checkpoint, what=f"openclip:{model_name}")
    common = dict(precision="fp32", device=device, pretrained_image=False, pretrained_text=False, weights_only=True)
    if path is None:
        # open_clip draws its init from the global RNG: draw it from `seed` without disturbing the caller.
        # Random init was asked for here (the encoder id says "random"): open_clip's warning about it
        # would only alarm.
        with torch.random.fork_rng(devices=[]), _without_log_records("No pretrained weights loaded"):
            torch.manual_seed(seed)
            model = open_clip.create_model(model_name, pretrained=None, **common)
    else:
        model = open_clip.create_model(model_name, pretrained=str(path), **common)
    model.eval().requires_grad_(False)
    return model, path


class _OpenCLIPEncoder(Encoder):
    family = "openclip"

    def __init__(
        self,
        model_name: str,
        modality: str,
        checkpoint: str | os.PathLike | None = None,
        device: str | torch.device | None = None,
        precision: str | torch.dtype | None = None,
        batch_size: int | None = None,
        preprocess_version: str = DEFAULT_PREPROCESS_VERSION,
        seed: int = 0,
    ) -> None:
        self.device, self.precision = _resolve_runtime(device, precision)
        self.model, path = load_openclip_model(model_name, checkpoint, device=self.device, seed=seed)
        self.model_name = model_name
        self.checkpoint = path
        self.modality = modality
        self.dim = int(self._embed_dim())
        self.batch_size = int(batch_size or self.default_batch_size)
        self.fingerprint = checkpoint_fingerprint(path)
        self.preprocess_version = preprocess_version
        self.encoder_id = make_encoder_id("openclip", model_name, modality, self.fingerprint, preprocess_version)
        self.model_id = make_encoder_id("openclip", model_name, None, self.fingerprint, preprocess_version)

    default_batch_size = 64

    def _embed_dim(self) -> int:
        proj = getattr(self.model, "text_projection", None)
        if isinstance(proj, torch.Tensor):
            return proj.shape[1]
        cfg = open_clip.get_model_config(self.model_name)
        return cfg["embed_dim"]

    def metadata(self) -> dict[str, Any]:
        meta = super().metadata()
        meta.update(
            family="openclip",
            model=self.model_name,
            checkpoint_sha256_12=self.fingerprint,
            preprocess_version=self.preprocess_version,
        )
        return meta


class OpenCLIPImageEncoder(_OpenCLIPEncoder):
    """Image tower; also embeds clips and video (see the module docstring for the reduction)."""

    default_batch_size = 64

    def __init__(self, model_name: str, modality: str = "image", **kw: Any) -> None:
        super().__init__(model_name, modality, **kw)
        size = getattr(self.model.visual, "image_size", None)
        self.image_size = tuple(size) if isinstance(size, (tuple, list)) else (size, size) if size else None
        cfg = getattr(self.model.visual, "preprocess_cfg", {}) or {}
        mean, std = cfg.get("mean"), cfg.get("std")
        if mean is not None and (
            not np.allclose(mean, CLIP_MEAN, atol=1e-6) or not np.allclose(std, CLIP_STD, atol=1e-6)
        ):
            warnings.warn(
                f"open_clip {model_name} expects mean {mean} / std {std}, but bindset shards are normalized "
                f"with the OpenAI CLIP statistics {CLIP_MEAN} / {CLIP_STD}: re-normalize inputs for this model",
                stacklevel=2,
            )
        self.preprocess_cfg = dict(cfg)

    def _images(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != 3 or (self.image_size and tuple(x.shape[-2:]) != self.image_size):
            raise ValueError(
                f"{self.model_name} expects images [*,3,{self.image_size[0]},{self.image_size[1]}], got {tuple(x.shape)}"
            )
        return self.model.encode_image(x, normalize=True)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 4:  # [N,3,H,W]
            return self._images(x)
        if x.ndim == 5:  # [N,S,3,H,W]: S image clips
            n, s = x.shape[:2]
            return self._images(x.flatten(0, 1)).reshape(n, s, -1).mean(dim=1)
        if x.ndim == 6:  # [N,S,3,T,H,W]: video clips of T frames
            n, s, c, t, h, w = x.shape
            frames = x.permute(0, 1, 3, 2, 4, 5).reshape(n * s * t, c, h, w)
            per_frame = self._images(frames).float().reshape(n, s, t, -1)
            per_clip = F.normalize(per_frame.mean(dim=2), dim=-1)
            return per_clip.mean(dim=1)
        raise ValueError(f"image input must be [N,3,H,W], [N,S,3,H,W] or [N,S,3,T,H,W], got {tuple(x.shape)}")


class OpenCLIPTextEncoder(_OpenCLIPEncoder):
    """Text tower: token ids [N, context_length] (or strings, tokenized here)."""

    default_batch_size = 256

    def __init__(self, model_name: str, modality: str = "text", **kw: Any) -> None:
        super().__init__(model_name, modality, **kw)
        self.context_length = int(getattr(self.model, "context_length", 77))
        self._tokenizer = None

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = open_clip.get_tokenizer(self.model_name, context_length=self.context_length)
        return self._tokenizer

    def _prepare(self, batch: Any) -> torch.Tensor:
        if isinstance(batch, str):
            raise TypeError("encode expects a batch: pass a list of strings, not one string")
        if isinstance(batch, Sequence) and batch and all(isinstance(t, str) for t in batch):
            batch = self.tokenizer(list(batch))
        tensor = super()._prepare(batch)
        if tensor.is_floating_point():
            raise TypeError("text input must be integer token ids or a list of strings")
        if tensor.ndim != 2 or tensor.shape[1] != self.context_length:
            raise ValueError(f"text input must be [N,{self.context_length}] token ids, got {tuple(tensor.shape)}")
        return tensor.long()

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.encode_text(x, normalize=True)


_IMAGE_MODALITIES = ("image", "video", "vision", "rgb")


def create(
    model: str,
    checkpoint: str | os.PathLike | None = None,
    modality: str | None = None,
    device: str | torch.device | None = None,
    precision: str | torch.dtype | None = None,
    **kw: Any,
) -> _OpenCLIPEncoder:
    m = (modality or "image").strip().lower()
    if m in _IMAGE_MODALITIES:
        return OpenCLIPImageEncoder(model, modality=m, checkpoint=checkpoint, device=device, precision=precision, **kw)
    if m == "text":
        return OpenCLIPTextEncoder(model, modality=m, checkpoint=checkpoint, device=device, precision=precision, **kw)
    raise ValueError(f"OpenCLIP encodes modality 'image' (also 'video') or 'text', not {modality!r}")


# the tiny config is always available by name, e.g. create_encoder("openclip:bindset-tiny-clip")
register_tiny_config()
