"""The `Encoder` interface, local checkpoint handling and the by-name factory.

An encoder turns one modality's model-ready batch (the arrays the shard reader returns) into float32
embeddings `[N, D]`. It is frozen: eval mode, no gradients, `torch.inference_mode()` around every call.

`encoder_id` is the fingerprint an embedding store is keyed by (`embeddings/<encoder-id>/`):

    <family>-<model>-<modality>-<sha256[:12] of the checkpoint file, or "random">-<preprocessing version>
    e.g. openclip-ViT-H-14-image-3f2a9c0d1b7e-p1, imagebind-huge-audio-5b8e2f0a9c11-p1

It only holds `[A-Za-z0-9._-]`, so it is safe as a directory name. `model_id` is the same without the
modality, for stores that keep several modalities of one model side by side.

Checkpoints are local files only (.pt/.pth/.bin/.ckpt via `torch.load(weights_only=True)`, or
.safetensors); nothing is ever downloaded and nothing is unpickled.
"""

from __future__ import annotations

import abc
import hashlib
import importlib
import os
import re
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch

from encoders.device import autocast, select_device, select_precision

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors")
RANDOM_WEIGHTS = "random"
DEFAULT_PREPROCESS_VERSION = "p1"


class Encoder(abc.ABC):
    """One frozen model tower embedding one modality.

    Subclasses set the attributes in `__init__` and implement `_forward` (a device tensor batch in,
    `[n, D]` out). `encode` does the rest: conversion from numpy, splitting into `batch_size` chunks,
    device transfer, autocast, `inference_mode`, and the float32 numpy result.
    """

    modality: str
    dim: int
    encoder_id: str
    model_id: str
    batch_size: int = 32
    device: torch.device
    precision: str
    #: whether each output row is L2-normalized (before any clip averaging / logit scale)
    normalized: bool = True

    @abc.abstractmethod
    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        """Embed one chunk already on `self.device`; returns `[n, dim]`."""

    def _prepare(self, batch: Any) -> torch.Tensor:
        """Turn the caller's batch into a CPU tensor of the dtype the model expects."""
        tensor = torch.from_numpy(np.ascontiguousarray(batch)) if isinstance(batch, np.ndarray) else batch
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"{type(self).__name__}.encode expects a numpy array or torch tensor, got {type(batch)}")
        # Shards store compact dtypes (uint8 is never model-ready here, float16 spectrograms are):
        # compute in float32 and let autocast pick the low precision on GPU.
        if tensor.is_floating_point() and tensor.dtype != torch.float32:
            tensor = tensor.float()
        return tensor

    def encode(self, batch: np.ndarray | torch.Tensor) -> np.ndarray:
        """Embed a batch (first axis = samples) and return float32 `[N, dim]` on the host."""
        tensor = self._prepare(batch)
        if tensor.ndim == 0:
            raise ValueError("encode expects a batch with a leading sample axis")
        n = tensor.shape[0]
        if n == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        outputs = []
        non_blocking = self.device.type == "cuda"
        with torch.inference_mode(), autocast(self.device, self.precision):
            for start in range(0, n, max(1, int(self.batch_size))):
                chunk = tensor[start : start + self.batch_size].to(self.device, non_blocking=non_blocking)
                out = self._forward(chunk)
                outputs.append(out.float().cpu())
        result = torch.cat(outputs).numpy()
        if result.shape != (n, self.dim):
            raise RuntimeError(f"{self.encoder_id}: expected output {(n, self.dim)}, got {result.shape}")
        return np.ascontiguousarray(result, dtype=np.float32)

    def metadata(self) -> dict[str, Any]:
        """What an embedding store records next to the vectors."""
        return {
            "encoder_id": self.encoder_id,
            "model_id": self.model_id,
            "modality": self.modality,
            "dim": self.dim,
            "normalized": self.normalized,
            "precision": self.precision,
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.encoder_id!r}, dim={self.dim}, device={self.device}, precision={self.precision})"


def _resolve_runtime(device: Any, precision: Any) -> tuple[torch.device, str]:
    dev = select_device(device)
    return dev, select_precision(dev, precision)


