"""Thermal images: one channel scaled to [0,1] (by the dtype's range, or per-image percentiles for
radiometric data), cropped with the RGB partner's box, then mean/std.

Layouts: decoded ``t01: [H,W] float32 in [0,1]``; stored ``[1,S,S] float32 in [0,1]`` (the build
keeps it as float16); model-ready ``[...,1,S,S] float32``.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from preprocess.crops import RESAMPLE_MODES, CropBox, apply_crop, center_crop_box, check_same_aspect

THERMAL_SCALINGS = ("dtype", "percentile")
_MULTI_CHANNEL_8BIT = ("RGB", "RGBA", "RGBX", "LA")  # first band is the grey value when bands are equal
_SINGLE_CHANNEL = ("L", "I;16", "I;16L", "I;16B", "I;16N", "I", "F")


@dataclass(frozen=True)
class ThermalConfig:
    size: int = 224
    # "dtype": 8-bit / 255, 16-bit / 65535 (LLVIP and most datasets: already-mapped 8-bit).
    # "percentile": per-image (x - p_low) / (p_high - p_low), clipped; for radiometric 16-bit or
    # float data whose useful range is a small slice of the dtype's.
    scaling: str = "dtype"
    percentiles: tuple[float, float] = (1.0, 99.0)
    # ImageBind did not publish thermal statistics. 0.5/0.5 maps [0,1] to [-1,1]: zero-centred and
    # on the scale of CLIP-normalized RGB (about [-1.8, 2.1]), so the thermal stem gets inputs like
    # the vision stem's rather than all-positive ones. Replace with dataset statistics if known.
    mean: float = 0.5
    std: float = 0.5
    resample: str = "bicubic"

    def __post_init__(self) -> None:
        if self.scaling not in THERMAL_SCALINGS:
            raise ValueError(f"unknown thermal scaling {self.scaling!r}; use one of {THERMAL_SCALINGS}")
        lo, hi = self.percentiles
        if not (0.0 <= lo < hi <= 100.0):
            raise ValueError(f"thermal percentiles must satisfy 0 <= low < high <= 100, got {self.percentiles}")
        if self.resample not in RESAMPLE_MODES:
            raise ValueError(f"thermal resample must be one of {RESAMPLE_MODES}, got {self.resample!r}")
        if not self.std > 0:
            raise ValueError(f"thermal std must be positive, got {self.std}")


def _single_channel(img: Image.Image) -> np.ndarray:
    """One grey plane in the image's own dtype (uint8, uint16, int32 or float32)."""
    if img.mode in _SINGLE_CHANNEL:
        return np.asarray(img)
    if img.mode in _MULTI_CHANNEL_8BIT:
        array = np.asarray(img)
        colour = array[..., :3] if img.mode != "LA" else array[..., :1]
        first = colour[..., 0]
        if (colour == first[..., None]).all():
            return first  # grey stored as equal bands (LLVIP): exact, no luminance rounding
    # False-colour or palette/CMYK images: Pillow's ITU-R 601 luminance.
    return np.asarray(img.convert("L"))


def decode_thermal(data: bytes, cfg: ThermalConfig = ThermalConfig()) -> np.ndarray:
    """Image bytes -> ``t01: [H,W] float32`` in [0,1], scaled as ``cfg.scaling`` says.

    LLVIP infrared is 8-bit grey JPEG stored as three identical channels: its first channel is
    taken as is. 16-bit radiometric PNG/TIFF are read at full depth (``dtype`` scaling divides by
    65535; ``percentile`` stretches each image's p_low..p_high). Float images need ``percentile``."""
    if not data:
        raise ValueError("thermal file is empty (0 bytes)")
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            array = _single_channel(img)
    except Exception as exc:
        raise ValueError(f"not a decodable thermal image ({type(exc).__name__}: {exc})") from exc
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise ValueError("thermal image has non-finite values")
    if cfg.scaling == "percentile":
        lo, hi = np.percentile(array.astype(np.float64), cfg.percentiles)
        # A flat image has no contrast to stretch: it maps to 0 rather than dividing by zero.
        scaled = (array.astype(np.float64) - lo) / (hi - lo) if hi > lo else np.zeros(array.shape)
    elif array.dtype == np.uint8:
        scaled = array.astype(np.float32) / np.float32(255.0)
    elif array.dtype.kind in "ui" and array.size and array.min() >= 0 and array.max() <= 0xFFFF:
        scaled = array.astype(np.float32) / np.float32(65535.0)
    else:
        raise ValueError(f"thermal image of dtype {array.dtype} has no fixed range: use scaling='percentile'")
    return np.clip(scaled, 0.0, 1.0).astype(np.float32)


def crop_thermal(t01: np.ndarray, box: CropBox, cfg: ThermalConfig = ThermalConfig()) -> np.ndarray:
    """``t01: [H,W]`` in [0,1] -> stored ``[1,S,S] float32`` in [0,1]: the ``box`` region, resampled
    like RGB (bicubic by default) so both show the scene at the same sharpness; bicubic overshoot
    at hot edges is clipped back into [0,1]."""
    if t01.ndim != 2:
        raise ValueError(f"expected a single-channel [H,W] thermal map, got shape {t01.shape}")
    crop = apply_crop(t01.astype(np.float32, copy=False), box, cfg.size, cfg.resample)
    return np.clip(crop, 0.0, 1.0)[None].astype(np.float32)


def normalize_thermal(intensity: np.ndarray, cfg: ThermalConfig = ThermalConfig()) -> np.ndarray:
    """Stored ``[...,1,S,S]`` in [0,1] (any float dtype) -> model-ready float32 ``(x - mean) / std``."""
    return (intensity.astype(np.float32) - np.float32(cfg.mean)) / np.float32(cfg.std)


def thermal_model_input(
    data: bytes, cfg: ThermalConfig = ThermalConfig(), rgb_size: tuple[int, int] | None = None
) -> np.ndarray:
    """What a thermal encoder sees for one file: ``[1,S,S] float32``. The eval box is the centre
    crop of the RGB partner's frame when its ``(H, W)`` is given (same aspect within 1% required),
    else of the thermal image itself."""
    t01 = decode_thermal(data, cfg)
    if rgb_size is not None:
        check_same_aspect("thermal", t01.shape, rgb_size)
    h, w = rgb_size if rgb_size is not None else t01.shape
    return normalize_thermal(crop_thermal(t01, center_crop_box(h, w, cfg.size), cfg), cfg)
