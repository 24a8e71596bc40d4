"""Image path: bit-exact ImageBind parity on real files, reference semantics on generated ones."""

import io

import numpy as np
import pytest
from PIL import Image

from preprocess.crops import CropBox, center_crop_box
from preprocess.image import (
    CLIP_MEAN,
    CLIP_STD,
    ImageConfig,
    crop_rgb,
    decode_image,
    image_model_input,
    normalize_rgb,
)


@pytest.mark.parametrize("name", ["dog", "car", "bird"])
def test_matches_imagebind_reference(shared_dir, name):
    data = (shared_dir / "samples" / "imagebind" / f"{name}_image.jpg").read_bytes()
    ref = np.load(shared_dir / "reference" / "imagebind" / f"vision_{name}.npy")
    assert ref.shape == (1, 3, 224, 224)
    out = image_model_input(data)
    assert out.shape == (3, 224, 224) and out.dtype == np.float32
    assert np.abs(out - ref[0]).max() <= 1e-4
    assert np.array_equal(out, ref[0])  # same PIL ops in the same order: exact, not just close


def _reference_steps(data: bytes) -> np.ndarray:
    """The reference written out independently with plain PIL: open, convert("RGB"), resize the
    short side to 224 (bicubic, long side truncated), centre crop with round-half-even offsets,
    ToTensor, normalize."""
    img = Image.open(io.BytesIO(data)).convert("RGB")
    w, h = img.size
    nw, nh = (224, int(224 * h / w)) if w <= h else (int(224 * w / h), 224)
    img = img.resize((nw, nh), Image.Resampling.BICUBIC)
    top, left = int(round((nh - 224) / 2.0)), int(round((nw - 224) / 2.0))
    img = img.crop((left, top, left + 224, top + 224))
    x = np.asarray(img, np.float32).transpose(2, 0, 1) / np.float32(255.0)
    return (x - np.array(CLIP_MEAN, np.float32)[:, None, None]) / np.array(CLIP_STD, np.float32)[:, None, None]


