import io

import numpy as np
import pytest
from PIL import Image

from preprocess.depth import (
    DepthConfig,
    crop_depth,
    decode_depth_png,
    depth_model_input,
    depth_to_disparity,
    read_intrinsics,
)
from preprocess.crops import center_crop_box

FX_KV1 = 520.532  # assumed: the SUN sample ships no intrinsics.txt (its README says so)
BASELINE = 0.075


def _png16(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr.astype(np.uint16)).save(buf, "PNG")
    return buf.getvalue()


def test_sun_sample_disparity_matches_independent_computation(shared_dir):
    data = (shared_dir / "samples" / "sunrgbd" / "SUN_depth.png").read_bytes()
    raw = np.asarray(Image.open(io.BytesIO(data))).astype(np.uint16)
    mm = ((raw >> 3) | (raw << 13)).astype(np.float64)  # SUN toolbox bit rotation, done here by hand
    depth_m = decode_depth_png(data, "sunrgbd")
    disparity, valid = depth_to_disparity(depth_m, FX_KV1, BASELINE)
    assert np.isfinite(disparity).all()
    assert np.array_equal(valid, mm > 0)
    assert 0.1 < (~valid).mean() < 0.3  # the sample has ~18% holes
    expected = BASELINE * FX_KV1 / np.clip(mm[mm > 0] / 1000.0, 0.01, 50.0)
    assert np.allclose(disparity[valid], expected, rtol=1e-5)
    assert (disparity[~valid] == 0).all()


def test_model_input_keeps_invalid_pixels_at_zero(shared_dir):
    data = (shared_dir / "samples" / "sunrgbd" / "SUN_depth.png").read_bytes()
    out = depth_model_input(data, "sunrgbd", FX_KV1, BASELINE, rgb_size=(480, 640))
    assert out.shape == (1, 224, 224) and np.isfinite(out).all()
    disparity, valid = depth_to_disparity(decode_depth_png(data), FX_KV1, BASELINE)
    d, v = crop_depth(disparity, valid, center_crop_box(480, 640))
    assert np.array_equal(out[~v], np.zeros((~v).sum(), np.float32))
    # nearest resampling: every stored value is one of the source disparities
    assert np.isin(out[v], disparity[valid]).all()


def test_bit_rotation_roundtrip():
    mm = np.array([[0, 1, 700, 8191, 9870]], np.uint16)
    stored = ((mm << 3) | (mm >> 13)).astype(np.uint16)
    assert np.allclose(decode_depth_png(_png16(stored), "sunrgbd"), mm / 1000.0)
    assert np.allclose(decode_depth_png(_png16(mm), "millimetres"), mm / 1000.0)


def test_bad_depth_inputs_raise_named_errors():
    with pytest.raises(ValueError, match="empty"):
        decode_depth_png(b"", "sunrgbd")
    buf = io.BytesIO()
    Image.fromarray(np.full((10, 10), 9, np.uint8)).save(buf, "PNG")
    with pytest.raises(ValueError, match="16-bit"):
        decode_depth_png(buf.getvalue(), "sunrgbd")
    with pytest.raises(ValueError, match="no valid pixel"):
        depth_to_disparity(np.zeros((8, 8), np.float32), FX_KV1, BASELINE)
    with pytest.raises(ValueError, match="unknown depth encoding"):
        decode_depth_png(_png16(np.ones((4, 4))), "inches")
    with pytest.raises(ValueError, match="aspect"):
        depth_model_input(_png16(np.full((100, 320), 8000)), "sunrgbd", FX_KV1, BASELINE, rgb_size=(480, 640))


def test_clipping_bounds_disparity():
    depth = np.array([[0.001, 100.0, 2.0]], np.float32)
    d, v = depth_to_disparity(depth, 500.0, 0.1, DepthConfig(min_depth_m=0.01, max_depth_m=50.0))
    assert v.all()
    assert np.allclose(d, [50.0 / 0.01, 50.0 / 50.0, 50.0 / 2.0])


def test_read_intrinsics():
    k = read_intrinsics("529.5 0 365\n0 529.5 265\n0 0 1\n")
    assert k[0, 0] == 529.5 and k.shape == (3, 3)
    with pytest.raises(ValueError, match="9 numbers"):
        read_intrinsics("1 2 3")
