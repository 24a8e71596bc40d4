"""Training augmentations: one box for every spatial modality, seeded per (seed, epoch, sample)."""

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _markers import marker_centroid  # noqa: E402

from preprocess.augment import (
    AugmentConfig,
    AugmentParams,
    augment,
    augment_model_ready,
    augment_stored,
    color_jitter,
    draw_params,
    sample_rng,
)
from preprocess.depth import normalize_depth
from preprocess.image import normalize_rgb
from preprocess.thermal import normalize_thermal

S = 224
# Marker: rows 100..105, cols 150..155 of the stored grid (off centre, so a flip moves it).
MARK = (slice(100, 106), slice(150, 156))
MARK_V, MARK_U = 103 / S, 153 / S  # its centre in normalized coordinates
# An invalid depth patch elsewhere: validity must travel with the disparity.
HOLE = (slice(40, 60), slice(30, 70))


def _stored(with_audio: bool = False) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    image = np.full((3, S, S), 40, np.uint8)
    image[1] += rng.integers(0, 20, (S, S), dtype=np.uint8)  # some texture, dimmer than the marker
    image[:, MARK[0], MARK[1]] = 255
    disparity = np.full((1, S, S), 10.0, np.float16)
    disparity[0, MARK[0], MARK[1]] = 60.0
    valid = np.ones((1, S, S), bool)
    valid[0, HOLE[0], HOLE[1]] = False
    disparity[~valid] = 0.0
    thermal = np.full((1, S, S), 0.2, np.float16)
    thermal[0, MARK[0], MARK[1]] = 0.95
    out = {"image/pixels": image, "depth/disparity": disparity, "depth/valid": valid, "thermal/intensity": thermal}
    if with_audio:
        out["audio/log_mel"] = rng.normal(-5, 3, (3, 1, 128, 204)).astype(np.float16)
    return out


