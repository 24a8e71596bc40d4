"""Thermal: single channel in [0,1], cropped with the visible partner's box, then mean/std."""

import io

import numpy as np
import pytest
from PIL import Image

from preprocess.crops import center_crop_box, random_resized_crop_box
from preprocess.image import crop_rgb, decode_image
from preprocess.thermal import (
    ThermalConfig,
    crop_thermal,
    decode_thermal,
    normalize_thermal,
    thermal_model_input,
)

LLVIP_PAIRS = ["190001", "010002"]


def _encode(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def _gradient_magnitude(x: np.ndarray) -> np.ndarray:
    gy, gx = np.gradient(x.astype(np.float64))
    return np.hypot(gy, gx)


def _best_shift(a: np.ndarray, b: np.ndarray, max_shift: int = 10) -> tuple[int, int]:
    """The (dy, dx) that best lines up b's edges with a's (max correlation of gradient magnitude)."""
    ga, gb = _gradient_magnitude(a), _gradient_magnitude(b)
    m, n = max_shift, a.shape[0]
    core = ga[m : n - m, m : n - m].ravel()
    scores = {
        (dy, dx): np.corrcoef(core, gb[m + dy : n - m + dy, m + dx : n - m + dx].ravel())[0, 1]
        for dy in range(-m, m + 1)
        for dx in range(-m, m + 1)
    }
    return max(scores, key=scores.get)


@pytest.mark.parametrize("name", LLVIP_PAIRS)
def test_llvip_infrared_decodes_to_one_unit_range_channel(shared_dir, name):
    path = shared_dir / "samples" / "llvip" / "infrared" / f"{name}.jpg"
    data = path.read_bytes()
    t = decode_thermal(data)
    assert t.shape == (1024, 1280) and t.dtype == np.float32
    assert 0.0 <= t.min() and t.max() <= 1.0 and t.max() - t.min() > 0.3
    # Three identical channels: the first one, exactly, divided by 255.
    assert np.array_equal(t, np.asarray(Image.open(path))[..., 0].astype(np.float32) / np.float32(255))
    out = thermal_model_input(data, rgb_size=(1024, 1280))
    assert out.shape == (1, 224, 224) and out.dtype == np.float32 and np.isfinite(out).all()
    assert -1.0 <= out.min() and out.max() <= 1.0  # default mean 0.5 / std 0.5 maps [0,1] to [-1,1]
    crop = crop_thermal(t, center_crop_box(1024, 1280))
    assert np.array_equal(out, normalize_thermal(crop))
    assert 0.0 <= crop.min() and crop.max() <= 1.0


@pytest.mark.parametrize("name", LLVIP_PAIRS)
def test_thermal_and_visible_share_the_crop(shared_dir, name):
    """LLVIP pairs are registered, so after the same box the scene edges coincide: the best
    gradient alignment is within 2 output pixels of no shift (pair 010002 carries a residual
    ~4-source-pixel vertical misregistration of its own, 1 px at 224), for the eval box and random
    boxes, also when the infrared frame has another resolution than the visible one. The exact,
    synthetic version of this property is the marker test in test_crops.py."""
    vis = decode_image((shared_dir / "samples" / "llvip" / "visible" / f"{name}.jpg").read_bytes())
    ir_bytes = (shared_dir / "samples" / "llvip" / "infrared" / f"{name}.jpg").read_bytes()
    ir = decode_thermal(ir_bytes)
    ir_img = Image.open(io.BytesIO(ir_bytes)).convert("L").resize((640, 512), Image.Resampling.BILINEAR)
    ir_small = decode_thermal(_encode(ir_img, "PNG"))
    assert ir_small.shape == (512, 640)
    boxes = [center_crop_box(*vis.shape[:2])]
    boxes += [random_resized_crop_box(np.random.default_rng(s), *vis.shape[:2], scale=(0.3, 1.0)) for s in range(3)]
    assert any(b.flip for b in boxes)
    for box in boxes:
        grey = crop_rgb(vis, box).astype(np.float32).mean(0) / 255.0
        for thermal in (ir, ir_small):
            dy, dx = _best_shift(grey, crop_thermal(thermal, box)[0])
            assert abs(dy) <= 2 and abs(dx) <= 2, f"box {box}: thermal best aligned at shift {(dy, dx)}"
    # Sanity of the measure itself: a thermal crop of a shifted box is detected as shifted.
    box = boxes[0]
    shifted = type(box)(box.y0, box.x0 + 8 / 1280 * 4, box.y1, box.x1 + 8 / 1280 * 4)
    grey = crop_rgb(vis, box).astype(np.float32).mean(0) / 255.0
    dy, dx = _best_shift(grey, crop_thermal(ir, shifted)[0])
    assert abs(dx) >= 5  # 32 source px = 7 px at 224


def test_sixteen_bit_and_percentile_scaling():
    arr = np.linspace(1000, 30000, 64 * 64).reshape(64, 64).astype(np.uint16)
    data = _encode(Image.fromarray(arr), "PNG")
    t = decode_thermal(data)
    assert t.dtype == np.float32 and np.isclose(t.max(), 30000 / 65535, atol=1e-6)
    assert np.allclose(t, arr / 65535.0, atol=1e-7)
    p = decode_thermal(data, ThermalConfig(scaling="percentile"))
    lo, hi = np.percentile(arr, [1, 99])
    assert p.min() == 0.0 and p.max() == 1.0
    assert np.allclose(p, np.clip((arr - lo) / (hi - lo), 0, 1), atol=1e-6)
    wide = decode_thermal(data, ThermalConfig(scaling="percentile", percentiles=(0.0, 100.0)))
    assert np.isclose(wide[0, 0], 0.0) and np.isclose(wide[-1, -1], 1.0)
    # A float (e.g. radiometric Kelvin) TIFF has no fixed range: only percentile scaling reads it.
    kelvin = _encode(Image.fromarray(arr.astype(np.float32) / 100.0, "F"), "TIFF")
    with pytest.raises(ValueError, match="percentile"):
        decode_thermal(kelvin)
    assert np.allclose(decode_thermal(kelvin, ThermalConfig(scaling="percentile")), p, atol=1e-5)


def test_false_colour_uses_luminance_and_palette_is_not_read_as_indices():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (32, 40, 3), dtype=np.uint8)
    t = decode_thermal(_encode(Image.fromarray(rgb), "PNG"))
    assert np.array_equal(t, np.asarray(Image.fromarray(rgb).convert("L"), np.float32) / np.float32(255))
    grey = np.tile(np.arange(0, 256, 8, dtype=np.uint8), (8, 1))
    pal = Image.fromarray(grey).convert("P")
    assert np.allclose(decode_thermal(_encode(pal, "PNG")), grey / 255.0, atol=1 / 255)


