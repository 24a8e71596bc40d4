"""Trained bindings (`bindset train`) as an encoder family: `binding:<size>`.

    enc = create_encoder("binding:tiny", checkpoint="runs/audio/checkpoints/epoch-0010.safetensors",
                         modality="audio")
    enc.encode(batch)      # L2-normalized [N, target_dim] in the target (image) space
    enc.encoder_id         # bindset-imagebind-tiny-audio-<sha256[:12] of the checkpoint>-p1

A binding is one ImageBind-architecture modality tower (`encoders/imagebind.py`) plus a bias-free
linear projection when the tower's `embed_dim` differs from the target space's (`BindingModel`).
`<size>` names the tower's ImageBind config ("tiny" or "huge", `encoders.imagebind_config.CONFIGS`); the checkpoint must
hold a binding of that size, and the modality asked for must be the one it was trained for.

Checkpoint: a `.safetensors` file whose metadata["bindset"] is the JSON that rebuilds the model
(`BindingModel.describe()` plus the run's target encoder id, temperature, epoch); read with
safetensors only, nothing is unpickled. A run directory is resolved to its last checkpoint by
`pipelines.binding.models.load_binding_encoder`, not here (run directories are the trainer's format).
The encoder id carries the checkpoint's fingerprint, so another checkpoint is another store.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from encoders.base import (
    DEFAULT_PREPROCESS_VERSION,
    Encoder,
    _resolve_runtime,
    make_encoder_id,
    resolve_checkpoint,
    sha256_file,
)
from encoders.imagebind import ImageBindModel, build_model
from encoders.imagebind_config import ImageBindConfig, get_config

#: the safetensors metadata key holding the JSON that rebuilds a binding
METADATA_KEY = "bindset"
FORMAT = "bindset-binding/1"
#: the family part of a binding's encoder id (ids of existing stores keep it)
ID_FAMILY = "bindset"


def mix_seed(*parts: int) -> int:
    """One 63-bit seed from several integers (a run's seed and a purpose tag, epoch, step...)."""
    digest = hashlib.sha256(",".join(str(int(p)) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def config_from_dict(data: dict[str, Any]) -> ImageBindConfig:
    """The ImageBind config a checkpoint's metadata records."""
    return ImageBindConfig.from_dict(dict(data), base=get_config("tiny"))


def binding_encoder_id(
    size: str, modality: str | None, fingerprint: str, preprocess_version: str = DEFAULT_PREPROCESS_VERSION
) -> str:
    """`bindset-imagebind-<size>-<modality>-<fingerprint>-<version>` (no modality: the model id)."""
    return make_encoder_id(ID_FAMILY, f"imagebind-{size}", modality, fingerprint, preprocess_version)


class BindingModel(nn.Module):
    """One ImageBind tower (+ a projection to the target dimension when it differs): model-ready
    batch -> L2-normalized `[B, target_dim]`."""

    def __init__(self, config: ImageBindConfig, modality: str, target_dim: int, seed: int = 0) -> None:
        super().__init__()
        self.modality = modality
        self.config = config
        self.target_dim = int(target_dim)
        self.imagebind: ImageBindModel = build_model(config, modalities=[modality], seed=seed)
        self.proj: nn.Linear | None = None
        if config.embed_dim != self.target_dim:
            self.proj = nn.Linear(config.embed_dim, self.target_dim, bias=False)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(mix_seed(seed, 0x9405))
                nn.init.normal_(self.proj.weight, std=config.embed_dim**-0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.imagebind.embed(self.modality, x)
        if self.proj is not None:
            z = self.proj(z)
        return F.normalize(z.float(), dim=-1)

    def describe(self) -> dict[str, Any]:
        """JSON that rebuilds this module (stored in every checkpoint's metadata)."""
        return {
            "format": FORMAT,
            "modality": self.modality,
            "target_dim": self.target_dim,
            "imagebind_config": dataclasses.asdict(self.config),
        }


def read_binding_info(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON a binding checkpoint carries in its metadata (reads the header only)."""
    from safetensors import safe_open

    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(
            f"{path} is a directory: pass a binding checkpoint file (<run>/checkpoints/epoch-NNNN.safetensors)"
        )
    if path.suffix.lower() != ".safetensors":
        raise ValueError(f"{path}: a binding checkpoint is a .safetensors file (its metadata rebuilds the model)")
    with safe_open(str(path), framework="pt") as fh:
        meta = (fh.metadata() or {}).get(METADATA_KEY)
    if meta is None:
        raise ValueError(f"{path} is not a bindset binding checkpoint (no '{METADATA_KEY}' metadata)")
    return json.loads(meta)


class BindingEncoder(Encoder):
    """A trained binding (tower + projection) as a frozen `Encoder`: model-ready batch of its
    modality -> L2-normalized vectors in the target (image) space.

    `encoder_id` = `bindset-imagebind-<size>-<modality>-<sha256[:12] of the weights>-p1`.
    """

    family = "binding"

    def __init__(
        self,
        checkpoint: str | os.PathLike,
        device: str | torch.device | None = None,
        precision: str | torch.dtype | None = None,
        batch_size: int | None = None,
        preprocess_version: str = DEFAULT_PREPROCESS_VERSION,
    ) -> None:
        from safetensors.torch import load_file

        path = Path(checkpoint)
        info = read_binding_info(path)
        self.info = info
        self.device, self.precision = _resolve_runtime(device, precision)
        self.config = config_from_dict(info["imagebind_config"])
        model = BindingModel(self.config, info["modality"], int(info["target_dim"]))
        model.load_state_dict(load_file(str(path)), strict=True)
        self.model = model.to(self.device).eval().requires_grad_(False)
        self.checkpoint = path
        self.modality = info["modality"]
        self.dim = int(info["target_dim"])
        self.batch_size = int(batch_size or 32)
        self.target_encoder_id = info.get("target_encoder_id")
        fp = sha256_file(path)[:12]
        self.fingerprint = fp
        self.preprocess_version = preprocess_version
        self.encoder_id = binding_encoder_id(self.config.name, self.modality, fp, preprocess_version)
        self.model_id = binding_encoder_id(self.config.name, None, fp, preprocess_version)

    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        return self.model(batch)

    def metadata(self) -> dict[str, Any]:
        meta = super().metadata()
        meta.update(
            family=self.family,
            size=self.config.name,
            target_encoder_id=self.target_encoder_id,
            checkpoint_sha256_12=self.fingerprint,
            epoch=self.info.get("epoch"),
            preprocess_version=self.preprocess_version,
        )
        return meta


# --------------------------------------------------------------------------------------------------
# Factory (encoders.base.create_encoder, family "binding")


def available_models() -> list[str]:
    """The ImageBind sizes a binding tower can have (those `encoders.imagebind_config` knows)."""
    from encoders.imagebind import available_models as imagebind_sizes

    return imagebind_sizes()


def create(
    model: str,
    checkpoint: str | os.PathLike | None = None,
    modality: str | None = None,
    device: str | torch.device | None = None,
    precision: str | torch.dtype | None = None,
    **kw: Any,
) -> BindingEncoder:
    """`binding:<model>` with a trained checkpoint (there is no random init: an untrained binding
    maps nowhere). `modality`: None or the one the checkpoint was trained for."""
    if checkpoint is None:
        raise ValueError(
            f"binding:{model} needs the checkpoint of a trained binding (bindset train writes "
            f"<run>/checkpoints/epoch-NNNN.safetensors); a binding has no random init"
        )
    path = resolve_checkpoint(checkpoint, what=f"binding:{model}")
    info = read_binding_info(path)
    size = config_from_dict(info["imagebind_config"]).name
    if size != model:
        raise ValueError(f"{path} holds a binding of ImageBind size {size!r}, not {model!r}: name it binding:{size}")
    if modality is not None and modality != info["modality"]:
        raise ValueError(f"{path} binds {info['modality']!r}, not {modality!r}: embed modality {info['modality']!r}")
    return BindingEncoder(path, device=device, precision=precision, **kw)


__all__ = [
    "BindingEncoder",
    "BindingModel",
    "METADATA_KEY",
    "available_models",
    "binding_encoder_id",
    "config_from_dict",
    "create",
    "mix_seed",
    "read_binding_info",
]
