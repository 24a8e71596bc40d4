"""Depth: decoding, disparity with a validity mask that never lets a hole become inf, aligned crops."""

import io

import numpy as np
import pytest
from PIL import Image

from preprocess.crops import center_crop_box
from preprocess.depth import (
    SENSOR_BASELINE_M,
    SENSOR_FX,
    DepthConfig,
    crop_depth,
    decode_depth_png,
    depth_model_input,
    depth_to_disparity,
    normalize_depth,
    read_intrinsics,
)

# The SUN sample ships no intrinsics.txt and no sensor name (its README says so): we assume a
# Kinect v1 frame, fx = 520.532 px, baseline 0.075 m.
FX_KV1 = 520.532
BASELINE_KV1 = 0.075


def _png16(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.asarray(arr).astype(np.uint16)).save(buf, "PNG")
    return buf.getvalue()


def _encode(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def test_sensor_constants():
    assert SENSOR_FX["kv1"] == FX_KV1 and SENSOR_BASELINE_M["kv1"] == BASELINE_KV1
    assert SENSOR_BASELINE_M["realsense"] == SENSOR_BASELINE_M["xtion"] == 0.095


def test_sun_sample_disparity_matches_independent_computation(shared_dir):
    data = (shared_dir / "samples" / "sunrgbd" / "SUN_depth.png").read_bytes()
    raw = np.asarray(Image.open(io.BytesIO(data))).astype(np.uint16)
    assert raw.shape == (480, 640)
    mm = ((raw >> 3) | (raw << 13)).astype(np.float64)  # SUN toolbox bit rotation, done by hand here
    depth_m = decode_depth_png(data, "sunrgbd")
    assert depth_m.dtype == np.float32 and depth_m.shape == (480, 640)
    assert np.array_equal(depth_m, (mm / 1000.0).astype(np.float32))
    assert 9.0 < depth_m.max() < 10.0  # README: max 9.87 m

    disparity, valid = depth_to_disparity(depth_m, FX_KV1, BASELINE_KV1)
    assert disparity.dtype == np.float32 and valid.dtype == bool
    assert np.isfinite(disparity).all()
    assert np.array_equal(valid, raw != 0)  # holes are exactly the zero pixels of the file
    assert 0.17 < (~valid).mean() < 0.19  # README: 18.2% zeros
    assert (disparity[~valid] == 0).all()
    expected = BASELINE_KV1 * FX_KV1 / np.clip(mm[raw != 0] / 1000.0, 0.01, 50.0)
    assert np.allclose(disparity[valid], expected, rtol=1e-6, atol=0)


def test_sun_model_input_is_finite_and_masked(shared_dir):
    data = (shared_dir / "samples" / "sunrgbd" / "SUN_depth.png").read_bytes()
    out = depth_model_input(data, "sunrgbd", FX_KV1, BASELINE_KV1, rgb_size=(480, 640))
    assert out.shape == (1, 224, 224) and out.dtype == np.float32 and np.isfinite(out).all()
    disparity, valid = depth_to_disparity(decode_depth_png(data, "sunrgbd"), FX_KV1, BASELINE_KV1)
    d, v = crop_depth(disparity, valid, center_crop_box(480, 640))
    assert d.shape == v.shape == (1, 224, 224) and d.dtype == np.float32 and v.dtype == bool
    assert 0.05 < (~v).mean() < 0.5
    assert (out[~v] == 0).all() and (d[~v] == 0).all()
    assert (out[v] > 0).all()
    # NEAREST: every stored value is one of the measured disparities, none blended with a hole.
    assert np.isin(out[v], disparity[valid]).all()
    # A half-resolution depth map of the same frame, cropped with the RGB's box, gives nearly the
    # same map (the scene region is the same; only sampling differs).
    half = np.asarray(Image.open(io.BytesIO(data)))[::2, ::2]
    out_half = depth_model_input(_png16(half), "sunrgbd", FX_KV1, BASELINE_KV1, rgb_size=(480, 640))
    both = (out > 0) & (out_half > 0)
    assert both.mean() > 0.6
    assert np.median(np.abs(out[both] - out_half[both]) / out[both]) < 0.02


def test_encodings_roundtrip():
    mm = np.array([[0, 1, 700, 8191, 9870]], np.uint16)
    stored = ((mm << 3) | (mm >> 13)).astype(np.uint16)  # what the SUN toolbox writes
    assert np.array_equal(decode_depth_png(_png16(stored), "sunrgbd"), (mm / 1000.0).astype(np.float32))
    assert np.array_equal(decode_depth_png(_png16(mm), "millimetres"), (mm / 1000.0).astype(np.float32))
    metres = np.array([[0.0, 0.5, 2.25, 60.0]], np.float32)
    assert np.array_equal(decode_depth_png(_encode(Image.fromarray(metres, "F"), "TIFF"), "metres"), metres)


def test_bad_depth_files_raise_named_errors():
    with pytest.raises(ValueError, match="empty"):
        decode_depth_png(b"", "sunrgbd")
    eight_bit = _encode(Image.fromarray(np.full((10, 10), 9, np.uint8)), "PNG")
    with pytest.raises(ValueError, match="16-bit"):
        decode_depth_png(eight_bit, "sunrgbd")
    with pytest.raises(ValueError, match="16-bit"):
        decode_depth_png(_encode(Image.fromarray(np.zeros((10, 10, 3), np.uint8)), "PNG"), "millimetres")
    with pytest.raises(ValueError, match="16-bit"):
        decode_depth_png(_encode(Image.fromarray(np.ones((10, 10), np.float32), "F"), "TIFF"), "sunrgbd")
    with pytest.raises(ValueError, match="float image"):
        decode_depth_png(_png16(np.ones((4, 4))), "metres")
    with pytest.raises(ValueError, match="not a decodable depth image"):
        decode_depth_png(b"not a png at all", "sunrgbd")
    truncated = _png16(np.random.default_rng(0).integers(0, 65535, (64, 64)))
    with pytest.raises(ValueError, match="not a decodable depth image"):
        decode_depth_png(truncated[: len(truncated) // 2], "sunrgbd")
    with pytest.raises(ValueError, match="unknown depth encoding"):
        decode_depth_png(_png16(np.ones((4, 4))), "inches")


def test_all_missing_depth_is_a_bad_sample():
    with pytest.raises(ValueError, match="no valid pixel"):
        depth_to_disparity(np.zeros((8, 8), np.float32), FX_KV1, BASELINE_KV1)
    with pytest.raises(ValueError, match="no valid pixel"):
        depth_model_input(_png16(np.zeros((48, 64))), "sunrgbd", FX_KV1, BASELINE_KV1)
    with pytest.raises(ValueError, match="positive"):
        depth_to_disparity(np.ones((8, 8), np.float32), 0.0, BASELINE_KV1)


def test_depth_must_match_rgb_aspect_not_resolution():
    depth = np.full((240, 320), 8000, np.uint16)  # SUN-rotated 1000 mm
    out = depth_model_input(_png16(depth), "sunrgbd", FX_KV1, BASELINE_KV1, rgb_size=(480, 640))
    assert out.shape == (1, 224, 224) and np.allclose(out, BASELINE_KV1 * FX_KV1 / 1.0)
    with pytest.raises(ValueError, match="depth 320x100 does not match RGB 640x480 aspect"):
        depth_model_input(_png16(np.full((100, 320), 8000)), "sunrgbd", FX_KV1, BASELINE_KV1, rgb_size=(480, 640))


def test_clipping_bounds_disparity_and_odd_values_are_invalid():
    depth = np.array([[0.001, 100.0, 2.0, 0.0, -1.0, np.nan, np.inf]], np.float32)
    before = depth.copy()
    d, v = depth_to_disparity(depth, 500.0, 0.1, DepthConfig(min_depth_m=0.01, max_depth_m=50.0))
    assert np.array_equal(depth, before, equal_nan=True)
    assert v.tolist() == [[True, True, True, False, False, False, False]]
    assert np.allclose(d[0, :3], [50.0 / 0.01, 50.0 / 50.0, 50.0 / 2.0])
    assert (d[0, 3:] == 0).all() and np.isfinite(d).all()


def test_normalize_keeps_invalid_at_zero():
    d = np.array([[[10.0, 0.0], [20.0, 0.0]]], np.float16)
    v = np.array([[[True, False], [True, False]]])
    out = normalize_depth(d, v, DepthConfig(mean=15.0, std=5.0))
    assert out.dtype == np.float32 and out.tolist() == [[[-1.0, 0.0], [1.0, 0.0]]]
    assert np.array_equal(normalize_depth(d, v), np.where(v, d, 0).astype(np.float32))  # identity default
    with pytest.raises(ValueError, match="min_depth_m"):
        DepthConfig(min_depth_m=5.0, max_depth_m=1.0)


def test_crop_depth_rejects_mismatched_mask():
    with pytest.raises(ValueError, match="same"):
        crop_depth(np.ones((10, 10), np.float32), np.ones((10, 12), bool), center_crop_box(10, 10))


def test_read_intrinsics():
    k = read_intrinsics("529.5 0 365\n0 529.5 265\n0 0 1\n")
    assert k.shape == (3, 3) and k[0, 0] == 529.5 and k[1, 2] == 265
    with pytest.raises(ValueError, match="9 numbers"):
        read_intrinsics("1 2 3")
    with pytest.raises(ValueError, match="not numbers"):
        read_intrinsics("fx 0 0 0 1 0 0 0 1")
    with pytest.raises(ValueError, match="positive"):
        read_intrinsics("0 0 0 0 1 0 0 0 1")
