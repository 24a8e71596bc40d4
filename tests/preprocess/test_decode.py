import os
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _temporal_media import color_frames, read_index, sine, write_mp4, write_wav  # noqa: E402

from preprocess.decode import (  # noqa: E402
    NoAudioStream,
    align_audio,
    decode_audio,
    decode_audio_on_video_clock,
    decode_audio_track,
    decode_video_frames,
    probe,
    uniform_indices,
)


@pytest.fixture(scope="module")
def shared() -> Path:
    root = Path(os.environ.get("BINDSET_SHARED", Path(__file__).resolve().parents[2].parent / "shared"))
    if not (root / "samples").is_dir():
        pytest.skip(f"../shared not found: {root}")
    return root


def _indices(frames: np.ndarray) -> list[int]:
    return [read_index(f) for f in frames]


@pytest.fixture(scope="module")
def gop_video(tmp_path_factory):
    """10 s at 10 fps, keyframe every 5 frames, with stereo 16 kHz audio."""
    p = tmp_path_factory.mktemp("dec") / "gop.mp4"
    write_mp4(p, color_frames(100, 48, 64), 10, sine(440, 10.0, 16000, 2), 16000, gop_size=5)
    return p


def test_probe_mov_bbb(shared):
    info = probe(shared / "samples" / "video_av" / "mov_bbb.mp4")
    v, a = info.video, info.audio
    # decord's reference duration is 250 frames / 25 fps; the header's duration (499/50 s) is not
    assert v.n_frames == 250 and v.fps == 25.0 and v.duration_s == 10.0 and info.duration_s == 10.0
    assert (v.width, v.height, v.rotation, v.start_time_s) == (320, 176, 0, 0.0)
    assert (a.sample_rate, a.channels, a.start_time_s) == (44100, 2, 0.0)


def test_decode_audio_mov_bbb_keeps_every_aac_frame(shared):
    w, sr = decode_audio(shared / "samples" / "video_av" / "mov_bbb.mp4")
    assert sr == 44100 and w.dtype == np.float32 and w.shape == (2, 441344)
    assert 0 < np.abs(w).max() <= 1.0


@pytest.mark.parametrize("codec", ["pcm_s16le", "pcm_u8", "pcm_s32le", "pcm_f32le", "pcm_f64le"])
@pytest.mark.parametrize("channels", [1, 2, 6])
def test_decode_audio_sample_formats_and_layouts(tmp_path, codec, channels):
    x = sine(300, 0.5, 22050, channels, amp=0.6)
    p = write_wav(tmp_path / "a.wav", x, 22050, codec)
    w, sr = decode_audio(p)
    assert sr == 22050 and w.dtype == np.float32 and w.shape == x.shape
    tol = {"pcm_u8": 1 / 128, "pcm_s16le": 1 / 32768}.get(codec, 1e-6)
    # packed (interleaved) PCM must come back channel by channel, scaled like FFmpeg's int->float
    assert np.abs(w - x).max() <= tol


def test_wav_int_scaling_matches_ffmpeg(tmp_path):
    x = np.array([[-1.0, -0.5, 0.0, 0.25]], np.float32)
    w, _ = decode_audio(write_wav(tmp_path / "s.wav", x, 8000, "pcm_s16le"))
    np.testing.assert_array_equal(w, np.array([[-1.0, -0.5, 0.0, 0.25]], np.float32))


def test_no_audio_stream_is_a_value_error(tmp_path):
    p = write_mp4(tmp_path / "v.mp4", color_frames(10, 32, 32), 10)
    with pytest.raises(NoAudioStream):
        decode_audio(p)
    assert issubclass(NoAudioStream, ValueError)
    assert probe(p).audio is None


def test_unreadable_file_is_a_value_error(tmp_path):
    p = tmp_path / "junk.mp4"
    p.write_bytes(b"not a video at all" * 10)
    with pytest.raises(ValueError, match="junk.mp4"):
        probe(p)


def test_video_spans_select_frames_by_pts(gop_video):
    spans = [(Fraction(0), Fraction(2)), (Fraction(21, 10), Fraction(4)), (Fraction(9), Fraction(11))]
    clips = decode_video_frames(gop_video, spans, 2)
    # [start, end): 0..1.9, 2.1..3.9, 9.0..9.9 (end beyond the video is cut)
    np.testing.assert_allclose([c.times_s for c in clips], [[0.0, 1.9], [2.1, 3.9], [9.0, 9.9]], atol=1e-9)
    for c in clips:
        got = _indices(c.frames)
        assert got == [round(t * 10) for t in c.times_s]
        assert c.frames.shape == (2, 48, 64, 3) and c.frames.dtype == np.uint8


def test_seeking_gives_the_same_frames_as_decoding_everything(gop_video):
    spans = [(0.5, 1.5), (5.0, 6.0), (7.25, 8.25), (8.0, 9.0)]  # last two overlap: no backward seek
    many = decode_video_frames(gop_video, spans, 3)
    full = decode_video_frames(gop_video, [(0.0, 10.0)], 100)[0]
    for c in many:
        for t, img in zip(c.times_s, c.frames):
            k = int(np.argmin(np.abs(full.times_s - t)))
            assert abs(full.times_s[k] - t) < 1e-9
            np.testing.assert_array_equal(img, full.frames[k])
    assert [list(np.round(c.times_s, 6)) for c in many] == [[0.5, 0.9, 1.4], [5.0, 5.4, 5.9], [7.3, 7.7, 8.2], [8.0, 8.4, 8.9]]


