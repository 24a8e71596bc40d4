import numpy as np
import pytest

from preprocess.crops import CropBox, apply_crop, center_crop_box, random_resized_crop_box


def _marked(h: int, w: int, v: float, u: float, dtype) -> np.ndarray:
    """A map of zeros with a small bright square centred at normalized (v, u)."""
    out = np.zeros((h, w), dtype)
    cy, cx = int(v * h), int(u * w)
    r = max(2, h // 80)
    out[cy - r : cy + r + 1, cx - r : cx + r + 1] = 255 if dtype == np.uint8 else 1.0
    return out


def _centroid(a: np.ndarray) -> np.ndarray | None:
    a = a.astype(np.float64)
    a = np.where(a > 0.5 * a.max(), a, 0) if a.max() > 0 else a
    if a.sum() == 0:
        return None
    ys, xs = np.indices(a.shape)
    return np.array([(ys * a).sum() / a.sum(), (xs * a).sum() / a.sum()])


@pytest.mark.parametrize("depth_hw", [(240, 320), (960, 1280), (427, 569)])
def test_marker_lands_in_the_same_place_in_rgb_and_depth(depth_hw):
    v, u = 0.43, 0.57
    rgb = np.repeat(_marked(480, 640, v, u, np.uint8)[..., None], 3, axis=2)
    depth = _marked(*depth_hw, v, u, np.float32)
    checked = 0
    for seed in range(200):
        box = random_resized_crop_box(np.random.default_rng(seed), 480, 640)
        a = _centroid(apply_crop(rgb, box, 224, "bicubic")[..., 0])
        b = _centroid(apply_crop(depth, box, 224, "nearest"))
        if a is None or b is None:
            assert a is None and b is None, f"seed {seed}: marker visible in one modality only"
            continue
        # Marker square is a few px; nearest vs bicubic sampling differs by < 1.5 px at most.
        assert np.abs(a - b).max() <= 1.5, f"seed {seed}: {a} vs {b} (flip={box.flip})"
        checked += 1
    assert checked > 50


def test_flip_moves_marker_to_mirrored_column():
    img = _marked(480, 640, 0.5, 0.25, np.float32)
    box = center_crop_box(480, 640)
    plain = _centroid(apply_crop(img, box, 224, "nearest"))
    flipped = _centroid(apply_crop(img, CropBox(box.y0, box.x0, box.y1, box.x1, True), 224, "nearest"))
    assert abs(plain[1] + flipped[1] - 223) <= 1.0
    assert abs(plain[0] - flipped[0]) < 1e-9


def test_random_boxes_are_seeded_and_valid():
    a = [random_resized_crop_box(np.random.default_rng(7), 300, 500) for _ in range(2)]
    assert a[0] == a[1]
    boxes = [random_resized_crop_box(np.random.default_rng(s), 300, 500) for s in range(100)]
    assert len({b.flip for b in boxes}) == 2
    for b in boxes:
        area = (b.y1 - b.y0) * (b.x1 - b.x0)
        assert 0.08 - 1e-2 <= area <= 1.0 + 1e-9


def test_center_box_reproduces_resize_then_crop_grid():
    box = center_crop_box(855, 640)  # bird: resized 299x224, top offset round(37.5) = 38
    assert box.y0 == pytest.approx(38 / 299) and box.x0 == 0.0
    with pytest.raises(ValueError):
        CropBox(0.5, 0.0, 0.4, 1.0)


def test_apply_crop_does_not_modify_input():
    img = np.random.default_rng(0).random((100, 150)).astype(np.float32)
    before = img.copy()
    apply_crop(img, CropBox(0.1, 0.2, 0.9, 0.7, True), 64, "bicubic")
    assert np.array_equal(img, before)
