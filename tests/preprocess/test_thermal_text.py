import io

import numpy as np
import pytest
from PIL import Image

from preprocess.crops import center_crop_box
from preprocess.image import crop_rgb, decode_image
from preprocess.text import tokenize
from preprocess.thermal import ThermalConfig, crop_thermal, decode_thermal, thermal_model_input


def test_llvip_infrared_is_single_channel_unit_range(shared_dir):
    data = (shared_dir / "samples" / "llvip" / "infrared" / "190001.jpg").read_bytes()
    t = decode_thermal(data)
    assert t.shape == (1024, 1280) and t.dtype == np.float32
    assert 0.0 <= t.min() and t.max() <= 1.0 and t.max() - t.min() > 0.3
    out = thermal_model_input(data, rgb_size=(1024, 1280))
    assert out.shape == (1, 224, 224)


def test_thermal_and_visible_share_the_crop(shared_dir):
    vis = decode_image((shared_dir / "samples" / "llvip" / "visible" / "010002.jpg").read_bytes())
    ir = decode_thermal((shared_dir / "samples" / "llvip" / "infrared" / "010002.jpg").read_bytes())
    box = center_crop_box(*vis.shape[:2])
    rgb = crop_rgb(vis, box).astype(np.float32).mean(0)
    th = crop_thermal(ir, box)[0]
    # Registered pairs: edges of the scene line up, so the gradients correlate after the same crop.
    g1, g2 = np.gradient(rgb)[1].ravel(), np.gradient(th)[1].ravel()
    shifted = np.corrcoef(np.abs(g1[:-8]), np.abs(g2[8:]))[0, 1]
    aligned = np.corrcoef(np.abs(g1), np.abs(g2))[0, 1]
    assert aligned > shifted


def test_sixteen_bit_and_percentile_scaling():
    arr = np.linspace(1000, 30000, 64 * 64).reshape(64, 64).astype(np.uint16)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    t = decode_thermal(buf.getvalue())
    assert np.isclose(t.max(), 30000 / 65535, atol=1e-6)
    p = decode_thermal(buf.getvalue(), ThermalConfig(scaling="percentile"))
    assert p.min() == 0.0 and p.max() == 1.0
    with pytest.raises(ValueError, match="empty"):
        decode_thermal(b"")


def test_tokens_match_imagebind_reference(shared_dir):
    ref = np.load(shared_dir / "reference" / "imagebind" / "text_tokens.npy")
    out = tokenize(["A dog.", "A car", "A bird"])
    assert out.dtype == np.int64 and np.array_equal(out, ref)


def test_long_text_keeps_eot_last_and_empty_text():
    long = tokenize(["word " * 200])[0]
    assert long[0] == 49406 and long[-1] == 49407
    empty = tokenize([""])[0]
    assert list(empty[:3]) == [49406, 49407, 0]
