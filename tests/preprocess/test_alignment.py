"""One clock: a flash frame, an audio click and an IMU spike made at the same instant land at the same
time after decoding, resampling and windowing, also when the streams start at a non-zero pts."""

import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _temporal_media import color_frames, write_mp4  # noqa: E402

from preprocess.audio import AudioConfig, audio_model_input, decode_waveform, resample_waveform  # noqa: E402
from preprocess.imu import ImuConfig, ImuSeries, imu_window  # noqa: E402
from preprocess.media import probe  # noqa: E402
from preprocess.video import video_clip_frames  # noqa: E402
from preprocess.video_decode import decode_video_frames  # noqa: E402

FPS = 25
T_EVENT = Fraction(17, 5)  # 3.4 s, frame 85
DURATION = 6
AUDIO_RATE = 48000


def _make(path: Path, start_s: float) -> Path:
    frames = color_frames(DURATION * FPS, 48, 64)
    frames[int(T_EVENT * FPS)] = 255  # the flash
    audio = np.zeros((2, DURATION * AUDIO_RATE), np.float32)
    k = int(T_EVENT * AUDIO_RATE)
    audio[:, k : k + 24] = 0.9  # a 0.5 ms click
    return write_mp4(path, frames, FPS, audio, AUDIO_RATE, gop_size=4, start_s=start_s)


@pytest.fixture(scope="module", params=[0.0, 1.0], ids=["start0", "start1s"])
def media(request, tmp_path_factory):
    return _make(tmp_path_factory.mktemp("align") / "flash.mp4", request.param), request.param


def test_flash_frame_is_at_the_event_time(media):
    path, start = media
    info = probe(path)
    assert info.video.start_time_s == pytest.approx(start)
    assert info.video.duration_s == pytest.approx(DURATION)
    at, before, after = decode_video_frames(
        path,
        [
            (T_EVENT, T_EVENT + Fraction(1, FPS)),
            (T_EVENT - Fraction(1, FPS), T_EVENT),
            (T_EVENT + Fraction(1, FPS), T_EVENT + Fraction(2, FPS)),
        ],
        1,
    )
    assert at.times_s[0] == pytest.approx(float(T_EVENT), abs=1e-9)
    assert at.frames.mean() > 240
    assert before.frames.mean() < 150 and after.frames.mean() < 150


def test_click_is_at_the_event_time_after_resampling(media):
    path, _ = media
    wave, sr = decode_waveform(path)
    assert sr == AUDIO_RATE
    w16 = resample_waveform(wave, sr, AudioConfig()).numpy()
    onset = np.argmax(np.abs(w16[0]) > 0.3) / 16000  # first sample clearly in the click
    peak = np.argmax(np.abs(w16[0])) / 16000
    assert onset == pytest.approx(float(T_EVENT), abs=1e-3)
    assert peak == pytest.approx(float(T_EVENT), abs=1e-3)


def test_imu_spike_is_at_the_window_centre():
    t = np.arange(0, DURATION, 0.005)  # 200 Hz, as Ego4D's GoPro IMU
    vals = np.zeros((6, t.size), np.float32)
    vals[:, np.argmin(np.abs(t - float(T_EVENT)))] = 5.0
    series = ImuSeries(times_s=t, values=vals)
    for cfg in (ImuConfig.imagebind(), ImuConfig.imu2clip()):
        w, mask, (t0, t1) = imu_window(series, float(T_EVENT), cfg)
        assert int(np.argmax(w[0])) == cfg.window_steps // 2
        assert t0 + (cfg.window_steps // 2) / cfg.rate_hz == pytest.approx(float(T_EVENT))


def test_same_relative_times_with_a_start_offset(tmp_path):
    a = _make(tmp_path / "a.mp4", 0.0)
    b = _make(tmp_path / "b.mp4", 1.0)
    fa, sa = video_clip_frames(a)
    fb, sb = video_clip_frames(b)
    assert sa == sb
    np.testing.assert_array_equal(fa, fb)  # same frames chosen (same encoder input and settings)
    ma, spa = audio_model_input(a)
    mb, spb = audio_model_input(b)
    # AAC tail padding can differ by a fraction of a frame; the clocks themselves agree
    np.testing.assert_allclose(spa, spb, atol=1e-3)
    # mp4 edit lists store the start at 1 ms precision, so the click may move by a few samples
    # (under one 10 ms fbank hop): the click's frame is the same, the rest nearly identical
    for clip_a, clip_b in zip(ma, mb):
        assert abs(int(clip_a[0].sum(0).argmax()) - int(clip_b[0].sum(0).argmax())) <= 1
    assert np.abs(ma - mb).mean() < 0.01
