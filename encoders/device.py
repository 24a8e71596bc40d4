"""Device and precision choice for encoders.

Defaults: CUDA when present, else CPU. On CUDA the forward pass runs under autocast in bf16 when the
card supports it, else fp16; weights stay fp32 so a checkpoint loads the same everywhere. On CPU the
default is plain fp32 (CPU autocast is slower than fp32 on most hosts and changes the numbers).
Every choice can be overridden; `BINDSET_DEVICE` / `BINDSET_PRECISION` override the defaults for a
whole process (an explicit argument still wins).
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

import torch

PRECISIONS = ("fp32", "bf16", "fp16")

_ALIASES = {
    "fp32": "fp32",
    "float32": "fp32",
    "float": "fp32",
    "32": "fp32",
    "bf16": "bf16",
    "bfloat16": "bf16",
    "fp16": "fp16",
    "float16": "fp16",
    "half": "fp16",
    "16": "fp16",
}

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def select_device(device: str | torch.device | None = None) -> torch.device:
    """The device to run on: `device` if given, else $BINDSET_DEVICE, else CUDA if available, else CPU."""
    if device is None:
        device = os.environ.get("BINDSET_DEVICE") or None
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {str(dev)!r} requested but CUDA is not available on this machine")
    return dev


def normalize_precision(precision: str | torch.dtype) -> str:
    """Canonical precision name ('fp32' | 'bf16' | 'fp16') for a name or torch dtype."""
    if isinstance(precision, torch.dtype):
        for name, dtype in _DTYPES.items():
            if dtype == precision:
                return name
        raise ValueError(f"unsupported precision dtype {precision}; use one of {PRECISIONS}")
    key = str(precision).strip().lower()
    if key not in _ALIASES:
        raise ValueError(f"unknown precision {precision!r}; use one of {PRECISIONS}")
    return _ALIASES[key]


def select_precision(device: torch.device, precision: str | torch.dtype | None = None) -> str:
    """The compute precision: `precision` if given, else $BINDSET_PRECISION, else bf16/fp16 on CUDA, fp32 on CPU."""
    if precision is None:
        precision = os.environ.get("BINDSET_PRECISION") or None
    if precision is not None:
        return normalize_precision(precision)
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


@contextlib.contextmanager
def autocast(device: torch.device, precision: str) -> Iterator[None]:
    """Autocast for bf16/fp16, nothing for fp32. Weights stay fp32; outputs are cast back by the caller."""
    precision = normalize_precision(precision)
    if precision == "fp32":
        yield
        return
    with torch.autocast(device_type=device.type, dtype=_DTYPES[precision]):
        yield
