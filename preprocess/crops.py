"""Crop boxes shared by every spatial modality of a sample.

A ``CropBox`` lives in normalized source coordinates (fractions of the frame height/width), so one
box drawn on the RGB frame applies to a depth or thermal map of another resolution and covers the
same part of the scene there.

How a box is applied (``apply_crop``): the whole frame is resized to the integer size at which the
box spans exactly ``size`` pixels (``crop_grid``), then the box is cut at integer offsets. The grid
depends on the box alone, never on the array's resolution, so RGB, depth and thermal land on the
same output pixel grid. For the eval box of ``center_crop_box`` this *is* ImageBind's
``Resize(224)`` followed by ``CenterCrop(224)``: the same PIL call on the same sizes, hence
bit-identical output (no "resize with a float source box" shortcut, whose filter coefficients are
computed from differently rounded doubles and are not guaranteed to match bit for bit).

Randomness is drawn first (``random_resized_crop_box(rng, ...)``) and applied deterministically
after, as torchvision v2 separates ``make_params`` from the kernels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

_RESAMPLE = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
}
RESAMPLE_MODES = tuple(_RESAMPLE)

# A box edge may exceed 1.0 by float rounding of ``(i + h) / height``.
_EDGE_SLACK = 1e-9


@dataclass(frozen=True)
class CropBox:
    """Region ``[y0, y1) x [x0, x1)`` of the source frame, as fractions of its height and width
    (0 = top/left edge, 1 = bottom/right edge); ``flip`` mirrors the crop horizontally."""

    y0: float
    x0: float
    y1: float
    x1: float
    flip: bool = False

    def __post_init__(self) -> None:
        coords = (self.y0, self.x0, self.y1, self.x1)
        if not all(math.isfinite(c) for c in coords) or not (
            0.0 <= self.y0 < self.y1 <= 1.0 + _EDGE_SLACK and 0.0 <= self.x0 < self.x1 <= 1.0 + _EDGE_SLACK
        ):
            raise ValueError(f"invalid crop box {self}: need 0 <= y0 < y1 <= 1 and 0 <= x0 < x1 <= 1")


def _check_frame(height: int, width: int, size: int | None = None) -> None:
    if int(height) < 1 or int(width) < 1:
        raise ValueError(f"frame must be at least 1x1, got {width}x{height} (WxH)")
    if size is not None and int(size) < 1:
        raise ValueError(f"crop size must be positive, got {size}")


def resized_size(height: int, width: int, size: int) -> tuple[int, int]:
    """Reference ``Resize(size)`` as ``(H, W)``: short side to ``size``, long side
    ``int(size * long / short)`` (truncated, as torchvision computes it)."""
    _check_frame(height, width, size)
    if height <= width:
        return size, int(size * width / height)
    return int(size * height / width), size


def center_crop_box(height: int, width: int, size: int = 224) -> CropBox:
    """The eval box of a ``height x width`` frame: short side resized to ``size``, centre
    ``size x size`` square with the reference's offsets ``int(round((dim - size) / 2))`` (Python
    rounds halves to even: a 299-pixel side gives offset 38, not 37)."""
    rh, rw = resized_size(height, width, size)
    top, left = int(round((rh - size) / 2)), int(round((rw - size) / 2))
    return CropBox(top / rh, left / rw, (top + size) / rh, (left + size) / rw)


def random_resized_crop_box(
    rng: np.random.Generator,
    height: int,
    width: int,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    flip_prob: float = 0.5,
) -> CropBox:
    """A training box with torchvision ``RandomResizedCrop`` semantics, drawn from ``rng``:
    area fraction uniform in ``scale``, aspect ratio (w/h) log-uniform in ``ratio``, integer pixel
    box of the ``height x width`` frame; after 10 misses, a centred box of the frame's aspect
    clamped to ``ratio``. Then a horizontal flip with probability ``flip_prob``."""
    _check_frame(height, width)
    if not (0.0 < scale[0] <= scale[1]):
        raise ValueError(f"scale must satisfy 0 < min <= max, got {scale}")
    if not (0.0 < ratio[0] <= ratio[1]):
        raise ValueError(f"ratio must satisfy 0 < min <= max, got {ratio}")
    if not (0.0 <= flip_prob <= 1.0):
        raise ValueError(f"flip_prob must be in [0, 1], got {flip_prob}")
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    box = None
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            i = int(rng.integers(0, height - h + 1))
            j = int(rng.integers(0, width - w + 1))
            box = (i, j, h, w)
            break
    if box is None:
        in_ratio = width / height
        if in_ratio < ratio[0]:
            w, h = width, int(round(width / ratio[0]))
        elif in_ratio > ratio[1]:
            h, w = height, int(round(height * ratio[1]))
        else:
            w, h = width, height
        box = ((height - h) // 2, (width - w) // 2, h, w)
    i, j, h, w = box
    flip = bool(rng.random() < flip_prob)
    return CropBox(i / height, j / width, (i + h) / height, (j + w) / width, flip)


def crop_grid(box: CropBox, size: int) -> tuple[int, int, int, int]:
    """``(full_h, full_w, top, left)``: the whole-frame size at which ``box`` spans ``size``
    pixels, and the box's integer offsets in it. A function of the box alone, so every modality of
    a sample agrees on it; for a ``center_crop_box`` it returns the reference's resized size and
    centre-crop offsets exactly (the float round trip is far below the 0.5 that ``round`` absorbs)."""
    full_h = max(size, int(round(size / (box.y1 - box.y0))))
    full_w = max(size, int(round(size / (box.x1 - box.x0))))
    top = min(int(round(box.y0 * full_h)), full_h - size)
    left = min(int(round(box.x0 * full_w)), full_w - size)
    return full_h, full_w, top, left


def _nearest_index(n_in: int, n_out: int) -> np.ndarray:
    # Output pixel o samples the source pixel containing its centre, as PIL's NEAREST does.
    idx = ((np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out)).astype(np.int64)
    return np.minimum(idx, n_in - 1)


def _resize_channel_float(plane: np.ndarray, full_h: int, full_w: int, resample: str) -> np.ndarray:
    img = Image.fromarray(np.ascontiguousarray(plane, dtype=np.float32), mode="F")
    return np.asarray(img.resize((full_w, full_h), _RESAMPLE[resample]), dtype=np.float32)


def _resize(array: np.ndarray, full_h: int, full_w: int, resample: str) -> np.ndarray:
    """Whole-frame resize to ``full_h x full_w``, keeping dtype and channel layout."""
    if array.shape[:2] == (full_h, full_w):
        return array
    if resample == "nearest":
        # Exact source values only: depth and validity masks must never be blended.
        return array[_nearest_index(array.shape[0], full_h)[:, None], _nearest_index(array.shape[1], full_w)[None, :]]
    if array.dtype == np.bool_:
        raise ValueError(f"a boolean mask can only be resampled with 'nearest', not {resample!r}")
    if array.dtype == np.uint8 and (array.ndim == 2 or array.shape[2] == 3):
        # PIL's own 8-bit path: the one the reference used, so RGB stays bit-identical.
        return np.asarray(Image.fromarray(array).resize((full_w, full_h), _RESAMPLE[resample]))
    planes = array[..., None] if array.ndim == 2 else array
    if array.dtype == np.uint8:
        # Other channel counts one plane at a time: PIL would treat 4 channels as RGBA and
        # premultiply by the 4th, changing the others.
        return np.stack(
            [
                np.asarray(
                    Image.fromarray(np.ascontiguousarray(planes[..., c])).resize((full_w, full_h), _RESAMPLE[resample])
                )
                for c in range(planes.shape[2])
            ],
            axis=-1,
        )
    out = np.stack(
        [_resize_channel_float(planes[..., c], full_h, full_w, resample) for c in range(planes.shape[2])], axis=-1
    )
    out = out[..., 0] if array.ndim == 2 else out
    if np.issubdtype(array.dtype, np.integer):
        info = np.iinfo(array.dtype)
        return np.clip(np.rint(out), info.min, info.max).astype(array.dtype)
    return out.astype(array.dtype, copy=False)


def apply_crop(array: np.ndarray, box: CropBox, size: int, resample: str = "bicubic") -> np.ndarray:
    """Cut ``box`` out of ``array`` (``[H,W]`` or ``[H,W,C]``; uint8, other ints, float or bool)
    and resize it to ``[size,size]`` / ``[size,size,C]`` with ``resample`` ("bicubic",
    "bilinear", "nearest"), mirrored left-right when ``box.flip``.

    Returns a new contiguous array of the input's dtype; the input is never modified."""
    if resample not in _RESAMPLE:
        raise ValueError(f"resample must be one of {RESAMPLE_MODES}, got {resample!r}")
    array = np.asarray(array)
    if array.ndim not in (2, 3) or array.shape[0] < 1 or array.shape[1] < 1:
        raise ValueError(f"expected an [H,W] or [H,W,C] array, got shape {array.shape}")
    if int(size) < 1:
        raise ValueError(f"crop size must be positive, got {size}")
    full_h, full_w, top, left = crop_grid(box, size)
    out = _resize(array, full_h, full_w, resample)[top : top + size, left : left + size]
    if box.flip:
        out = out[:, ::-1]
    return np.array(out, copy=True, order="C")


