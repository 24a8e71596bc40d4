import io

import numpy as np
import pytest
from PIL import Image

from preprocess.image import CLIP_MEAN, CLIP_STD, decode_image, image_model_input


@pytest.mark.parametrize("name", ["dog", "car", "bird"])
def test_matches_imagebind_reference(shared_dir, name):
    data = (shared_dir / "samples" / "imagebind" / f"{name}_image.jpg").read_bytes()
    ref = np.load(shared_dir / "reference" / "imagebind" / f"vision_{name}.npy")[0]
    out = image_model_input(data)
    assert out.shape == (3, 224, 224) and out.dtype == np.float32
    assert np.abs(out - ref).max() <= 1e-4


def _reference_steps(img: Image.Image) -> np.ndarray:
    """The reference written out independently: convert, Resize(224) bicubic, CenterCrop(224), norm."""
    img = img.convert("RGB")
    w, h = img.size
    if w <= h:
        nw, nh = 224, int(224 * h / w)
    else:
        nw, nh = int(224 * w / h), 224
    img = img.resize((nw, nh), Image.Resampling.BICUBIC)
    top, left = int(round((nh - 224) / 2.0)), int(round((nw - 224) / 2.0))
    img = img.crop((left, top, left + 224, top + 224))
    x = np.asarray(img, np.float32).transpose(2, 0, 1) / 255.0
    return (x - np.array(CLIP_MEAN, np.float32)[:, None, None]) / np.array(CLIP_STD, np.float32)[:, None, None]


def _encode(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


@pytest.mark.parametrize(
    "mode,size,fmt",
    [
        ("RGB", (300, 499), "PNG"),  # portrait, odd crop offset
        ("RGB", (1001, 301), "JPEG"),  # wide
        ("L", (250, 260), "PNG"),  # grey replicated
        ("RGBA", (320, 240), "PNG"),  # alpha dropped without compositing
        ("LA", (240, 320), "PNG"),
        ("P", (230, 400), "PNG"),
        ("RGB", (100, 60), "PNG"),  # smaller than 224: upscaled
        ("CMYK", (300, 300), "JPEG"),
        ("I;16", (256, 320), "PNG"),
    ],
)
def test_other_modes_and_sizes_follow_reference_semantics(mode, size, fmt):
    rng = np.random.default_rng(0)
    w, h = size
    if mode == "I;16":
        img = Image.fromarray(rng.integers(0, 65535, (h, w), dtype=np.uint16))
    else:
        bands = len(Image.new(mode, (1, 1)).getbands())
        arr = rng.integers(0, 256, (h, w, bands), dtype=np.uint8)
        img = Image.fromarray(arr.squeeze(-1) if bands == 1 else arr, mode=None if mode != "CMYK" else "CMYK")
        if mode == "P":
            img = Image.fromarray(arr[..., 0]).convert("P")
        elif mode in ("RGBA", "LA"):
            img = Image.fromarray(arr, mode)
    data = _encode(img, fmt)
    expected = _reference_steps(Image.open(io.BytesIO(data)))
    out = image_model_input(data)
    assert out.shape == (3, 224, 224)
    assert np.abs(out - expected).max() <= 1e-5


def test_rgba_alpha_is_dropped_not_composited():
    arr = np.zeros((240, 240, 4), np.uint8)
    arr[..., 0] = 200  # red colour under fully transparent alpha
    rgb = decode_image(_encode(Image.fromarray(arr, "RGBA"), "PNG"))
    assert rgb.shape == (240, 240, 3) and (rgb[..., 0] == 200).all()


def test_corrupt_and_truncated_images_raise_clear_errors():
    good = _encode(Image.fromarray(np.full((64, 64, 3), 128, np.uint8)), "JPEG")
    with pytest.raises(ValueError, match="not a decodable image"):
        decode_image(good[: len(good) // 2])
    with pytest.raises(ValueError, match="not a decodable image"):
        decode_image(b"this is not a jpeg")
