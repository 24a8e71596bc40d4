"""Crop boxes: one box per sample must land every spatial modality on the same output pixels."""

import math
from functools import lru_cache

import numpy as np
import pytest
from PIL import Image

from preprocess.crops import (
    CropBox,
    apply_crop,
    center_crop_box,
    check_same_aspect,
    crop_grid,
    random_resized_crop_box,
    resized_size,
)

# The marker is a normalized rectangle on a 1/120 x 1/160 grid, so it covers whole pixels at every
# resolution used here (480x640 RGB; 240x320, 600x800, 960x1280 partners) and its normalized centre
# is the same in all of them: any offset measured below comes from the crop, not the test pattern.
MARK_ROWS = (51 / 120, 52 / 120)
MARK_COLS = (91 / 160, 92 / 160)
MARK_V = sum(MARK_ROWS) / 2
MARK_U = sum(MARK_COLS) / 2


def _marked(h: int, w: int, dtype, value) -> np.ndarray:
    out = np.zeros((h, w), dtype)
    r0, r1 = round(MARK_ROWS[0] * h), round(MARK_ROWS[1] * h)
    c0, c1 = round(MARK_COLS[0] * w), round(MARK_COLS[1] * w)
    assert (r0, r1) == (MARK_ROWS[0] * h, MARK_ROWS[1] * h), "marker must cover whole pixels"
    out[r0:r1, c0:c1] = value
    return out


def _centroid(a: np.ndarray, marker_value: float) -> np.ndarray | None:
    """Centroid of the bright core (above half the peak; bicubic ringing is excluded), or None
    when no marker is in view."""
    a = a.astype(np.float64)
    if a.max() <= 0.05 * marker_value:
        return None
    w = np.where(a >= 0.5 * a.max(), a, 0.0)
    ys, xs = np.indices(a.shape)
    return np.array([(ys * w).sum() / w.sum(), (xs * w).sum() / w.sum()])


def _expected(box: CropBox, size: int) -> np.ndarray:
    """Where the marker centre must land, from the box geometry alone (pixel-index coordinates)."""
    y = (MARK_V - box.y0) / (box.y1 - box.y0) * size - 0.5
    x = (MARK_U - box.x0) / (box.x1 - box.x0) * size - 0.5
    return np.array([y, size - 1 - x if box.flip else x])


RGB_HW = (480, 640)


@lru_cache(maxsize=None)
def _rgb_centroid(box: CropBox, size: int) -> np.ndarray | None:
    # Shared by the partner-resolution cases: the RGB side does not depend on the partner.
    rgb = np.repeat(_marked(*RGB_HW, np.uint8, 255)[..., None], 3, axis=2)
    return _centroid(apply_crop(rgb, box, size, "bicubic")[..., 0], 255)


@pytest.mark.parametrize("partner_hw", [(240, 320), (600, 800), (960, 1280)])
def test_marker_lands_on_the_same_output_pixel_in_rgb_depth_and_thermal(partner_hw):
    size = 224
    depth = _marked(*partner_hw, np.float32, 3.5)  # a disparity value: NEAREST, like crop_depth
    thermal = _marked(*partner_hw, np.float32, 1.0)  # bicubic on float, like crop_thermal
    boxes = [
        center_crop_box(*RGB_HW, size),
        CropBox(*[getattr(center_crop_box(*RGB_HW), k) for k in ("y0", "x0", "y1", "x1")], flip=True),
    ]
    boxes += [random_resized_crop_box(np.random.default_rng(seed), *RGB_HW) for seed in range(200)]
    checked = flips = absent = 0
    for n, box in enumerate(boxes):
        want = _expected(box, size)
        got_rgb = _rgb_centroid(box, size)
        got_depth = _centroid(apply_crop(depth, box, size, "nearest"), 3.5)
        got_thermal = _centroid(apply_crop(thermal, box, size, "bicubic"), 1.0)
        inside = (want >= 4).all() and (want <= size - 5).all()
        outside = (want < -8).any() or (want > size + 7).any()
        if inside:
            for name, got in (("rgb", got_rgb), ("depth", got_depth), ("thermal", got_thermal)):
                assert got is not None, f"box {n} {box}: marker missing in {name}"
                assert np.abs(got - want).max() <= 1.5, f"box {n} {box}: {name} at {got}, expected {want}"
            assert np.abs(got_rgb - got_depth).max() <= 1.0, f"box {n} {box}: rgb {got_rgb} depth {got_depth}"
            assert np.abs(got_rgb - got_thermal).max() <= 1.0, f"box {n} {box}: rgb {got_rgb} thermal {got_thermal}"
            checked += 1
            flips += box.flip
        elif outside:
            assert got_rgb is None and got_depth is None and got_thermal is None, (
                f"box {n}: marker outside the crop yet visible"
            )
            absent += 1
    # The property was exercised broadly: both flip states and both visible and cropped-away markers.
    assert checked >= 60 and 20 <= flips <= checked - 20 and absent >= 10, (checked, flips, absent)