# --------------------------------------------------------------------------------------------------
# Checkpoints


def _looks_like_path(text: str) -> bool:
    return (
        os.sep in text or "/" in text or text.startswith((".", "~")) or Path(text).suffix.lower() in CHECKPOINT_SUFFIXES
    )


def resolve_checkpoint(checkpoint: str | os.PathLike | None, what: str = "model") -> Path | None:
    """Validate a checkpoint argument: None (random init) or an existing local weights file.

    A hub tag ("openai", "laion2b_s32b_b79k") or URL is refused at once: this project never downloads.
    """
    if checkpoint is None:
        return None
    text = os.fspath(checkpoint)
    if (
        isinstance(checkpoint, str)
        and (text.startswith(("hf-hub:", "http://", "https://", "s3://", "gs://")) or not _looks_like_path(text))
        and not Path(text).is_file()
    ):
        raise ValueError(
            f"checkpoint {text!r} for {what} looks like a hub tag or URL; bindset cannot download weights "
            f"(no network access, by design). Download the weights yourself and pass a local "
            f".pt/.pth/.bin/.safetensors path, e.g. checkpoint='/models/{what.replace(':', '-')}.safetensors'."
        )
    path = Path(text).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path} (pass a local .pt/.pth/.bin/.safetensors path)")
    if path.suffix.lower() not in CHECKPOINT_SUFFIXES:
        raise ValueError(f"checkpoint {path} has an unsupported suffix; expected one of {CHECKPOINT_SUFFIXES}")
    return path


_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def sha256_file(path: str | os.PathLike, chunk: int = 8 << 20) -> str:
    """Hex sha256 of a file, cached per (path, size, mtime) within the process."""
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        h = hashlib.sha256()
        with open(p, "rb") as fh:
            while block := fh.read(chunk):
                h.update(block)
        _SHA_CACHE[key] = h.hexdigest()
    return _SHA_CACHE[key]


def known_file_hashes() -> dict[tuple[str, int, int], str]:
    """This process's hashes, keyed by (resolved path, size, mtime_ns), to hand to worker processes."""
    return dict(_SHA_CACHE)


def remember_file_hashes(hashes: dict[tuple[str, int, int], str]) -> None:
    """Adopt another process's hashes. A file whose size or mtime differs here misses the key and is
    hashed again, so a changed or different file is never given a stale digest."""
    for (path, size, mtime_ns), digest in hashes.items():
        _SHA_CACHE[(str(path), int(size), int(mtime_ns))] = str(digest)


def checkpoint_fingerprint(path: Path | None) -> str:
    return RANDOM_WEIGHTS if path is None else sha256_file(path)[:12]


def load_state_dict(path: str | os.PathLike, mmap: bool = True) -> dict[str, torch.Tensor]:
    """Read a local state dict without unpickling arbitrary objects.

    .safetensors via safetensors; everything else via `torch.load(weights_only=True)` (memory-mapped
    when the file is in torch's zip format, so a 5 GB checkpoint does not need 5 GB of RAM first).
    Unwraps `{"state_dict": ...}` / `{"model": ...}` / `{"module": ...}` containers and a DataParallel
    `module.` prefix.
    """
    path = Path(path)
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        obj: Any = load_file(str(path), device="cpu")
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        except RuntimeError as exc:  # legacy (non-zip) format cannot be memory-mapped
            if not mmap or "mmap" not in str(exc):
                raise
            obj = torch.load(path, map_location="cpu", weights_only=True)
    for _ in range(2):
        if isinstance(obj, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
            for wrapper in ("state_dict", "model", "module"):
                if isinstance(obj.get(wrapper), dict):
                    obj = obj[wrapper]
                    break
    if not isinstance(obj, dict) or not obj:
        raise ValueError(f"{path} does not hold a state dict (got {type(obj).__name__})")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module.") :]: v for k, v in obj.items()}
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f"{path}: non-tensor entries in state dict: {bad[:5]}")
    return obj


_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(text: str) -> str:
    """`text` with every run of characters outside [A-Za-z0-9._-] replaced by '-'."""
    return _SAFE.sub("-", text).strip("-.") or "x"


