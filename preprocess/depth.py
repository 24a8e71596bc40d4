"""Depth maps -> disparity, as ImageBind/Omnivore: ``disparity = baseline * fx / depth_m``.

Missing depth (0) is invalid and stays invalid: disparity 0 and ``valid=False``, never inf. Layouts:
``depth_m: [H,W] float32``, stored ``disparity: [1,S,S] float32`` + ``valid: [1,S,S] bool``.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from preprocess.crops import CropBox, apply_crop, center_crop_box, check_same_aspect

# Stereo baselines per sensor as in the Omnivore/ImageBind author code (Kinect 7.5 cm, others 9.5 cm).
SENSOR_BASELINE_M = {"kv1": 0.075, "kv2": 0.075, "realsense": 0.095, "xtion": 0.095}
# SUN RGB-D per-sensor focal lengths in pixels (used when a scene has no intrinsics.txt).
SENSOR_FX = {"kv1": 520.532, "kv2": 529.5, "realsense": 691.584229, "xtion": 570.342205}

DEPTH_ENCODINGS = ("sunrgbd", "millimetres", "metres")


@dataclass(frozen=True)
class DepthConfig:
    size: int = 224
    min_depth_m: float = 0.01
    max_depth_m: float = 50.0
    # ImageBind did not publish its disparity normalization: identity by default; set dataset
    # statistics here (valid pixels only are normalized, invalid stay 0).
    mean: float = 0.0
    std: float = 1.0


def _png_array(data: bytes) -> np.ndarray:
    if not data:
        raise ValueError("depth file is empty (0 bytes)")
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            mode = img.mode
            array = np.asarray(img)
    except Exception as exc:
        raise ValueError(f"not a decodable depth image ({type(exc).__name__}: {exc})") from exc
    if mode not in ("I;16", "I;16B", "I;16L", "I", "F"):
        raise ValueError(f"depth PNG has mode {mode!r}; a 16-bit single-channel image is required")
    return array


def decode_depth_png(data: bytes, encoding: str = "sunrgbd") -> np.ndarray:
    """Depth image bytes -> ``[H,W] float32`` metres (0 where missing).

    ``sunrgbd``: the SUN RGB-D toolbox stores millimetres rotated by 3 bits in a uint16;
    ``millimetres``: plain uint16 mm; ``metres``: float image in metres."""
    if encoding not in DEPTH_ENCODINGS:
        raise ValueError(f"unknown depth encoding {encoding!r}; choose one of {DEPTH_ENCODINGS}")
    array = _png_array(data)
    if encoding == "metres":
        return array.astype(np.float32)
    if array.dtype.kind == "f" or array.max(initial=0) > 0xFFFF or array.min(initial=0) < 0:
        raise ValueError(f"{encoding} depth must be uint16, got values of {array.dtype}")
    raw = array.astype(np.uint16)
    if encoding == "sunrgbd":
        raw = (raw >> 3) | (raw << 13)  # uint16 arithmetic wraps, which is the rotation
    return raw.astype(np.float32) / np.float32(1000.0)


def read_intrinsics(text: str) -> np.ndarray:
    """SUN RGB-D ``intrinsics.txt`` (3x3, whitespace separated) -> ``[3,3] float64``; fx is [0,0]."""
    try:
        k = np.array([float(v) for v in text.split()], dtype=np.float64)
    except ValueError as exc:
        raise ValueError(f"intrinsics are not numbers: {exc}") from exc
    if k.size != 9:
        raise ValueError(f"intrinsics must hold a 3x3 matrix (9 numbers), found {k.size}")
    k = k.reshape(3, 3)
    if not k[0, 0] > 0:
        raise ValueError(f"intrinsics fx must be positive, got {k[0, 0]}")
    return k


def depth_to_disparity(depth_m: np.ndarray, fx: float, baseline_m: float,
                       cfg: DepthConfig = DepthConfig()) -> tuple[np.ndarray, np.ndarray]:
    """``[H,W]`` metres -> (disparity ``[H,W] float32``, valid ``[H,W] bool``).

    Depth is clipped to [min, max] before dividing; missing (0, negative, non-finite) pixels are
    invalid with disparity 0. A map with no valid pixel is a bad sample (ValueError)."""
    if not (fx and fx > 0 and baseline_m and baseline_m > 0):
        raise ValueError(f"fx and baseline must be positive, got fx={fx} baseline={baseline_m}")
    depth = np.asarray(depth_m, dtype=np.float32)
    valid = np.isfinite(depth) & (depth > 0)
    if not valid.any():
        raise ValueError("depth map has no valid pixel (all zero or missing)")
    clipped = np.clip(np.where(valid, depth, 1.0), cfg.min_depth_m, cfg.max_depth_m)
    disparity = np.where(valid, np.float32(baseline_m * fx) / clipped, 0.0).astype(np.float32)
    return disparity, valid


def crop_depth(disparity: np.ndarray, valid: np.ndarray, box: CropBox,
               cfg: DepthConfig = DepthConfig()) -> tuple[np.ndarray, np.ndarray]:
    """Crop both with NEAREST: bilinear would blend invalid zeros into valid neighbours and invent
    'flying pixels' between foreground and background."""
    d = apply_crop(disparity, box, cfg.size, "nearest")
    v = apply_crop(valid, box, cfg.size, "nearest")
    return d[None].astype(np.float32), v[None].astype(bool)


def normalize_depth(disparity: np.ndarray, valid: np.ndarray, cfg: DepthConfig = DepthConfig()) -> np.ndarray:
    """Stored disparity -> model-ready float32; invalid pixels stay exactly 0."""
    x = (disparity.astype(np.float32) - np.float32(cfg.mean)) / np.float32(cfg.std)
    return np.where(valid, x, np.float32(0.0)).astype(np.float32)


def depth_model_input(data: bytes, encoding: str, fx: float, baseline_m: float,
                      cfg: DepthConfig = DepthConfig(), rgb_size: tuple[int, int] | None = None) -> np.ndarray:
    """What a depth encoder sees for one file: ``[1,224,224] float32`` (eval crop of the RGB frame
    when its ``(H, W)`` is given, else of the depth map itself)."""
    depth_m = decode_depth_png(data, encoding)
    h, w = rgb_size or depth_m.shape
    if rgb_size is not None:
        check_same_aspect("depth", depth_m.shape, rgb_size)
    disparity, valid = depth_to_disparity(depth_m, fx, baseline_m, cfg)
    d, v = crop_depth(disparity, valid, center_crop_box(h, w, cfg.size), cfg)
    return normalize_depth(d, v, cfg)