def test_bad_thermal_inputs_raise_named_errors():
    with pytest.raises(ValueError, match="empty"):
        decode_thermal(b"")
    with pytest.raises(ValueError, match="not a decodable thermal image"):
        decode_thermal(b"GIF89a garbage")
    with pytest.raises(ValueError, match="thermal 1280x1024 does not match RGB 640x480 aspect"):
        thermal_model_input(_encode(Image.new("L", (1280, 1024), 90), "PNG"), rgb_size=(480, 640))
    with pytest.raises(ValueError, match="scaling"):
        ThermalConfig(scaling="minmax")
    with pytest.raises(ValueError, match="single-channel"):
        crop_thermal(np.zeros((10, 10, 3), np.float32), center_crop_box(10, 10))


def test_crop_clips_bicubic_overshoot_and_config_normalizes():
    hot = np.zeros((100, 100), np.float32)
    hot[40:60, 40:60] = 1.0  # hard hot edge: bicubic overshoots above 1 and below 0
    crop = crop_thermal(hot, center_crop_box(100, 100))
    assert crop.shape == (1, 224, 224) and crop.min() == 0.0 and crop.max() == 1.0
    out = normalize_thermal(crop.astype(np.float16), ThermalConfig(mean=0.25, std=0.5))
    assert out.dtype == np.float32 and np.isclose(out.max(), 1.5) and np.isclose(out.min(), -0.5)
    assert np.array_equal(hot[40:60, 40:60], np.ones((20, 20), np.float32))  # input untouched