class _SpyContainer:
    """Wraps a PyAV container, counting seeks and demuxed video packets."""

    def __init__(self, container, log):
        self._c, self._log = container, log

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._c.close()

    def __getattr__(self, name):
        return getattr(self._c, name)

    def seek(self, *args, **kwargs):
        self._log["seeks"] += 1
        return self._c.seek(*args, **kwargs)

    def demux(self, *args, **kwargs):
        for pkt in self._c.demux(*args, **kwargs):
            self._log["packets"] += 1
            yield pkt


def test_far_spans_seek_and_near_spans_decode_on(gop_video, monkeypatch):
    import preprocess.decode as dec

    log = {"seeks": 0, "packets": 0}
    real_open = dec._open
    monkeypatch.setattr(dec, "_open", lambda path: _SpyContainer(real_open(path), log))
    clips = dec.decode_video_frames(gop_video, [(0.5, 1.5), (5.0, 6.0), (8.0, 9.0)], 2)
    assert [list(np.round(c.times_s, 6)) for c in clips] == [[0.5, 1.4], [5.0, 5.9], [8.0, 8.9]]
    # keyframes every 0.5 s: each span costs about its own 10 frames plus a partial GOP, not 100
    assert log["seeks"] == 3 and log["packets"] < 50
    log.update(seeks=0, packets=0)
    # spans 0.2 s apart lie inside one keyframe interval of the decode position: no further seek
    dec.decode_video_frames(gop_video, [(1.0, 1.5), (1.7, 2.0), (2.1, 2.4)], 2)
    assert log["seeks"] == 1


def test_unsorted_and_identical_spans(gop_video):
    clips = decode_video_frames(gop_video, [(6.0, 8.0), (0.0, 2.0), (0.0, 2.0)], 2)
    np.testing.assert_allclose([c.times_s for c in clips], [[6.0, 7.9], [0.0, 1.9], [0.0, 1.9]])
    np.testing.assert_array_equal(clips[1].frames, clips[2].frames)


def test_empty_span_raises(gop_video):
    with pytest.raises(ValueError, match="no video frame"):
        decode_video_frames(gop_video, [(12.0, 14.0)], 2)


def test_uniform_indices_matches_linspace_truncation():
    assert uniform_indices(50, 2) == [0, 49]
    assert uniform_indices(1, 2) == [0, 0]
    assert uniform_indices(10, 4) == [0, 3, 6, 9]


def test_variable_frame_rate_uses_pts(tmp_path):
    times = np.array([0.0, 0.1, 0.15, 0.5, 1.2, 1.25, 1.9, 2.6, 3.0, 3.05])
    p = write_mp4(tmp_path / "vfr.mp4", color_frames(len(times), 32, 32), 25, frame_times_s=times, gop_size=3)
    clips = decode_video_frames(p, [(0.12, 1.25), (1.25, 3.0)], 2)
    np.testing.assert_allclose(clips[0].times_s, [0.15, 1.2])
    np.testing.assert_allclose(clips[1].times_s, [1.25, 2.6])
    assert _indices(clips[1].frames) == [5, 7]


def test_nonzero_start_time_is_subtracted(tmp_path):
    p = write_mp4(tmp_path / "off.mp4", color_frames(30, 32, 32), 10, start_s=1.0, gop_size=4)
    info = probe(p)
    assert info.video.start_time_s == pytest.approx(1.0) and info.video.duration_s == pytest.approx(3.0)
    c = decode_video_frames(p, [(1.0, 2.0)], 2)[0]
    np.testing.assert_allclose(c.times_s, [1.0, 1.9])
    assert _indices(c.frames) == [10, 19]


@pytest.mark.parametrize("rotation", [90, -90, 180])
def test_rotation_metadata_is_applied(tmp_path, rotation):
    frames = color_frames(10, 48, 64)
    frames[:, :8, :8] = 255  # white marker in the stored top-left corner
    p = write_mp4(tmp_path / "rot.mp4", frames, 10, rotation=rotation)
    info = probe(p)
    assert info.video.rotation == rotation % 360
    expected_hw = (48, 64) if rotation == 180 else (64, 48)
    assert (info.video.height, info.video.width) == expected_hw
    img = decode_video_frames(p, [(0, 1)], 1)[0].frames[0]
    assert img.shape[:2] == expected_hw
    ref = np.rot90(frames[0], k=(rotation // 90) % 4)
    assert np.abs(img.astype(int) - ref.astype(int)).mean() < 4
    # counter-clockwise 90: stored top-left lands bottom-left
    corner = {90: img[-8:, :8], 270: img[:8, -8:], 180: img[-8:, -8:]}[rotation % 360]
    assert corner.mean() > 200


def test_audio_start_time_and_alignment(tmp_path):
    # AAC priming survives muxing when streams start at 1 s: the first decoded sample is before 1 s
    click = np.zeros((1, 48000), np.float32)
    click[0, 16000:16016] = 0.9
    p = write_mp4(tmp_path / "av.mp4", color_frames(75, 32, 32), 25, click, 16000, start_s=1.0)
    track = decode_audio_track(p)
    peak_container_s = track.start_time_s + np.argmax(np.abs(track.waveform[0])) / 16000
    assert peak_container_s == pytest.approx(2.0, abs=1e-3)
    w, sr = decode_audio_on_video_clock(p)
    assert np.argmax(np.abs(w[0])) / sr == pytest.approx(1.0, abs=1e-3)
    # align_audio pads a late start with zeros and never touches the track
    late = align_audio(track, track.start_time_s - 0.5)
    assert late.shape[1] == track.waveform.shape[1] + 8000 and not late[:, :8000].any()
