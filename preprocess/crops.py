"""Crop boxes shared by every spatial modality of a sample.

A ``CropBox`` lives in normalized source coordinates (fractions of the frame), so one box drawn on the
RGB frame applies to a depth or thermal map of another resolution. ``apply_crop`` resizes the whole
frame to the size at which the box spans exactly ``size`` pixels, then cuts integer offsets: every
modality lands on the same pixel grid, and for the eval box this is exactly ImageBind's
``Resize(224)`` then ``CenterCrop(224)`` (bit-identical for RGB).

Randomness is drawn first (``random_resized_crop_box(rng, ...)``) and applied deterministically after,
as torchvision v2 separates ``make_params`` from the kernels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR,
             "nearest": Image.Resampling.NEAREST}


@dataclass(frozen=True)
class CropBox:
    """Region of the source frame: ``[y0, y1) x [x0, x1)`` as fractions in [0, 1], then ``flip``."""

    y0: float
    x0: float
    y1: float
    x1: float
    flip: bool = False

    def __post_init__(self) -> None:
        if not (0.0 <= self.y0 < self.y1 <= 1.0 + 1e-9 and 0.0 <= self.x0 < self.x1 <= 1.0 + 1e-9):
            raise ValueError(f"invalid crop box {self}")


def resized_size(height: int, width: int, size: int) -> tuple[int, int]:
    """Reference ``Resize(size)``: short side to ``size``, long side ``int(size * long / short)``."""
    if height <= width:
        return size, int(size * width / height)
    return int(size * height / width), size


def center_crop_box(height: int, width: int, size: int = 224) -> CropBox:
    """The eval box: short side resized to ``size``, centre ``size`` square with the reference's
    offsets ``int(round((dim - size) / 2))`` (Python rounds halves to even)."""
    rh, rw = resized_size(height, width, size)
    top, left = int(round((rh - size) / 2)), int(round((rw - size) / 2))
    return CropBox(top / rh, left / rw, (top + size) / rh, (left + size) / rw)


def random_resized_crop_box(rng: np.random.Generator, height: int, width: int,
                            scale: tuple[float, float] = (0.08, 1.0),
                            ratio: tuple[float, float] = (3 / 4, 4 / 3),
                            flip_prob: float = 0.5) -> CropBox:
    """torchvision ``RandomResizedCrop`` parameters (area fraction, log-uniform aspect, 10 tries,
    then a centre crop of clamped aspect), drawn from ``rng``, plus a horizontal flip."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    box = None
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
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
    """(full_h, full_w, top, left): the whole-frame size at which the box spans ``size`` pixels and
    the integer offsets of the box in it. Depends on the box only, so every modality agrees."""
    full_h = max(size, int(round(size / (box.y1 - box.y0))))
    full_w = max(size, int(round(size / (box.x1 - box.x0))))
    top = min(int(round(box.y0 * full_h)), full_h - size)
    left = min(int(round(box.x0 * full_w)), full_w - size)
    return full_h, full_w, top, left


def _resize(array: np.ndarray, full_h: int, full_w: int, resample: str) -> np.ndarray:
    if array.shape[:2] == (full_h, full_w):
        return array
    if resample == "nearest":
        # Index mapping, as PIL's NEAREST: exact source values (depth must never be blended).
        rows = np.minimum(((np.arange(full_h) + 0.5) * array.shape[0] / full_h).astype(np.int64), array.shape[0] - 1)
        cols = np.minimum(((np.arange(full_w) + 0.5) * array.shape[1] / full_w).astype(np.int64), array.shape[1] - 1)
        return array[rows[:, None], cols[None, :]]
    if array.dtype == np.uint8:
        return np.asarray(Image.fromarray(array).resize((full_w, full_h), _RESAMPLE[resample]))
    if array.ndim != 2:
        raise ValueError(f"float resize supports single-channel maps, got shape {array.shape}")
    img = Image.fromarray(np.ascontiguousarray(array, dtype=np.float32), mode="F")
    return np.asarray(img.resize((full_w, full_h), _RESAMPLE[resample]))


def apply_crop(array: np.ndarray, box: CropBox, size: int, resample: str = "bicubic") -> np.ndarray:
    """Crop ``box`` out of ``array`` ([H,W] or [H,W,C], uint8 or float) to ``size x size``.

    Returns a new array of the same dtype and channel layout; the input is never modified."""
    if resample not in _RESAMPLE:
        raise ValueError(f"resample must be one of {sorted(_RESAMPLE)}, got {resample!r}")
    full_h, full_w, top, left = crop_grid(box, size)
    out = _resize(array, full_h, full_w, resample)[top : top + size, left : left + size]
    if box.flip:
        out = out[:, ::-1]
    return np.ascontiguousarray(out)


def check_same_aspect(name: str, size_hw: tuple[int, int], rgb_hw: tuple[int, int], tolerance: float = 0.01) -> None:
    """A partner map must show the RGB's field of view: same aspect ratio (resolution may differ)."""
    a = size_hw[1] / size_hw[0]
    b = rgb_hw[1] / rgb_hw[0]
    if abs(a - b) > tolerance * b:
        raise ValueError(
            f"{name} is {size_hw[1]}x{size_hw[0]} but its RGB is {rgb_hw[1]}x{rgb_hw[0]}: "
            "aspect ratios differ, so one crop box cannot cover the same scene in both"
        )
