"""RGB images, as ImageBind's vision transform: short side to 224 (PIL bicubic, which antialiases),
centre crop 224, /255, CLIP mean/std.

Two steps, because the build stores a compact crop and the reader makes the model input later:
  decode ``bytes -> rgb: [H,W,3] uint8`` ; crop ``-> stored [3,S,S] uint8`` ;
  normalize ``[...,3,S,S] uint8 -> model-ready [...,3,S,S] float32``.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from preprocess.crops import RESAMPLE_MODES, CropBox, apply_crop, apply_crop_image, center_crop_box

# OpenAI CLIP statistics, the ones ImageBind normalizes with.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class ImageConfig:
    size: int = 224
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD
    resample: str = "bicubic"

    def __post_init__(self) -> None:
        if self.resample not in RESAMPLE_MODES:
            raise ValueError(f"image resample must be one of {RESAMPLE_MODES}, got {self.resample!r}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"image mean/std need 3 values each and a positive std, got {self.mean} / {self.std}")


def decode_image(data: bytes) -> np.ndarray:
    """Bytes of any Pillow-readable image -> ``rgb: [H,W,3] uint8`` (``decode_image_pil`` as an array)."""
    return np.asarray(decode_image_pil(data))


def decode_image_pil(data: bytes) -> Image.Image:
    """Bytes of any Pillow-readable image -> an RGB Pillow image, exactly as the reference's
    ``Image.open(...).convert("RGB")``: alpha is dropped without compositing (RGBA, LA, P with
    transparency), grey is replicated, CMYK/16-bit go through Pillow's own conversion, and EXIF
    orientation is *not* applied (the reference did not apply it either).

    Truncated or corrupt data raises ValueError: ``LOAD_TRUNCATED_IMAGES`` stays off, because a
    half-grey JPEG stored silently is worse than a recorded reject."""
    if not data:
        raise ValueError("not a decodable image: empty (0 bytes)")
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()  # forces the full decode here, so truncation is caught inside the try
            rgb = img.convert("RGB")
    except Exception as exc:  # Pillow raises OSError, SyntaxError, DecompressionBombError, ...
        raise ValueError(f"not a decodable image ({type(exc).__name__}: {exc})") from exc
    return rgb


def crop_rgb(rgb: np.ndarray | Image.Image, box: CropBox, cfg: ImageConfig = ImageConfig()) -> np.ndarray:
    """``rgb: [H,W,3] uint8`` (or an RGB Pillow image) -> stored ``[3,S,S] uint8``: the ``box``
    region resized to ``cfg.size`` with ``cfg.resample`` (the reference's resize-then-crop for a
    centre box)."""
    if isinstance(rgb, Image.Image):
        if rgb.mode != "RGB":
            raise ValueError(f"expected an RGB image, got mode {rgb.mode}")
        return np.ascontiguousarray(apply_crop_image(rgb, box, cfg.size, cfg.resample).transpose(2, 0, 1))
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an RGB [H,W,3] uint8 array, got {rgb.shape} {rgb.dtype}")
    return np.ascontiguousarray(apply_crop(rgb, box, cfg.size, cfg.resample).transpose(2, 0, 1))


def normalize_rgb(pixels: np.ndarray, cfg: ImageConfig = ImageConfig()) -> np.ndarray:
    """Stored ``[3,S,S]`` or ``[...,3,S,S] uint8`` -> model-ready float32 of the same shape:
    ``ToTensor`` (/255, in float32 as torch does) then per-channel ``(x - mean) / std``."""
    if pixels.ndim < 3 or pixels.shape[-3] != 3:
        raise ValueError(f"expected [...,3,S,S] pixels, got shape {pixels.shape}")
    x = pixels.astype(np.float32) / np.float32(255.0)
    mean = np.asarray(cfg.mean, np.float32).reshape(3, 1, 1)
    std = np.asarray(cfg.std, np.float32).reshape(3, 1, 1)
    return (x - mean) / std


def image_model_input(data: bytes, cfg: ImageConfig = ImageConfig()) -> np.ndarray:
    """What ImageBind's vision encoder sees for one image file: ``[3,S,S] float32`` (S = 224).
    Equal to the reference ``load_and_transform_vision_data`` output for the same bytes."""
    rgb = decode_image_pil(data)
    box = center_crop_box(rgb.height, rgb.width, cfg.size)
    return normalize_rgb(crop_rgb(rgb, box, cfg), cfg)