def test_center_box_reproduces_resize_then_center_crop_arithmetic():
    # bird: 640x855 -> 224x299, top offset round(37.5) = 38 (half to even); dog: 640x848 -> 224x296.
    bird = center_crop_box(855, 640)
    assert crop_grid(bird, 224) == (299, 224, 38, 0)
    assert bird.y0 == 38 / 299 and bird.x0 == 0.0 and not bird.flip
    assert crop_grid(center_crop_box(848, 640), 224) == (296, 224, 36, 0)
    assert crop_grid(center_crop_box(360, 640), 224) == (224, 398, 0, 87)
    rng = np.random.default_rng(0)
    sizes = [(1, 1), (1, 5000), (7, 3), (225, 224), (224, 224)] + [tuple(rng.integers(1, 5000, 2)) for _ in range(3000)]
    for h, w in sizes:
        for s in (224, 112, 7):
            short, long = min(h, w), max(h, w)
            rl = int(s * long / short)  # torchvision Resize: long side truncated
            rh, rw = (s, rl) if h <= w else (rl, s)
            assert resized_size(h, w, s) == (rh, rw)
            assert crop_grid(center_crop_box(h, w, s), s) == (
                rh,
                rw,
                int(round((rh - s) / 2)),
                int(round((rw - s) / 2)),
            ), (h, w, s)


@pytest.mark.parametrize("seed", range(25))
def test_center_crop_is_bit_identical_to_pil_resize_then_crop(seed):
    rng = np.random.default_rng(seed)
    h, w = (int(v) for v in rng.integers(20, 700, 2))
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    rh, rw = (224, int(224 * w / h)) if h <= w else (int(224 * h / w), 224)
    top, left = int(round((rh - 224) / 2.0)), int(round((rw - 224) / 2.0))
    expected = np.asarray(Image.fromarray(rgb).resize((rw, rh), Image.Resampling.BICUBIC))[
        top : top + 224, left : left + 224
    ]
    assert np.array_equal(apply_crop(rgb, center_crop_box(h, w), 224, "bicubic"), expected)


def test_random_boxes_follow_random_resized_crop_rules():
    h, w = 300, 500
    assert random_resized_crop_box(np.random.default_rng(7), h, w) == random_resized_crop_box(
        np.random.default_rng(7), h, w
    )
    boxes = [random_resized_crop_box(np.random.default_rng(s), h, w) for s in range(400)]
    assert len(set(boxes)) > 390
    flips = sum(b.flip for b in boxes)
    assert 140 < flips < 260
    for b in boxes:
        ph, pw = (b.y1 - b.y0) * h, (b.x1 - b.x0) * w
        # Integer pixel boxes inside the frame, area and aspect within the (rounded) ranges.
        assert abs(ph - round(ph)) < 1e-6 and abs(pw - round(pw)) < 1e-6
        assert 0 <= b.y0 and b.y1 <= 1 + 1e-9 and 0 <= b.x0 and b.x1 <= 1 + 1e-9
        assert 0.08 * h * w * 0.9 <= ph * pw <= h * w
        assert 3 / 4 * 0.9 <= pw / ph <= 4 / 3 * 1.1
    assert min((b.y1 - b.y0) * (b.x1 - b.x0) for b in boxes) < 0.15
    # scale=(1,1) on a 4:3 frame: only the full frame fits.
    full = random_resized_crop_box(np.random.default_rng(1), 480, 640, scale=(1.0, 1.0), flip_prob=0.0)
    assert (full.y0, full.x0, full.y1, full.x1, full.flip) == (0.0, 0.0, 1.0, 1.0, False)