def _normalize(stored: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = {}
    if "image/pixels" in stored:
        out["image"] = normalize_rgb(stored["image/pixels"])
    if "depth/disparity" in stored:
        out["depth"] = normalize_depth(stored["depth/disparity"], stored["depth/valid"])
        out["depth_valid"] = stored["depth/valid"].astype(bool)
    if "thermal/intensity" in stored:
        out["thermal"] = normalize_thermal(stored["thermal/intensity"])
    if "audio/log_mel" in stored:
        out["audio"] = (stored["audio/log_mel"].astype(np.float32) + 4.268) / 9.138
    return out


def _expected(params: AugmentParams) -> np.ndarray:
    box = params.box
    y = (MARK_V - box.y0) / (box.y1 - box.y0) * S - 0.5
    x = (MARK_U - box.x0) / (box.x1 - box.x0) * S - 0.5
    return np.array([y, S - 1 - x if box.flip else x])


def test_marker_stays_aligned_in_rgb_depth_and_thermal_over_many_seeds():
    cfg = AugmentConfig(erase_prob=0.0)  # erasing could hide the marker; tested on its own below
    stored = _stored()
    checked = flips = absent = 0
    for seed in range(150):
        params = draw_params(stored, cfg, sample_rng(seed, 0, "marker"))
        out = augment_stored(stored, params)
        want = _expected(params)
        rgb = marker_centroid(out["image/pixels"].astype(np.float32).mean(axis=0), 90)
        depth = marker_centroid(np.where(out["depth/valid"][0], out["depth/disparity"][0].astype(np.float32), 0.0), 25)
        thermal = marker_centroid(out["thermal/intensity"][0], 0.35)
        # The invalid patch travels with the disparity: zero exactly where the mask says invalid.
        assert np.array_equal(out["depth/disparity"] == 0, ~out["depth/valid"]), f"seed {seed}"
        inside = (want >= 4).all() and (want <= S - 5).all()
        outside = (want < -12).any() or (want > S + 11).any()
        if inside:
            for name, got in (("rgb", rgb), ("depth", depth), ("thermal", thermal)):
                assert got is not None, f"seed {seed} {params.box}: marker missing in {name}"
                assert np.abs(got - want).max() <= 1.5, f"seed {seed} {params.box}: {name} at {got}, expected {want}"
            assert np.abs(rgb - depth).max() <= 1.0 and np.abs(rgb - thermal).max() <= 1.0, (seed, rgb, depth, thermal)
            checked += 1
            flips += params.box.flip
        elif outside:
            assert rgb is None and depth is None and thermal is None, f"seed {seed}: marker cropped away yet visible"
            absent += 1
    print(f"checked {checked}, flipped {flips}, cropped away {absent}")
    assert checked >= 50 and 15 <= flips <= checked - 15 and absent >= 10, (checked, flips, absent)


def test_same_seed_and_epoch_give_the_same_output_and_another_epoch_does_not():
    stored = _stored(with_audio=True)
    cfg = AugmentConfig(erase_prob=1.0)

    def run(seed, epoch, sample_id="s1"):
        return augment(stored, cfg, sample_rng(seed, epoch, sample_id), _normalize)

    a, b = run(3, 7), run(3, 7)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    for other in (run(3, 8), run(4, 7), run(3, 7, "s2")):
        assert not np.array_equal(a["image"], other["image"])
        assert not np.array_equal(a["audio"], other["audio"])


def test_sample_rng_is_a_stable_function_of_seed_epoch_and_id():
    # Pinned values: a change here silently changes every training run's augmentations. They hold
    # in any process (blake2b of the id, not Python's per-process salted hash()).
    assert sample_rng(0, 0, "abc").integers(0, 2**31) == 1910054189
    assert sample_rng(5, 3, "kv1/NYU0001").integers(0, 2**31) == 1575373719
    assert sample_rng(0, 1, "abc").integers(0, 2**31) != 1910054189
    with pytest.raises(ValueError):
        sample_rng(-1, 0, "abc")


def test_evaluation_mode_and_off_config_are_the_identity():
    stored = _stored(with_audio=True)
    rng = np.random.default_rng(0)
    state = rng.bit_generator.state
    assert draw_params(stored, AugmentConfig(), rng, train=False).is_identity
    assert draw_params(stored, None, rng).is_identity
    assert rng.bit_generator.state == state  # eval draws nothing
    for out in (
        augment(stored, AugmentConfig(), rng, _normalize, train=False),
        augment(stored, AugmentConfig.off(), rng, _normalize, train=True),
    ):
        ref = _normalize(stored)
        assert out.keys() == ref.keys()
        for k in ref:
            np.testing.assert_array_equal(out[k], ref[k])
    assert augment_stored(stored, AugmentParams()) == stored


def test_inputs_are_never_modified():
    stored = _stored(with_audio=True)
    before = {k: v.copy() for k, v in stored.items()}
    cfg = AugmentConfig(erase_prob=1.0, freq_mask_bins=30, time_mask_frames=20)
    for seed in range(5):
        params = draw_params(stored, cfg, sample_rng(seed, 0, "x"))
        aug = augment_stored(stored, params)
        ready = _normalize(aug)
        ready_before = {k: v.copy() for k, v in ready.items()}
        augment_model_ready(ready, params)
        for k in ready:
            np.testing.assert_array_equal(ready[k], ready_before[k])
    for k in stored:
        np.testing.assert_array_equal(stored[k], before[k])
        assert stored[k].dtype == before[k].dtype


def test_colour_jitter_touches_rgb_only():
    stored = _stored()
    cfg = dataclasses.replace(AugmentConfig.off(), brightness=0.4, contrast=0.4, saturation=0.4)
    params = draw_params(stored, cfg, sample_rng(1, 0, "j"))
    assert params.box is None and [op for op, _ in params.jitter] != [] and not params.erase
    out = augment_stored(stored, params)
    assert not np.array_equal(out["image/pixels"], stored["image/pixels"])
    assert out["image/pixels"].dtype == np.uint8
    for key in ("depth/disparity", "depth/valid", "thermal/intensity"):
        assert out[key] is stored[key]
    # Factors of 1 are the identity; brightness 0 is black; saturation 0 is grey (equal channels).
    px = stored["image/pixels"]
    np.testing.assert_array_equal(color_jitter(px, (("brightness", 1.0), ("contrast", 1.0), ("saturation", 1.0))), px)
    assert color_jitter(px, (("brightness", 0.0),)).max() == 0
    grey = color_jitter(px, (("saturation", 0.0),)).astype(int)
    assert np.abs(grey[0] - grey[1]).max() <= 1 and np.abs(grey[1] - grey[2]).max() <= 1


def test_random_erasing_on_normalized_tensors_and_depth_becomes_invalid():
    stored = _stored()
    cfg = dataclasses.replace(AugmentConfig.off(), erase_prob=1.0)
    params = draw_params(stored, cfg, sample_rng(0, 0, "e"))
    assert set(params.erase) == {"image", "depth", "thermal"}
    ready = _normalize(stored)
    out = augment_model_ready(ready, params)
    r = params.erase["image"]
    patch = out["image"][:, r.top : r.top + r.height, r.left : r.left + r.width]
    assert abs(float(patch.mean())) < 0.2 and 0.8 < float(patch.std()) < 1.2  # N(0,1) noise
    changed = (out["image"] != ready["image"]).any(axis=0)
    assert changed.sum() == pytest.approx(r.height * r.width, rel=0.01)
    d = params.erase["depth"]
    assert not out["depth_valid"][0, d.top : d.top + d.height, d.left : d.left + d.width].any()
    assert (out["depth"][~out["depth_valid"]] == 0).all()
    # Probability respected: about a quarter of samples erase the image with the defaults.
    hits = sum("image" in draw_params(stored, AugmentConfig(), sample_rng(s, 0, "p")).erase for s in range(400))
    assert 60 <= hits <= 140


def test_frequency_masking_sets_bands_of_at_most_F_bins_to_the_mean():
    stored = {"audio/log_mel": _stored(with_audio=True)["audio/log_mel"]}
    cfg = AugmentConfig(freq_mask_bins=12)
    widths = []
    for seed in range(60):
        params = draw_params(stored, cfg, sample_rng(seed, 0, "a"))
        assert params.box is None and not params.jitter and not params.time_masks
        ready = _normalize(stored)
        out = augment_model_ready(ready, params)
        for clip, bands in enumerate(params.freq_masks):
            ((start, width),) = bands
            widths.append(width)
            assert 0 <= width <= 12 and start + width <= 128
            np.testing.assert_array_equal(out["audio"][clip, 0, start : start + width], 0.0)
            rest = np.ones(128, bool)
            rest[start : start + width] = False
            np.testing.assert_array_equal(out["audio"][clip, 0, rest], ready["audio"][clip, 0, rest])
    assert max(widths) == 12 and min(widths) == 0


def test_output_size_and_config_validation():
    stored = _stored()
    out = augment_stored(stored, draw_params(stored, AugmentConfig(size=112), sample_rng(0, 0, "z")))
    assert out["image/pixels"].shape == (3, 112, 112) and out["depth/valid"].shape == (1, 112, 112)
    assert out["thermal/intensity"].dtype == np.float32 and 0 <= out["thermal/intensity"].min()
    assert out["thermal/intensity"].max() <= 1
    for bad in (
        dict(crop_scale=(0.5, 0.1)),
        dict(flip_prob=2.0),
        dict(erase_modalities=("audio",)),
        dict(freq_mask_bins=-1),
        dict(brightness=-0.1),
    ):
        with pytest.raises(ValueError):
            AugmentConfig(**bad)
