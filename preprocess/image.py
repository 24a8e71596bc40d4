"""RGB images, as ImageBind's vision transform: short side 224 (PIL bicubic, antialiased), centre
crop 224, /255, CLIP mean/std. Layouts: decoded ``rgb: [H,W,3] uint8``; stored ``[3,S,S] uint8``;
model-ready ``[3,S,S] float32``."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from preprocess.crops import CropBox, apply_crop, center_crop_box

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class ImageConfig:
    size: int = 224
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD
    resample: str = "bicubic"


def decode_image(data: bytes) -> np.ndarray:
    """Bytes of any Pillow-readable image -> ``[H,W,3] uint8``, as ``Image.convert("RGB")``: alpha is
    dropped without compositing and grey is replicated, exactly what the reference model saw.
    Truncated or corrupt files raise ValueError (no LOAD_TRUNCATED_IMAGES: a half-grey JPEG would be
    silently stored)."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            rgb = img.convert("RGB")
    except Exception as exc:  # Pillow raises OSError, SyntaxError, Image.DecompressionBombError, ...
        raise ValueError(f"not a decodable image ({type(exc).__name__}: {exc})") from exc
    return np.asarray(rgb)


def crop_rgb(rgb: np.ndarray, box: CropBox, cfg: ImageConfig = ImageConfig()) -> np.ndarray:
    """``[H,W,3] uint8`` -> stored ``[3,S,S] uint8`` for ``box``."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an RGB [H,W,3] uint8 array, got {rgb.shape} {rgb.dtype}")
    return np.ascontiguousarray(apply_crop(rgb, box, cfg.size, cfg.resample).transpose(2, 0, 1))


def normalize_rgb(pixels: np.ndarray, cfg: ImageConfig = ImageConfig()) -> np.ndarray:
    """Stored ``[...,3,S,S] uint8`` -> model-ready float32 (ToTensor, then CLIP mean/std)."""
    x = pixels.astype(np.float32) / np.float32(255.0)
    mean = np.asarray(cfg.mean, np.float32).reshape(3, 1, 1)
    std = np.asarray(cfg.std, np.float32).reshape(3, 1, 1)
    return (x - mean) / std


def image_model_input(data: bytes, cfg: ImageConfig = ImageConfig()) -> np.ndarray:
    """What ImageBind's vision encoder sees for one image file: ``[3,224,224] float32``."""
    rgb = decode_image(data)
    box = center_crop_box(rgb.shape[0], rgb.shape[1], cfg.size)
    return normalize_rgb(crop_rgb(rgb, box, cfg), cfg)
