"""Depth maps -> disparity, as ImageBind/Omnivore feed depth: ``disparity = baseline * fx / depth_m``.

Missing depth (0) is invalid and stays invalid everywhere: disparity 0 and ``valid=False``, never
inf or nan. Layouts: decoded ``depth_m: [H,W] float32`` metres; ``disparity, valid: [H,W]``;
stored ``disparity: [1,S,S] float32`` + ``valid: [1,S,S] bool``; model-ready ``[1,S,S] float32``.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from preprocess.crops import CropBox, apply_crop, center_crop_box, check_same_aspect

# Stereo baselines per sensor as in the Omnivore/ImageBind author code (Kinect 7.5 cm, others 9.5 cm).
SENSOR_BASELINE_M = {"kv1": 0.075, "kv2": 0.075, "realsense": 0.095, "xtion": 0.095}
# SUN RGB-D per-sensor focal lengths in pixels, for scenes without an intrinsics.txt.
SENSOR_FX = {"kv1": 520.532, "kv2": 529.5, "realsense": 691.584229, "xtion": 570.342205}

DEPTH_ENCODINGS = ("sunrgbd", "millimetres", "metres")
_INT16_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")  # 16-bit PNG/PGM/TIFF (Pillow may widen to I)


@dataclass(frozen=True)
class DepthConfig:
    size: int = 224
    min_depth_m: float = 0.01
    max_depth_m: float = 50.0
    # ImageBind did not publish a disparity normalization. Identity by default, so stored and
    # model-ready disparity are in pixels (kv1 indoors, 0.5-10 m: about 4-80). Put dataset
    # statistics of *valid* pixels here to standardize; invalid pixels stay 0 either way.
    mean: float = 0.0
    std: float = 1.0

    def __post_init__(self) -> None:
        if not (0.0 < self.min_depth_m < self.max_depth_m):
            raise ValueError(f"need 0 < min_depth_m < max_depth_m, got {self.min_depth_m}, {self.max_depth_m}")
        if not self.std > 0:
            raise ValueError(f"depth std must be positive, got {self.std}")


def _depth_image(data: bytes) -> tuple[np.ndarray, str]:
    if not data:
        raise ValueError("depth file is empty (0 bytes)")
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            mode = img.mode
            array = np.asarray(img)
    except Exception as exc:
        raise ValueError(f"not a decodable depth image ({type(exc).__name__}: {exc})") from exc
    return array, mode


def decode_depth_png(data: bytes, encoding: str) -> np.ndarray:
    """Depth image bytes -> ``depth_m: [H,W] float32`` metres, 0 where the sensor had no reading.

    ``encoding``: ``"sunrgbd"`` (SUN RGB-D toolbox: millimetres rotated by 3 bits in a uint16,
    ``mm = (raw >> 3) | (raw << 13)``), ``"millimetres"`` (plain uint16 mm) or ``"metres"``
    (a float image, e.g. 32-bit TIFF). Anything else (8-bit, colour, float given as integer mm)
    raises ValueError: silently decoding it would make plausible-looking wrong depth."""
    if encoding not in DEPTH_ENCODINGS:
        raise ValueError(f"unknown depth encoding {encoding!r}; choose one of {DEPTH_ENCODINGS}")
    array, mode = _depth_image(data)
    if encoding == "metres":
        if mode != "F":
            raise ValueError(f"metres depth must be a single-channel float image (mode F), got mode {mode!r}")
        return array.astype(np.float32)
    if mode not in _INT16_MODES:
        raise ValueError(f"{encoding} depth must be a 16-bit single-channel image, got mode {mode!r}")
    if array.size and (array.min() < 0 or array.max() > 0xFFFF):
        raise ValueError(f"{encoding} depth must hold uint16 values, found {array.min()}..{array.max()}")
    raw = array.astype(np.uint16)
    if encoding == "sunrgbd":
        raw = (raw >> 3) | (raw << 13)  # uint16 shifts wrap, which is exactly the rotation
    return raw.astype(np.float32) / np.float32(1000.0)


def read_intrinsics(text: str) -> np.ndarray:
    """SUN RGB-D ``intrinsics.txt`` (3x3, whitespace separated, row-major) -> ``K: [3,3] float64``;
    ``fx = K[0,0]``."""
    try:
        k = np.array([float(v) for v in text.split()], dtype=np.float64)
    except ValueError as exc:
        raise ValueError(f"intrinsics are not numbers: {exc}") from exc
    if k.size != 9:
        raise ValueError(f"intrinsics must hold a 3x3 matrix (9 numbers), found {k.size}")
    k = k.reshape(3, 3)
    if not (np.isfinite(k).all() and k[0, 0] > 0):
        raise ValueError(f"intrinsics fx must be a positive finite number, got {k[0, 0]}")
    return k


def depth_to_disparity(
    depth_m: np.ndarray, fx: float, baseline_m: float, cfg: DepthConfig = DepthConfig()
) -> tuple[np.ndarray, np.ndarray]:
    """``depth_m: [H,W]`` metres -> (``disparity: [H,W] float32``, ``valid: [H,W] bool``).

    Valid pixels (finite, > 0) get ``baseline * fx / clip(depth, min, max)``; the clip bounds the
    result (a 1 mm reading would otherwise give a huge disparity). Missing pixels (0, negative,
    nan) are invalid with disparity exactly 0. A map with no valid pixel is a bad sample."""
    if not (np.isfinite(fx) and fx > 0 and np.isfinite(baseline_m) and baseline_m > 0):
        raise ValueError(f"fx and baseline must be positive, got fx={fx} baseline={baseline_m}")
    depth = np.asarray(depth_m, dtype=np.float32)
    if depth.ndim != 2:
        raise ValueError(f"expected a [H,W] depth map, got shape {depth.shape}")
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(depth) & (depth > 0)
    if not valid.any():
        raise ValueError("depth map has no valid pixel (all zero or missing)")
    # Invalid pixels divide a harmless 1.0 and are then overwritten: no inf ever exists.
    clipped = np.clip(np.where(valid, depth, np.float32(1.0)), cfg.min_depth_m, cfg.max_depth_m)
    disparity = np.where(valid, np.float32(baseline_m * fx) / clipped, np.float32(0.0)).astype(np.float32)
    return disparity, valid


def crop_depth(
    disparity: np.ndarray, valid: np.ndarray, box: CropBox, cfg: DepthConfig = DepthConfig()
) -> tuple[np.ndarray, np.ndarray]:
    """``[H,W]`` disparity and mask -> stored (``[1,S,S] float32``, ``[1,S,S] bool``) for ``box``.

    Both use NEAREST: bilinear/bicubic would blend invalid zeros into valid neighbours and invent
    'flying pixels' half-way between foreground and background. Nearest keeps every output value a
    real measurement and the mask exactly aligned with it."""
    if disparity.shape != valid.shape or disparity.ndim != 2:
        raise ValueError(f"disparity {disparity.shape} and valid {valid.shape} must be the same [H,W] shape")
    d = apply_crop(disparity.astype(np.float32, copy=False), box, cfg.size, "nearest")
    v = apply_crop(valid.astype(bool, copy=False), box, cfg.size, "nearest")
    return d[None], v[None]


def normalize_depth(disparity: np.ndarray, valid: np.ndarray, cfg: DepthConfig = DepthConfig()) -> np.ndarray:
    """Stored ``[...,1,S,S]`` disparity (any float dtype) + mask -> model-ready float32 of the
    same shape: ``(d - mean) / std`` on valid pixels, exactly 0 on invalid ones."""
    x = (disparity.astype(np.float32) - np.float32(cfg.mean)) / np.float32(cfg.std)
    return np.where(valid, x, np.float32(0.0)).astype(np.float32)


def depth_model_input(
    depth_png: bytes,
    encoding: str,
    fx: float,
    baseline_m: float,
    cfg: DepthConfig = DepthConfig(),
    rgb_size: tuple[int, int] | None = None,
) -> np.ndarray:
    """What a depth encoder sees for one file: ``[1,S,S] float32``. The eval box is the centre
    crop of the RGB frame when its ``(H, W)`` is given (the depth map must then show the same
    field of view: same aspect within 1%, any resolution), else of the depth map itself."""
    depth_m = decode_depth_png(depth_png, encoding)
    if rgb_size is not None:
        check_same_aspect("depth", depth_m.shape, rgb_size)
    h, w = rgb_size if rgb_size is not None else depth_m.shape
    disparity, valid = depth_to_disparity(depth_m, fx, baseline_m, cfg)
    d, v = crop_depth(disparity, valid, center_crop_box(h, w, cfg.size), cfg)
    return normalize_depth(d, v, cfg)
