import numpy as np
import pytest

from preprocess.imu import (
    CHANNELS,
    ImuConfig,
    ImuSeries,
    imu_quality,
    imu_window,
    parse_ego4d_imu_csv,
    resample_imu,
)

HEADER = "component_idx,component_timestamp_ms,canonical_timestamp_ms,gyro_x,gyro_y,gyro_z,accl_x,accl_y,accl_z"


def _csv(rows) -> str:
    return "\n".join([HEADER] + [",".join(str(v) for v in r) for r in rows]) + "\n"


def _series(times_s, fn=lambda t: t) -> ImuSeries:
    t = np.asarray(times_s, np.float64)
    vals = np.stack([fn(t) * (c + 1) for c in range(6)]).astype(np.float32)
    return ImuSeries(times_s=t, values=vals)


def test_presets():
    assert ImuConfig() == ImuConfig.imagebind()
    assert (ImuConfig.imagebind().rate_hz, ImuConfig.imagebind().window_steps) == (400.0, 2000)
    assert (ImuConfig.imu2clip().rate_hz, ImuConfig.imu2clip().window_steps) == (200.0, 1000)
    assert ImuConfig.imagebind().window_s == ImuConfig.imu2clip().window_s == 5.0


def test_parse_reorders_channels_sorts_and_drops_nulls_and_duplicates(tmp_path):
    rows = [
        (0, 10, 20.0, 1, 2, 3, 4, 5, 6),
        (0, 5, "NULL", 9, 9, 9, 9, 9, 9),  # no canonical time: dropped
        (0, 0, 10.0, 11, 12, 13, 14, 15, 16),  # out of order: sorted first
        (0, 10, 20.0, 7, 7, 7, 7, 7, 7),  # duplicate time: first row kept
        (0, 15, 25.0, 1, 1, "NULL", 1, 1, 1),  # a NULL value: dropped (a gap, not a fake 0)
    ]
    text = _csv(rows)
    p = tmp_path / "imu.csv"
    p.write_text(text)
    for src in (text, p, str(p)):
        s = parse_ego4d_imu_csv(src)
        np.testing.assert_array_equal(s.times_s, [0.010, 0.020])
        assert s.values.dtype == np.float32 and s.values.shape == (6, 2)
        # accl first, then gyro
        np.testing.assert_array_equal(s.values[:, 0], [14, 15, 16, 11, 12, 13])
        np.testing.assert_array_equal(s.values[:, 1], [4, 5, 6, 1, 2, 3])
    assert CHANNELS[0] == "accl_x" and CHANNELS[3] == "gyro_x"


def test_parse_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="accl_x, accl_y, accl_z"):
        parse_ego4d_imu_csv("component_idx,canonical_timestamp_ms,gyro_x,gyro_y,gyro_z\n0,1,2,3,4\n")
    with pytest.raises(ValueError, match="no rows"):
        parse_ego4d_imu_csv(HEADER + "\n0,0,NULL,1,2,3,4,5,6\n")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(ValueError, match="empty"):
        parse_ego4d_imu_csv(empty)
    with pytest.raises(ValueError, match="missing.csv"):
        parse_ego4d_imu_csv(tmp_path / "missing.csv")


def test_resample_interpolates_linearly_inside_the_data():
    s = _series(np.arange(0, 1.0001, 0.005))  # 200 Hz ramp v = t*(c+1)
    vals, valid = resample_imu(s, 400.0, 0.05, 0.1, 200)
    assert valid.all()
    grid = 0.1 + np.arange(200) / 400.0
    np.testing.assert_allclose(vals[0], grid, atol=1e-6)
    np.testing.assert_allclose(vals[5], 6 * grid, atol=1e-5)


def test_resample_never_bridges_a_long_gap_nor_extrapolates():
    t = np.concatenate([np.arange(0, 1.0, 0.005), np.arange(1.2, 2.0, 0.005)])  # 0.2 s hole
    s = _series(t, lambda x: np.ones_like(x))
    vals, valid = resample_imu(s, 100.0, 0.05, -0.5, 300)  # grid -0.5 .. 2.49 s
    grid = -0.5 + np.arange(300) / 100.0
    in_data = (grid >= 0) & (grid <= t[-1] + 1e-12) & ~((grid > t[199] + 1e-12) & (grid < 1.2 - 1e-12))
    np.testing.assert_array_equal(valid, in_data)
    assert np.all(vals[:, ~valid] == 0) and np.all(vals[:, valid] > 0)
    # a hole shorter than max_gap_s is bridged
    _, valid2 = resample_imu(s, 100.0, 0.5, 0.0, 200)
    assert valid2.all()


def test_window_is_centred_on_the_anchor():
    t = np.arange(0, 20.0, 0.005)
    vals = np.zeros((6, t.size), np.float32)
    k = int(round(7.3 / 0.005))
    vals[:, k] = 10.0  # spike at 7.3 s
    s = ImuSeries(times_s=t, values=vals)
    for cfg in (ImuConfig.imagebind(), ImuConfig.imu2clip()):
        w, mask, (t0, t1) = imu_window(s, t[k], cfg)
        assert w.shape == (6, cfg.window_steps) and mask.all()
        assert int(np.argmax(w[0])) == cfg.window_steps // 2
        assert t0 == pytest.approx(t[k] - 2.5) and t1 == pytest.approx(t[k] + 2.5)


