"""Thermal images: one channel scaled to [0,1] (by dtype range, or per-image percentiles for
radiometric data), cropped with the RGB partner's box, then mean/std.
Layouts: decoded ``[H,W] float32 in [0,1]``; stored ``[1,S,S]``; model-ready ``[1,S,S] float32``."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from preprocess.crops import CropBox, apply_crop, center_crop_box, check_same_aspect


@dataclass(frozen=True)
class ThermalConfig:
    size: int = 224
    scaling: str = "dtype"  # "dtype": 8-bit /255, 16-bit /65535; "percentile": per-image p_low..p_high
    percentiles: tuple[float, float] = (1.0, 99.0)
    # ImageBind did not publish its thermal statistics; identity keeps [0,1]. Set dataset values here.
    mean: float = 0.0
    std: float = 1.0
    resample: str = "bicubic"


def decode_thermal(data: bytes, cfg: ThermalConfig = ThermalConfig()) -> np.ndarray:
    """Image bytes -> ``[H,W] float32`` in [0,1]. LLVIP infrared is 8-bit grey stored as three equal
    channels: the first channel is taken as is (a luminance conversion would only add rounding)."""
    if not data:
        raise ValueError("thermal file is empty (0 bytes)")
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            array = np.asarray(img)
    except Exception as exc:
        raise ValueError(f"not a decodable thermal image ({type(exc).__name__}: {exc})") from exc
    if array.ndim == 3:
        array = array[..., 0]
    if cfg.scaling == "percentile":
        lo, hi = np.percentile(array, cfg.percentiles)
        scaled = (array.astype(np.float32) - lo) / max(float(hi - lo), 1e-6)
    elif cfg.scaling == "dtype":
        if array.dtype == np.uint8:
            scaled = array.astype(np.float32) / 255.0
        elif array.dtype in (np.uint16, np.int32) and array.min() >= 0 and array.max() <= 0xFFFF:
            scaled = array.astype(np.float32) / 65535.0
        else:
            raise ValueError(f"thermal image of dtype {array.dtype}: use scaling='percentile'")
    else:
        raise ValueError(f"unknown thermal scaling {cfg.scaling!r}; use 'dtype' or 'percentile'")
    return np.clip(scaled, 0.0, 1.0).astype(np.float32)


def crop_thermal(t01: np.ndarray, box: CropBox, cfg: ThermalConfig = ThermalConfig()) -> np.ndarray:
    """``[H,W]`` in [0,1] -> ``[1,S,S] float32`` in [0,1] (bicubic overshoot clipped)."""
    return np.clip(apply_crop(t01, box, cfg.size, cfg.resample), 0.0, 1.0)[None].astype(np.float32)


def normalize_thermal(intensity: np.ndarray, cfg: ThermalConfig = ThermalConfig()) -> np.ndarray:
    return ((intensity.astype(np.float32) - np.float32(cfg.mean)) / np.float32(cfg.std)).astype(np.float32)


def thermal_model_input(data: bytes, cfg: ThermalConfig = ThermalConfig(),
                        rgb_size: tuple[int, int] | None = None) -> np.ndarray:
    t01 = decode_thermal(data, cfg)
    h, w = rgb_size or t01.shape
    if rgb_size is not None:
        check_same_aspect("thermal", t01.shape, rgb_size)
    return normalize_thermal(crop_thermal(t01, center_crop_box(h, w, cfg.size), cfg), cfg)