def make_encoder_id(family: str, model: str, modality: str | None, fingerprint: str, preprocess_version: str) -> str:
    parts = [family, model] + ([modality] if modality else []) + [fingerprint, preprocess_version]
    return "-".join(safe_name(p) for p in parts)


# --------------------------------------------------------------------------------------------------
# Factory


#: family -> "module:function"; the function takes (model, checkpoint, modality, device, precision, **kw)
_FAMILIES: dict[str, str] = {
    "openclip": "encoders.openclip:create",
    "imagebind": "encoders.imagebind:create",
    "binding": "encoders.binding:create",
}


def register_encoder_family(family: str, factory: str) -> None:
    """Make ``<family>:<model>`` a valid encoder name (``create_encoder``, ``bindset embed``).

    ``factory`` is ``"module:function"``: the function takes ``(model, checkpoint=, modality=,
    device=, precision=, **kw)`` and returns an ``Encoder``; the module also has
    ``available_models()``. Imported on first use. For the CLI and Ray workers, register it in a
    module named in ``BINDSET_PLUGINS``."""
    family = str(family).strip().lower()
    module, sep, function = str(factory).partition(":")
    if not family.isidentifier() or not sep or not module or not function:
        raise ValueError(f"register_encoder_family({family!r}, {factory!r}): need a name and 'module:function'")
    if family in _FAMILIES and _FAMILIES[family] != factory:
        raise ValueError(f"encoder family {family!r} is already registered as {_FAMILIES[family]!r}")
    _FAMILIES[family] = factory


def _family_models(family: str) -> list[str]:
    module_name = _FAMILIES[family].split(":")[0]
    module = importlib.import_module(module_name)
    return list(module.available_models())


def available_encoders() -> list[str]:
    """Every valid encoder name (OpenCLIP contributes one per `open_clip.list_models()` config)."""
    names = []
    for family in _FAMILIES:
        names.extend(f"{family}:{model}" for model in _family_models(family))
    return names


def _summary(names: Iterable[str], limit: int = 12) -> str:
    names = list(names)
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def create_encoder(
    name: str,
    checkpoint: str | os.PathLike | None = None,
    modality: str | None = None,
    device: str | torch.device | None = None,
    precision: str | torch.dtype | None = None,
    **kw: Any,
) -> Encoder:
    """Build an encoder by name: 'openclip:<open_clip config>', 'imagebind:<size>', or 'binding:<size>'
    (a tower trained by `bindset train`; `checkpoint` is then required: one of its run's
    `checkpoints/epoch-NNNN.safetensors`).

    `checkpoint`: a local weights file, or None for random init (tests). `modality`: for OpenCLIP
    'image' (default; also 'video') or 'text'; for ImageBind 'vision' (default; also 'image', 'video'),
    'text', 'audio', 'depth', 'thermal', 'imu'; for a binding the one it was trained for (None: that
    one). Extra keyword arguments go to the family's encoder
    (e.g. `batch_size`, `preprocess_version`).
    """
    family, sep, model = str(name).partition(":")
    family = family.strip().lower()
    if not sep or family not in _FAMILIES or not model:
        raise ValueError(
            f"unknown encoder {name!r}; valid names are 'openclip:<model>' with <model> from "
            f"open_clip.list_models() (e.g. {_summary(_family_models('openclip'), 6)}), "
            f"'imagebind:<size>' with <size> in {_family_models('imagebind')}, 'binding:<size>' "
            f"(a trained binding of that size, with its checkpoint)"
            + "".join(f", '{f}:<model>'" for f in _FAMILIES if f not in ("openclip", "imagebind", "binding"))
        )
    valid = _family_models(family)
    if model not in valid:
        raise ValueError(
            f"unknown {family} model {model!r} in {name!r}; valid: {_summary(f'{family}:{m}' for m in valid)}"
        )
    module_name, func_name = _FAMILIES[family].split(":")
    factory: Callable[..., Encoder] = getattr(importlib.import_module(module_name), func_name)
    return factory(model, checkpoint=checkpoint, modality=modality, device=device, precision=precision, **kw)