def test_window_at_the_edge_is_zero_padded_and_masked_then_rejected():
    s = _series(np.arange(0, 10.0, 0.005), lambda x: np.ones_like(x))
    w, mask, (t0, _) = imu_window(s, 1.0, ImuConfig())  # starts 1.5 s before the data
    assert t0 == pytest.approx(-1.5)
    assert not mask[:600].any() and mask[600:].all()
    assert np.all(w[:, :600] == 0)
    assert imu_quality(w, mask)["gap_fraction"] == pytest.approx(0.3)
    with pytest.raises(ValueError, match="no data"):
        imu_window(s, -0.1, ImuConfig())


def test_quality_detects_flat_topped_channels():
    x = np.sin(np.linspace(0, 20, 1000))[None].repeat(6, 0).astype(np.float32)
    mask = np.ones(1000, bool)
    assert imu_quality(x, mask)["saturation_fraction"] < 0.01
    clipped = np.clip(x, -0.8, 0.8)
    q = imu_quality(clipped, mask)
    assert q["saturation_fraction"] > 0.2 and q["gap_fraction"] == 0.0
    assert imu_quality(x, mask, full_scale=(0.5,) * 6)["saturation_fraction"] > 0.3


def test_fast_and_line_by_line_parsers_agree_on_messy_files(tmp_path):
    import preprocess.imu as imu_mod

    rng = np.random.default_rng(1)
    t = rng.permutation(np.arange(300) * 4.975124)  # 201 Hz, shuffled
    lines = [HEADER]
    for i, ms in enumerate(t):
        v = [f"{x:.6f}" for x in rng.standard_normal(6)]
        ts = f"{ms:.3f}"
        if i % 17 == 0:
            ts = ["NULL", "null", "", "NaN"][i % 4]  # missing canonical time, several spellings
        if i % 23 == 0:
            v[i % 6] = ["None", "NA", "nan", "inf"][i % 4]  # a missing or non-finite value
        if i % 29 == 0:
            v[5] = f" {v[5]} "  # stray spaces (around numbers; a padded " NULL " takes the slow path)
        lines.append(f"0,{ms:.3f},{ts}," + ",".join(v))
    lines.append(lines[5])  # an exact duplicate row
    text = "\ufeff" + "\n".join(lines) + "\n"  # with a byte-order mark, as some exports have
    p = tmp_path / "messy.csv"
    p.write_bytes(text.encode("utf-8"))
    fast = parse_ego4d_imu_csv(p)
    header = HEADER.split(",")
    # the Arrow path must accept this file itself (not just fall back to the slow parser)
    assert imu_mod._columns_fast(text.lstrip("\ufeff"), header) is not None
    slow = imu_mod._columns_slow(text.lstrip("\ufeff"), header, "x")
    slow = slow[np.isfinite(slow).all(axis=1)]
    slow = slow[np.argsort(slow[:, 0], kind="stable")]
    slow = slow[np.concatenate([[True], np.diff(slow[:, 0]) > 0])]
    np.testing.assert_array_equal(fast.times_s, slow[:, 0] / 1000.0)
    np.testing.assert_array_equal(fast.values, slow[:, 1:].T.astype(np.float32))
    assert np.all(np.diff(fast.times_s) > 0) and np.isfinite(fast.values).all()
    assert 200 < fast.times_s.size < 300


def test_ragged_or_junk_rows_are_named_by_line(tmp_path):
    with pytest.raises(ValueError, match="line 3 has 4 fields"):
        parse_ego4d_imu_csv(HEADER + "\n0,0,1,1,2,3,4,5,6\n0,1,2,3\n")
    with pytest.raises(ValueError, match="line 2"):
        parse_ego4d_imu_csv(HEADER + "\n0,0,1,1,2,x,4,5,6\n")


def test_resample_of_a_long_record_equals_the_unsliced_computation():
    rng = np.random.default_rng(2)
    t = np.cumsum(rng.uniform(0.002, 0.008, 20000))  # irregular, about 100 s
    t[5000:] += 0.3  # one long hole
    s = ImuSeries(times_s=t, values=rng.standard_normal((6, t.size)).astype(np.float32))
    for t0 in (-1.0, t[4990] - 0.5, 50.0, t[-1] - 1.0, t[-1] + 1.0):
        vals, valid = resample_imu(s, 400.0, 0.05, t0, 2000)
        grid = t0 + np.arange(2000) / 400.0
        right = np.searchsorted(t, grid)
        inside = (right > 0) & (right < t.size)
        gap = np.full(grid.size, np.inf)
        gap[inside] = t[right[inside]] - t[right[inside] - 1]
        expect_valid = np.isin(grid, t) | (inside & (gap < 0.05))
        np.testing.assert_array_equal(valid, expect_valid)
        for ch in range(6):
            ref = np.where(expect_valid, np.interp(grid, t, s.values[ch].astype(np.float64)), 0.0)
            np.testing.assert_array_equal(vals[ch], ref.astype(np.float32))
