"""pipelines.synth: public API, the files of every layout, and the formats and temporal relatedness
of the mp4 layouts (flash/click/IMU-spike sync, sounds at their visual events, gyro = camera yaw
rate, image motion = camera motion).

The image layouts (formats, depth vs RGB, infrared vs visible, captions vs render, byte
determinism) are covered in test_synth_scenes.py."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import av
import numpy as np
import polars as pl
import pytest
from PIL import Image

from pipelines.synth import LAYOUTS, SynthResult, synthesize, write_mp4
from pipelines.synth import audioset as syn_audioset
from pipelines.synth import ego4d as syn_ego4d

# --------------------------------------------------------------------------------------------
# helpers


def decode_video(path: Path):
    """-> (frames [T,H,W,3] uint8, frame times s relative to the stream start, stream info dict)."""
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        start = float(v.start_time * v.time_base) if v.start_time is not None else 0.0
        frames, times = [], []
        for f in c.decode(video=0):
            frames.append(f.to_ndarray(format="rgb24"))
            times.append(float(f.time) - start)
        info = {
            "codec": v.codec_context.name,
            "width": v.codec_context.width,
            "height": v.codec_context.height,
            "fps": float(v.average_rate),
            "start": start,
            "audio": [a.codec_context.name for a in c.streams.audio],
        }
    return np.stack(frames), np.asarray(times), info


def decode_audio(path: Path):
    """-> (samples [C, N] float32, sample rate, start time of the first sample in s)."""
    with av.open(str(path)) as c:
        a = c.streams.audio[0]
        chunks, t0 = [], None
        for f in c.decode(audio=0):
            if t0 is None:
                t0 = float(f.time)
            chunks.append(f.to_ndarray())
        return np.concatenate(chunks, axis=1), a.codec_context.sample_rate, t0


def read_imu(path: Path):
    text = path.read_text()
    header = text.splitlines()[0]
    rows = list(csv.DictReader(io.StringIO(text)))
    return header, rows


def clean_imu(rows):
    """What a reader must do: drop NULL timestamps, sort, drop duplicates -> t [N] s, data [N, 6]."""
    keep = [r for r in rows if r["canonical_timestamp_ms"] != ""]
    arr = np.array(
        [
            [
                float(r[k])
                for k in ("canonical_timestamp_ms", "gyro_x", "gyro_y", "gyro_z", "accl_x", "accl_y", "accl_z")
            ]
            for r in keep
        ]
    )
    arr = np.unique(arr, axis=0)  # sorts by time and removes the duplicated row
    return arr[:, 0] / 1000.0, arr[:, 1:]


# --------------------------------------------------------------------------------------------
# public API


def test_layouts_and_unknown_layout(tmp_path):
    assert LAYOUTS == ("sunrgbd", "llvip", "audioset", "ego4d", "image-text")
    with pytest.raises(ValueError) as exc:
        synthesize(tmp_path, "nyu", 1)
    for name in LAYOUTS:
        assert name in str(exc.value)


def test_unknown_option_is_rejected(tmp_path):
    with pytest.raises(TypeError):
        synthesize(tmp_path, "audioset", 1, durration=3.0)


# --------------------------------------------------------------------------------------------
# every layout through the public API (the image layouts are covered in depth in test_synth_scenes.py)

EXPECTED_TREE = {
    "sunrgbd": ("splits.csv",),
    "llvip": (),
    "image-text": ("captions.parquet",),
    "audioset": ("labels.csv", "class_labels_indices.csv", "events.csv", "sound_events.csv"),
    "ego4d": ("v2/annotations/narration.json", "events.csv"),
}
PER_SAMPLE = {"sunrgbd": 3, "llvip": 2, "image-text": 1, "audioset": 1, "ego4d": 2}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_synthesize_writes_the_listed_files(tmp_path, layout):
    opts = {"duration": 3.0} if layout in ("audioset", "ego4d") else {}
    res = synthesize(tmp_path / "out", layout, 2, seed=1, **opts)
    assert isinstance(res, SynthResult) and res.layout == layout and res.n == 2
    assert res.root == tmp_path / "out"
    assert len(set(res.files)) == len(res.files)
    assert set(EXPECTED_TREE[layout]) <= set(res.files)
    assert len(res.files) == 2 * PER_SAMPLE[layout] + len(EXPECTED_TREE[layout])
    on_disk = {p.relative_to(res.root).as_posix() for p in res.root.rglob("*") if p.is_file()}
    assert set(res.files) <= on_disk
    assert all(not Path(f).is_absolute() and "\\" not in f for f in res.files)
    for f in res.files:
        if f.endswith(".jpg"):
            assert Image.open(res.root / f).format == "JPEG"
        elif f.endswith(".png"):
            assert np.asarray(Image.open(res.root / f)).dtype == np.uint16
        elif f.endswith(".mp4"):
            _, _, info = decode_video(res.root / f)
            assert info["codec"] == "h264" and info["audio"] == ["aac"]


# --------------------------------------------------------------------------------------------
# audioset


@pytest.fixture(scope="module")
def aset(tmp_path_factory):
    root = tmp_path_factory.mktemp("aset")
    # one clip per class, shortened to keep the test fast
    results = {}
    for k in syn_audioset.CLASSES:
        results[k] = synthesize(root / k, "audioset", 1, seed=3, duration=5.0, classes=(k,))
    return results


def test_audioset_files_and_formats(aset):
    for kind, res in aset.items():
        root = res.root
        lines = (root / "labels.csv").read_text().splitlines()
        assert lines[0].startswith("# Segments csv created")
        assert lines[1].startswith("# num_ytids=1, num_segs=1, num_unique_labels=")
        assert lines[2] == "# YTID, start_seconds, end_seconds, positive_labels"
        rec = next(csv.reader(lines[3:], skipinitialspace=True))
        ytid, start, end, labels = rec
        assert len(ytid) == 11 and all(c.isalnum() or c in "-_" for c in ytid)
        assert float(end) - float(start) == pytest.approx(5.0)
        mids = labels.split(",")
        assert mids == [m for m, _ in syn_audioset.CLASSES[kind]]
        idx = pl.read_csv(root / "class_labels_indices.csv")
        assert idx.columns == ["index", "mid", "display_name"] and set(mids) <= set(idx["mid"])
        frames, times, info = decode_video(root / f"videos/{ytid}.mp4")
        assert info["codec"] == "h264" and (info["width"], info["height"]) == (320, 240)
        assert info["fps"] == pytest.approx(25) and len(frames) == 125
        assert info["audio"] == ["aac"]
        audio, sr, _ = decode_audio(root / f"videos/{ytid}.mp4")
        assert sr == 44100 and audio.shape[0] == 2 and audio.shape[1] >= 5 * 44100


def _onsets(x: np.ndarray, sr: int, thresh: float) -> np.ndarray:
    env = np.abs(x)
    above = env > thresh
    starts = np.flatnonzero(above[1:] & ~above[:-1]) + 1
    keep = []
    for s in starts:
        if not keep or s - keep[-1] > 0.15 * sr:
            keep.append(s)
    return np.asarray(keep) / sr


def test_audioset_flash_and_click_at_event_time(aset):
    for kind, res in aset.items():
        ev = pl.read_csv(res.root / "events.csv")
        ytid, t_ev = ev["id"][0], float(ev["event_time_s"][0])
        path = res.root / f"videos/{ytid}.mp4"
        frames, times, _ = decode_video(path)
        bright = frames.reshape(len(frames), -1).mean(axis=1)
        flash = int(np.argmax(bright))
        assert bright[flash] > 250 and np.sort(bright)[-2] < 200, "exactly one white frame"
        assert abs(times[flash] - t_ev) <= 1 / 25 + 1e-6
        audio, sr, t0 = decode_audio(path)
        k = int(np.argmax(np.abs(audio).max(axis=0)))
        assert abs(t0 + k / sr - t_ev) < 0.010, kind


def test_audioset_sounds_happen_at_visual_events(aset):
    # ball: a thud at every floor contact
    s = syn_audioset.make_sample(3, 0, duration=5.0, classes=("ball",))
    ev = [t for label, t in s.sound_events() if label == "thud"]
    audio, sr, t0 = decode_audio(aset["ball"].root / f"videos/{s.ytid}.mp4")
    x = audio.mean(axis=0)
    x[int((s.event_time_s - t0) * sr) - 400 : int((s.event_time_s - t0) * sr) + 600] = 0  # not the sync click
    onsets = _onsets(x, sr, 0.1) + t0
    assert len(ev) >= 3 and len(onsets) == len(ev)
    np.testing.assert_allclose(onsets, ev, atol=0.01)
    # the floor contacts are where the ball is lowest in the picture
    _, y = s.position(np.asarray(ev))
    assert np.allclose(y, s.params["floor"] - s.params["radius"], atol=0.5)

    # siren: the high tone plays while the light is red, the low one while it is blue
    s = syn_audioset.make_sample(3, 0, duration=5.0, classes=("siren",))
    path = aset["siren"].root / f"videos/{s.ytid}.mp4"
    frames, times, _ = decode_video(path)
    audio, sr, t0 = decode_audio(path)
    x = audio.mean(axis=0)
    red_frames, high_tone = [], []
    lx, ly = int(s.params["x"]), int(s.params["y"])
    for f, t in zip(frames, times):
        if abs(t - s.event_time_s) < 0.05:
            continue
        left = f[ly - 4 : ly + 5, lx - 16 : lx - 8].astype(float).mean(axis=(0, 1))
        right = f[ly - 4 : ly + 5, lx + 8 : lx + 16].astype(float).mean(axis=(0, 1))
        red_frames.append(left[0] > right[0] and right[2] < left[0])
        k = int((t + 0.02 - t0) * sr)
        seg = x[k : k + 1024] * np.hanning(1024)
        if len(seg) < 1024:
            continue
        spec = np.abs(np.fft.rfft(seg))
        freq = np.fft.rfftfreq(1024, 1 / sr)[np.argmax(spec[10:200]) + 10]
        high_tone.append(freq > 850)
    n = min(len(red_frames), len(high_tone))
    agree = np.mean(np.asarray(red_frames[:n]) == np.asarray(high_tone[:n]))
    assert agree > 0.9 and 0.2 < np.mean(red_frames) < 0.8


def test_audioset_options(tmp_path):
    res = synthesize(
        tmp_path / "a",
        "audioset",
        1,
        seed=1,
        duration=3.0,
        audio=False,
        gop_size=5,
        start_offset_s=1.5,
        classes=("clock",),
    )
    path = res.root / res.files[0]
    with av.open(str(path)) as c:
        assert len(c.streams.audio) == 0
        v = c.streams.video[0]
        assert float(v.start_time * v.time_base) == pytest.approx(1.5, abs=1e-3)
        keys = [i for i, p in enumerate(c.demux(v)) if p.size and p.is_keyframe]
    assert keys[:3] == [0, 5, 10]
    res = synthesize(
        tmp_path / "b", "audioset", 1, seed=1, duration=3.0, channels=1, sample_rate=16000, start_offset_s=0.5
    )
    path = res.root / res.files[0]
    audio, sr, t0 = decode_audio(path)
    assert sr == 16000 and audio.shape[0] == 1
    # the first decoded frame holds AAC's priming samples, just before the offset
    assert 0.5 - 1100 / sr <= t0 <= 0.5 + 1e-6
    t_ev = float(pl.read_csv(res.root / "events.csv")["event_time_s"][0])
    k = int(np.argmax(np.abs(audio[0])))
    assert abs(t0 + k / sr - (0.5 + t_ev)) < 0.010


@pytest.mark.parametrize("layout", ["audioset", "ego4d"])
def test_mp4_layouts_are_deterministic(tmp_path, layout):
    a = synthesize(tmp_path / "a", layout, 1, seed=9, duration=2.5)
    b = synthesize(tmp_path / "b", layout, 1, seed=9, duration=2.5)
    assert a.files == b.files
    video = next(f for f in a.files if f.endswith(".mp4"))
    fa, _, _ = decode_video(a.root / video)
    fb, _, _ = decode_video(b.root / video)
    assert np.array_equal(fa, fb)
    assert np.array_equal(decode_audio(a.root / video)[0], decode_audio(b.root / video)[0])
    # single-threaded x264 and a fixed muxer: even the bytes repeat (on one machine / library build)
    for f in a.files:
        assert (a.root / f).read_bytes() == (b.root / f).read_bytes(), f


# --------------------------------------------------------------------------------------------
# ego4d

EGO_SECONDS = 8.0


@pytest.fixture(scope="module")
def ego(tmp_path_factory):
    return synthesize(tmp_path_factory.mktemp("ego"), "ego4d", 2, seed=6, duration=EGO_SECONDS)


def test_ego4d_files_and_formats(ego: SynthResult):
    root = ego.root
    videos = sorted((root / "v2/full_scale").glob("*.mp4"))
    assert len(videos) == 2
    narr = json.loads((root / "v2/annotations/narration.json").read_text())
    for v in videos:
        uid = v.stem
        assert len(uid) == 36 and uid.count("-") == 4 and uid[14] == "4"
        frames, times, info = decode_video(v)
        assert info["codec"] == "h264" and (info["width"], info["height"]) == (320, 240)
        assert info["fps"] == pytest.approx(30) and len(frames) == int(EGO_SECONDS * 30)
        assert info["audio"] == ["aac"]
        header, rows = read_imu(root / f"v2/imu/{uid}.csv")
        assert header == (
            "component_idx,component_timestamp_ms,canonical_timestamp_ms,gyro_x,gyro_y,gyro_z,accl_x,accl_y,accl_z"
        )
        t = np.array([float(r["canonical_timestamp_ms"]) for r in rows if r["canonical_timestamp_ms"] != ""])
        assert len(t) < len(rows), "some NULL canonical timestamps"
        assert (np.diff(t) < 0).any(), "some rows out of order"
        assert np.median(np.diff(np.sort(t))) == pytest.approx(5.0, abs=0.3)
        assert np.diff(np.sort(t)).std() > 0.05, "jittered"
        assert len({tuple(r.values()) for r in rows}) == len(rows) - 1, "one duplicated row"
        offsets = {
            round(float(r["component_timestamp_ms"]) - float(r["canonical_timestamp_ms"]), 2)
            for r in rows
            if r["canonical_timestamp_ms"] != ""
        }
        assert len(offsets) == 1
        ts, data = clean_imu(rows)
        assert np.median(data[:, 5]) == pytest.approx(9.81, abs=0.3), "gravity on accl_z"
        items = narr[uid]["narration_pass_1"]["narrations"]
        assert len(items) >= 3
        for it in items:
            assert 2.5 <= it["timestamp_sec"] <= EGO_SECONDS - 2.5
            assert it["timestamp_frame"] == round(it["timestamp_sec"] * 30)
            assert it["narration_text"].startswith("#C C ")
    ev = pl.read_csv(root / "events.csv")
    assert ev.columns == ["id", "event_time_s"] and set(ev["id"]) == {v.stem for v in videos}


def test_ego4d_gyro_follows_the_camera_yaw(ego: SynthResult):
    for i in range(ego.n):
        s = syn_ego4d.make_sample(6, i, duration=EGO_SECONDS)
        _, rows = read_imu(ego.root / f"v2/imu/{s.uid}.csv")
        t, data = clean_imu(rows)
        # integrate the yaw rate (trapezoid) and compare with the render camera's path
        yaw_int = np.concatenate([[0.0], np.cumsum(0.5 * (data[1:, 2] + data[:-1, 2]) * np.diff(t))])
        truth = s.motion.yaw(t) - s.motion.yaw(t[0])
        assert np.abs(yaw_int - truth).max() < 0.05
        assert np.ptp(truth) > 0.3, "the camera really turns"


def _phase_correlation(a: np.ndarray, b: np.ndarray) -> tuple[int, int]:
    """Integer (dy, dx) with b[y + dy, x + dx] ~= a[y, x]."""
    win = np.outer(np.hanning(a.shape[0]), np.hanning(a.shape[1]))
    fa, fb = np.fft.fft2((a - a.mean()) * win), np.fft.fft2((b - b.mean()) * win)
    r = np.conj(fa) * fb
    corr = np.fft.ifft2(r / np.maximum(np.abs(r), 1e-9)).real
    dy, dx = np.unravel_index(int(np.argmax(corr)), corr.shape)
    h, w = a.shape
    return (dy - h if dy > h // 2 else dy), (dx - w if dx > w // 2 else dx)


def test_ego4d_video_motion_matches_imu(ego: SynthResult):
    """The picture scrolls by (yaw change) x focal length between frames, and tilts with the pitch:
    measured on the decoded video by phase correlation, predicted from the motion the IMU records."""
    s = syn_ego4d.make_sample(6, 0, duration=EGO_SECONDS)
    frames, times, _ = decode_video(ego.root / f"v2/full_scale/{s.uid}.mp4")
    grey = frames.astype(np.float32).mean(axis=3)
    ev = int(round(s.event_time_s * s.fps))
    errs, moved = [], []
    for i in range(3, len(frames) - 6, 11):
        j = i + 4
        if i <= ev <= j:
            continue
        dy, dx = _phase_correlation(grey[i], grey[j])
        # turning left (yaw up) moves the scene to the right in the image; looking up moves it down
        ex = (s.motion.yaw(times[j]) - s.motion.yaw(times[i])) * s.fx
        ey = (s.motion.pitch(times[j]) - s.motion.pitch(times[i])) * s.fx
        errs.append(max(abs(dx - ex), abs(dy - ey)))
        moved.append(abs(ex))
    errs = np.asarray(errs)
    assert len(errs) >= 15 and max(moved) > 5
    assert np.median(errs) <= 1.0 and np.all(errs <= 1.5), errs


def test_ego4d_sync_event_in_video_audio_and_imu(ego: SynthResult):
    ev = dict(pl.read_csv(ego.root / "events.csv").iter_rows())
    for uid, t_ev in ev.items():
        path = ego.root / f"v2/full_scale/{uid}.mp4"
        frames, times, _ = decode_video(path)
        bright = frames.reshape(len(frames), -1).mean(axis=1)
        flash = int(np.argmax(bright))
        assert bright[flash] > 250 and abs(times[flash] - t_ev) <= 1 / 30 + 1e-6
        audio, sr, t0 = decode_audio(path)
        k = int(np.argmax(np.abs(audio).max(axis=0)))
        assert abs(t0 + k / sr - t_ev) < 0.010
        _, rows = read_imu(ego.root / f"v2/imu/{uid}.csv")
        t, data = clean_imu(rows)
        accl = data[:, 3:]
        dev = np.linalg.norm(accl - np.median(accl, axis=0), axis=1)
        spike = int(np.argmax(dev))
        assert dev[spike] > 15 and abs(t[spike] - t_ev) < 0.010


def test_ego4d_footsteps_match_the_bob(ego: SynthResult):
    s = syn_ego4d.make_sample(6, 1, duration=EGO_SECONDS)
    steps = s.motion.step_times(EGO_SECONDS)
    # foot strikes are at the bottom of the bob: vertical acceleration is at its maximum there
    assert np.allclose(s.motion.bob_accel(steps), s.motion.bob_m * (2 * math.pi * s.motion.step_hz) ** 2)
    audio, sr, t0 = decode_audio(ego.root / f"v2/full_scale/{s.uid}.mp4")
    x = audio.mean(axis=0)
    k_ev = int((s.event_time_s - t0) * sr)
    x[k_ev - 400 : k_ev + 600] = 0
    onsets = _onsets(x, sr, 0.08) + t0
    steps = steps[(steps > 0.01) & (steps < EGO_SECONDS - 0.1)]
    assert len(onsets) == len(steps)
    np.testing.assert_allclose(onsets, steps, atol=0.01)


def test_write_mp4_helper(tmp_path):
    frames = np.zeros((20, 48, 64, 3), np.uint8)
    frames[10] = 255
    sr = 16000
    audio = np.zeros((1, sr), np.float32)
    audio[0, sr // 2] = 0.9
    p = write_mp4(tmp_path / "x.mp4", frames, 20, audio, sr, gop_size=4)
    got, times, info = decode_video(p)
    assert info["codec"] == "h264" and info["audio"] == ["aac"] and len(got) == 20
    assert int(np.argmax(got.reshape(20, -1).mean(axis=1))) == 10 and times[10] == pytest.approx(0.5)
    a, rate, t0 = decode_audio(p)
    assert rate == sr and abs(t0 + np.argmax(np.abs(a[0])) / sr - 0.5) < 0.005
    p = write_mp4(tmp_path / "y.mp4", frames, 20, None, gop_size=4, start_offset_s=0.25)
    _, _, info = decode_video(p)
    assert info["audio"] == [] and info["start"] == pytest.approx(0.25)