def test_random_box_falls_back_to_a_centred_clamped_box():
    # 10x1000: no 3/4..4/3 box of >= 8% area fits in 10 rows, so after 10 tries the fallback is a
    # centred box of height 10 and width round(10 * 4/3) = 13.
    box = random_resized_crop_box(np.random.default_rng(3), 10, 1000, flip_prob=0.0)
    assert (box.y0, box.y1) == (0.0, 1.0)
    assert math.isclose(box.x0, (1000 - 13) // 2 / 1000) and math.isclose(box.x1 - box.x0, 13 / 1000)
    tall = random_resized_crop_box(np.random.default_rng(3), 1000, 10, flip_prob=0.0)
    assert (tall.x0, tall.x1) == (0.0, 1.0) and math.isclose(tall.y1 - tall.y0, round(10 / 0.75) / 1000)


def test_flip_mirrors_columns_only():
    img = np.random.default_rng(0).random((120, 160)).astype(np.float32)
    box = CropBox(0.1, 0.2, 0.9, 0.8)
    plain = apply_crop(img, box, 64, "bilinear")
    flipped = apply_crop(img, CropBox(box.y0, box.x0, box.y1, box.x1, flip=True), 64, "bilinear")
    assert np.array_equal(flipped, plain[:, ::-1])


def test_apply_crop_keeps_dtype_layout_and_never_modifies_input():
    rng = np.random.default_rng(0)
    box = CropBox(0.1, 0.2, 0.9, 0.7, True)
    for arr, resample in [
        (rng.random((100, 150)).astype(np.float32), "bicubic"),
        (rng.random((100, 150, 2)).astype(np.float32), "bilinear"),
        (rng.integers(0, 65535, (100, 150), dtype=np.uint16), "bicubic"),
        (rng.integers(0, 256, (100, 150, 3), dtype=np.uint8), "bicubic"),
        (rng.integers(0, 256, (100, 150, 1), dtype=np.uint8), "bilinear"),
        (rng.random((100, 150)) > 0.5, "nearest"),
    ]:
        before = arr.copy()
        out = apply_crop(arr, box, 48, resample)
        assert np.array_equal(arr, before)
        assert out.dtype == arr.dtype and out.shape == (48, 48) + arr.shape[2:]
        assert out.flags.c_contiguous
    # Channels are resampled independently (a 4th uint8 channel is not treated as alpha).
    two = rng.random((100, 150, 2)).astype(np.float32)
    out = apply_crop(two, box, 48, "bicubic")
    assert np.array_equal(out[..., 1], apply_crop(two[..., 1], box, 48, "bicubic"))
    four = rng.integers(0, 256, (100, 150, 4), dtype=np.uint8)
    four[..., 3] = 0
    out = apply_crop(four, box, 48, "bicubic")
    assert out.shape == (48, 48, 4) and np.array_equal(out[..., :3], apply_crop(four[..., :3], box, 48, "bicubic"))


def test_nearest_returns_only_source_values():
    src = np.arange(30 * 40, dtype=np.float32).reshape(30, 40)
    out = apply_crop(src, CropBox(0.05, 0.1, 0.7, 0.95), 224, "nearest")
    assert np.isin(out, src).all()
    # Upscaling by an integer factor repeats each source pixel.
    box = CropBox(0.0, 0.0, 1.0, 1.0)
    small = np.arange(4, dtype=np.float32).reshape(2, 2)
    assert np.array_equal(apply_crop(small, box, 4, "nearest"), np.kron(small, np.ones((2, 2), np.float32)))


def test_invalid_boxes_and_arguments_raise():
    for coords in [(0.5, 0.0, 0.4, 1.0), (0.0, 0.0, 1.2, 1.0), (-0.1, 0.0, 0.5, 0.5), (0.0, float("nan"), 1.0, 1.0)]:
        with pytest.raises(ValueError, match="invalid crop box"):
            CropBox(*coords)
    with pytest.raises(ValueError, match="resample"):
        apply_crop(np.zeros((10, 10), np.float32), CropBox(0, 0, 1, 1), 8, "lanczos")
    with pytest.raises(ValueError, match="nearest"):
        apply_crop(np.zeros((10, 10), bool), CropBox(0, 0, 1, 1), 8, "bicubic")
    with pytest.raises(ValueError, match="shape"):
        apply_crop(np.zeros(10, np.float32), CropBox(0, 0, 1, 1), 8)
    with pytest.raises(ValueError, match="scale"):
        random_resized_crop_box(np.random.default_rng(0), 10, 10, scale=(0.9, 0.1))
    with pytest.raises(ValueError, match="1x1"):
        center_crop_box(0, 10)


def test_partner_aspect_must_match_rgb_within_one_percent():
    check_same_aspect("depth", (240, 320), (480, 640))  # lower resolution, same field of view
    check_same_aspect("depth", (478, 640), (480, 640))  # 0.4% off: sensor crops of a few rows are fine
    with pytest.raises(ValueError, match="depth 320x100 does not match RGB 640x480 aspect"):
        check_same_aspect("depth", (100, 320), (480, 640))
    with pytest.raises(ValueError, match="thermal 1280x1024 does not match RGB 640x480 aspect"):
        check_same_aspect("thermal", (1024, 1280), (480, 640))


@pytest.mark.parametrize("mode", ["RGB", "L"])
@pytest.mark.parametrize("resample", ["bicubic", "bilinear", "nearest"])
def test_pillow_image_crop_equals_the_array_crop(mode, resample):
    from preprocess.crops import apply_crop_image

    rng = np.random.default_rng(11)
    shape = (301, 457, 3) if mode == "RGB" else (301, 457)
    array = rng.integers(0, 256, shape, dtype=np.uint8)
    image = Image.fromarray(array, mode)
    boxes = [center_crop_box(301, 457, 224)] + [random_resized_crop_box(rng, 301, 457) for _ in range(20)]
    for box in boxes:
        np.testing.assert_array_equal(
            apply_crop_image(image, box, 224, resample), apply_crop(array, box, 224, resample)
        )