def _torchvision_steps(data: bytes) -> np.ndarray:
    """The reference's own transform objects (torchvision Resize/CenterCrop/ToTensor/Normalize)."""
    from torchvision import transforms as T

    tf = T.Compose(
        [
            T.Resize(224, interpolation=T.InterpolationMode.BICUBIC),
            T.CenterCrop(224),
            T.ToTensor(),
            T.Normalize(mean=CLIP_MEAN, std=CLIP_STD),
        ]
    )
    return tf(Image.open(io.BytesIO(data)).convert("RGB")).numpy()


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _generated(mode: str, w: int, h: int, fmt: str) -> bytes:
    rng = np.random.default_rng(w * 7919 + h)
    # Smooth-ish content (a gradient plus noise) so resampling differences would show.
    base = (np.add.outer(np.arange(h), np.arange(w)) * 255 // max(1, h + w - 2)).astype(np.int64)
    noise = rng.integers(0, 64, (h, w, 4))
    arr = np.clip(base[..., None] + noise - 32, 0, 255).astype(np.uint8)
    if mode == "RGB":
        img = Image.fromarray(arr[..., :3])
    elif mode in ("RGBA", "LA"):
        arr[..., -1] = rng.integers(0, 256, (h, w))  # random alpha: must be ignored
        img = Image.fromarray(arr[..., :4] if mode == "RGBA" else arr[..., [0, 3]], mode)
    elif mode == "L":
        img = Image.fromarray(arr[..., 0])
    elif mode == "P":
        img = Image.fromarray(arr[..., :3]).convert("P")
    elif mode == "P_transparent":
        img = Image.fromarray(arr[..., :3]).convert("P")
        img.info["transparency"] = 5  # a palette entry marked transparent: convert("RGB") keeps its colour
    elif mode == "CMYK":
        img = Image.fromarray(arr, "CMYK")
    elif mode == "I;16":
        img = Image.fromarray((arr[..., 0].astype(np.uint16) * 257) // 300)  # mostly < 256, some clipped
    elif mode == "1":
        img = Image.fromarray(arr[..., 0] > 127)
    else:
        raise AssertionError(mode)
    return _encode(img, fmt)


@pytest.mark.parametrize(
    "mode,size,fmt",
    [
        ("RGB", (640, 855), "PNG"),  # portrait, offset 37.5 -> 38 (half to even)
        ("RGB", (300, 499), "PNG"),  # portrait
        ("RGB", (1001, 301), "JPEG"),  # wide landscape
        ("RGB", (450, 225), "BMP"),  # resized long side 448: even offset 112
        ("RGB", (224, 224), "PNG"),  # already the target size
        ("RGB", (225, 224), "PNG"),  # offset round(0.5) = 0
        ("RGB", (227, 224), "PNG"),  # offset round(1.5) = 2
        ("RGB", (100, 60), "PNG"),  # smaller than 224: upscaled
        ("RGB", (1, 1), "PNG"),  # a single pixel
        ("RGB", (5, 3), "GIF"),
        ("L", (250, 260), "PNG"),  # grey replicated to 3 channels
        ("L", (80, 2000), "JPEG"),  # very tall
        ("RGBA", (320, 240), "PNG"),  # alpha dropped without compositing
        ("LA", (240, 320), "PNG"),
        ("P", (230, 400), "PNG"),
        ("P_transparent", (300, 200), "PNG"),
        ("CMYK", (300, 300), "JPEG"),
        ("I;16", (256, 320), "PNG"),  # 16-bit grey: Pillow's clipping conversion, as the reference
        ("1", (333, 222), "PNG"),  # bilevel
    ],
)
def test_generated_images_follow_reference_semantics(mode, size, fmt):
    data = _generated(mode, *size, fmt)
    out = image_model_input(data)
    assert out.shape == (3, 224, 224) and out.dtype == np.float32
    assert np.abs(out - _reference_steps(data)).max() <= 1e-6
    assert np.abs(out - _torchvision_steps(data)).max() <= 1e-6


def test_alpha_is_dropped_not_composited():
    arr = np.zeros((240, 240, 4), np.uint8)
    arr[..., 0] = 200  # red under a fully transparent alpha: compositing on white/black would change it
    rgb = decode_image(_encode(Image.fromarray(arr, "RGBA"), "PNG"))
    assert rgb.shape == (240, 240, 3) and rgb.dtype == np.uint8
    assert (rgb[..., 0] == 200).all() and (rgb[..., 1:] == 0).all()


def test_grey_is_replicated_and_exif_orientation_is_not_applied():
    grey = np.tile(np.arange(300, dtype=np.uint8)[None, :] % 251, (200, 1))
    img = Image.fromarray(grey)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW" orientation tag: the reference ignores it, so must we
    rgb = decode_image(_encode(img, "JPEG", exif=exif, quality=100))
    assert rgb.shape == (200, 300, 3)
    assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_images_raise_clear_errors(fmt):
    arr = np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    good = _encode(Image.fromarray(arr), fmt)
    assert decode_image(good).shape == (128, 128, 3)
    with pytest.raises(ValueError, match="not a decodable image"):
        decode_image(good[: len(good) * 2 // 3])


def test_garbage_and_empty_data_raise_clear_errors():
    with pytest.raises(ValueError, match="not a decodable image"):
        decode_image(b"this is not a jpeg")
    with pytest.raises(ValueError, match="not a decodable image: empty"):
        decode_image(b"")
    with pytest.raises(ValueError, match="not a decodable image"):
        image_model_input(b"\xff\xd8\xff\xe0" + b"\x00" * 100)  # a JPEG header and nothing else


def test_stored_crop_then_normalize_is_the_model_input():
    data = _generated("RGB", 400, 300, "PNG")
    rgb = decode_image(data)
    before = rgb.copy()
    stored = crop_rgb(rgb, center_crop_box(*rgb.shape[:2]))
    assert np.array_equal(rgb, before)  # input untouched
    assert stored.shape == (3, 224, 224) and stored.dtype == np.uint8
    assert np.array_equal(normalize_rgb(stored), image_model_input(data))
    # Batched stored pixels normalize the same as one at a time.
    batch = np.stack([stored, stored[:, ::-1]])
    assert np.array_equal(normalize_rgb(batch)[1], normalize_rgb(np.ascontiguousarray(stored[:, ::-1])))


def test_random_box_crop_and_config_are_respected():
    rgb = decode_image(_generated("RGB", 640, 480, "PNG"))
    cfg = ImageConfig(size=96)
    box = CropBox(0.25, 0.5, 0.75, 1.0, flip=True)
    stored = crop_rgb(rgb, box, cfg)
    assert stored.shape == (3, 96, 96)
    plain = crop_rgb(rgb, CropBox(0.25, 0.5, 0.75, 1.0), cfg)
    assert np.array_equal(stored, plain[:, :, ::-1])
    assert normalize_rgb(stored, ImageConfig(mean=(0.0,) * 3, std=(1.0,) * 3)).max() <= 1.0
    with pytest.raises(ValueError, match="uint8"):
        crop_rgb(rgb.astype(np.float32), box, cfg)
    with pytest.raises(ValueError, match="resample"):
        ImageConfig(resample="lanczos")