def apply_crop_image(img: Image.Image, box: CropBox, size: int, resample: str = "bicubic") -> np.ndarray:
    """``apply_crop`` for a decoded Pillow image (RGB or L): the same pixels, but the full frame is
    resized by Pillow straight from its decoded buffer and only the ``size x size`` crop becomes a
    numpy array. Copying a full frame out of Pillow and back in cost more than the resize itself
    (bench/bench_image_preprocess.py)."""
    if resample not in _RESAMPLE:
        raise ValueError(f"resample must be one of {RESAMPLE_MODES}, got {resample!r}")
    if img.mode not in ("RGB", "L") or resample == "nearest":
        # Other modes, and nearest (computed by index in numpy), take the array path.
        return apply_crop(np.asarray(img), box, size, resample)
    if int(size) < 1:
        raise ValueError(f"crop size must be positive, got {size}")
    full_h, full_w, top, left = crop_grid(box, size)
    if (img.height, img.width) != (full_h, full_w):
        img = img.resize((full_w, full_h), _RESAMPLE[resample])
    out = np.asarray(img.crop((left, top, left + size, top + size)))
    if box.flip:
        out = out[:, ::-1]
    return np.array(out, copy=True, order="C")


def check_same_aspect(name: str, size_hw: tuple[int, int], rgb_hw: tuple[int, int], tolerance: float = 0.01) -> None:
    """A partner map must show the RGB's field of view: same aspect ratio within ``tolerance``
    (relative), any resolution. Otherwise one normalized box would cover different scene parts."""
    h, w = int(size_hw[0]), int(size_hw[1])
    rh, rw = int(rgb_hw[0]), int(rgb_hw[1])
    a, b = w / h, rw / rh
    if abs(a - b) > tolerance * b:
        raise ValueError(
            f"{name} {w}x{h} does not match RGB {rw}x{rh} aspect ({a:.4f} vs {b:.4f}, tolerance "
            f"{tolerance:.0%}): one crop box cannot cover the same scene region in both"
        )
