import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _temporal_media import color_frames, read_index, sine, write_mp4, write_wav  # noqa: E402

from preprocess.audio_decode import (  # noqa: E402
    _audio_frame_to_float,
    align_audio,
    decode_audio,
    decode_audio_on_video_clock,
    decode_audio_track,
)
from preprocess.media import NoAudioStream, NoVideoStream, probe  # noqa: E402
from preprocess.video_decode import decode_video_clips, decode_video_frames  # noqa: E402
from preprocess.video_frames import DecodeStats, uniform_indices  # noqa: E402


def _indices(frames: np.ndarray) -> list[int]:
    return [read_index(f) for f in frames]


@pytest.fixture(scope="module")
def gop_video(tmp_path_factory):
    """10 s at 10 fps, keyframe every 5 frames, with stereo 16 kHz audio."""
    p = tmp_path_factory.mktemp("dec") / "gop.mp4"
    write_mp4(p, color_frames(100, 48, 64), 10, sine(440, 10.0, 16000, 2), 16000, gop_size=5)
    return p


def test_probe_mov_bbb(shared_dir):
    info = probe(shared_dir / "samples" / "video_av" / "mov_bbb.mp4")
    v, a = info.video, info.audio
    # decord's reference duration is 250 frames / 25 fps; the header's duration (499/50 s) is not
    assert v.n_frames == 250 and v.fps == 25.0 and v.duration_s == 10.0 and info.duration_s == 10.0
    assert (v.width, v.height, v.rotation, v.start_time_s) == (320, 176, 0, 0.0)
    assert (a.sample_rate, a.channels, a.start_time_s) == (44100, 2, 0.0)


def test_decode_audio_mov_bbb_keeps_every_aac_frame(shared_dir):
    w, sr = decode_audio(shared_dir / "samples" / "video_av" / "mov_bbb.mp4")
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
    assert [list(np.round(c.times_s, 6)) for c in many] == [
        [0.5, 0.9, 1.4],
        [5.0, 5.4, 5.9],
        [7.3, 7.7, 8.2],
        [8.0, 8.4, 8.9],
    ]


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
    import preprocess.video_decode as dec

    log = {"seeks": 0, "packets": 0}
    real_open = dec.open_media
    monkeypatch.setattr(dec, "open_media", lambda path: _SpyContainer(real_open(path), log))
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


# ------------------------------------------------------------------ planned decoding: exact frames


def _write_x264(path, frames: np.ndarray, fps: int, x264_params: str, fmt: str | None = None, preset: str = "fast"):
    """H.264 with B-frames (the shared helper turns them off), muxed as ``fmt``."""
    import av

    with av.open(str(path), "w", format=fmt) as out:
        vs = out.add_stream("libx264", rate=fps)
        vs.height, vs.width = frames.shape[1:3]
        vs.pix_fmt = "yuv420p"
        vs.codec_context.options = {"preset": preset, "x264-params": x264_params}
        for i, img in enumerate(frames):
            f = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            f.pts, f.time_base = i, Fraction(1, fps)
            for pkt in vs.encode(f):
                out.mux(pkt)
        for pkt in vs.encode(None):
            out.mux(pkt)
    return path


def _every_frame(path):
    """(time, rgb) of every frame, from one decode without seeking (the ground truth)."""
    import av

    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        tb, start = vs.time_base, vs.start_time or 0
        out = [(Fraction(f.pts - start) * tb, f.to_ndarray(format="rgb24")) for f in c.decode(vs)]
    return sorted(out, key=lambda x: x[0])


def _brute_force(every, spans, n, limit=None):
    clips = []
    for s, e in spans:
        kept = [(t, img) for t, img in every if Fraction(s) <= t < Fraction(e) and (limit is None or t < limit)]
        sel = [kept[j] for j in uniform_indices(len(kept), n)]
        clips.append((np.array([float(t) for t, _ in sel]), np.stack([img for _, img in sel])))
    return clips


SPAN_SETS = [
    [(0, 0.8), (0.8, 1.6), (1.6, 2.4), (2.4, 3.2), (3.2, 4.8)],  # tiling, as ImageBind's clips
    [(0.3, 1.1), (2.05, 2.5), (3.9, 4.7)],  # sparse: seeks
    [(3.9, 4.7), (0.7, 0.9), (0.7, 0.9), (0.0, 4.8), (0.75, 2.0)],  # unsorted, repeated, overlapping
]


@pytest.fixture(
    scope="module",
    params=[
        ("mp4", "keyint=20:min-keyint=20:bframes=3"),
        ("mp4", "keyint=30:bframes=5:b-pyramid=normal"),
        ("mp4", "keyint=20:min-keyint=20:open-gop=1:bframes=3"),
        ("matroska", "keyint=20:min-keyint=20:bframes=3"),
        ("mpegts", "keyint=20"),
    ],
    ids=["mp4-b3", "mp4-pyramid", "mp4-opengop", "mkv", "mpegts"],
)
def bframe_video(request, tmp_path_factory):
    fmt, params = request.param
    ext = {"mp4": "mp4", "matroska": "mkv", "mpegts": "ts"}[fmt]
    p = tmp_path_factory.mktemp("bf") / f"v.{ext}"
    return _write_x264(p, color_frames(120, 48, 64, seed=3), 25, params, fmt), _every_frame(p)


@pytest.mark.parametrize("spans", SPAN_SETS, ids=["tiling", "sparse", "mixed"])
@pytest.mark.parametrize("n", [2, 5])
def test_planned_decode_gives_the_frames_of_a_full_decode(bframe_video, spans, n):
    path, every = bframe_video
    stats = DecodeStats()
    clips = decode_video_frames(path, spans, n, duration_s=4.7, stats=stats)
    assert not stats.fallback  # the planned path handled it
    for clip, (times, frames) in zip(clips, _brute_force(every, spans, n, limit=Fraction(4.7))):
        np.testing.assert_array_equal(clip.times_s, times)
        np.testing.assert_array_equal(clip.frames, frames)  # bit-identical pixels
    assert stats.frames_used == n * len(spans)
    assert stats.frames_decoded < len(every) + 10


def test_non_reference_frames_are_skipped_not_guessed(bframe_video):
    path, every = bframe_video
    if path.suffix != ".mp4":
        pytest.skip("one container is enough")
    stats = DecodeStats()
    spans = SPAN_SETS[0]
    clips = decode_video_frames(path, spans, 2, stats=stats)
    # the B-frames nothing references are sent but skipped by the decoder, unless kept
    assert stats.frames_decoded < 0.8 * stats.packets_decoded
    for clip, (times, frames) in zip(clips, _brute_force(every, spans, 2)):
        np.testing.assert_array_equal(clip.frames, frames)


def test_threads_do_not_change_frames(bframe_video):
    path, _ = bframe_video
    a = decode_video_frames(path, SPAN_SETS[1], 3, threads=1)
    b = decode_video_frames(path, SPAN_SETS[1], 3, threads=0)
    c = decode_video_frames(path, SPAN_SETS[1], 3, threads=3)
    for x, y, z in zip(a, b, c):
        np.testing.assert_array_equal(x.frames, y.frames)
        np.testing.assert_array_equal(x.frames, z.frames)


def test_fallback_decodes_forward_with_the_same_result(gop_video, monkeypatch):
    import preprocess.span_planner as planner
    import preprocess.video_decode as dec

    spans = [(0.5, 1.5), (5.0, 6.0), (7.25, 8.25), (8.0, 9.0)]
    planned = dec.decode_video_frames(gop_video, spans, 3)

    def refuse(self, fspans):
        raise planner.PlanFallback

    monkeypatch.setattr(planner.SpanPlanner, "run", refuse)
    stats = DecodeStats()
    forward = dec.decode_video_frames(gop_video, spans, 3, stats=stats)
    assert stats.fallback
    for a, b in zip(planned, forward):
        np.testing.assert_array_equal(a.times_s, b.times_s)
        np.testing.assert_array_equal(a.frames, b.frames)


def test_decode_video_clips_is_probe_plus_decode_video_frames(shared_dir):
    path = shared_dir / "samples" / "video_av" / "mov_bbb.mp4"
    make = lambda d: [(Fraction(i * 2), Fraction(i * 2 + 2)) for i in range(5)]  # noqa: E731
    duration, spans, clips = decode_video_clips(path, make, 2)
    assert duration == probe(path).video.duration_s == 10.0
    assert spans == make(duration)
    ref = decode_video_frames(path, spans, 2, duration_s=duration)
    for a, b in zip(clips, ref):
        np.testing.assert_array_equal(a.frames, b.frames)
    assert [list(c.times_s) for c in clips] == [[0.0, 1.96], [2.0, 3.96], [4.0, 5.96], [6.0, 7.96], [8.0, 9.96]]


def test_decode_video_clips_without_video_raises(tmp_path):
    p = write_mp4(tmp_path / "a.mp4", None, audio=sine(440, 1.0, 16000), sample_rate=16000)
    with pytest.raises(NoVideoStream):
        decode_video_clips(p, lambda d: [(0, 1)], 2)


# ------------------------------------------------------------------ audio: whole-track conversion, opens


def _plain_decode(path):
    """Audio as the per-frame route gives it, from a container opened with FFmpeg's defaults."""
    import av

    with av.open(str(path)) as c:
        st = c.streams.audio[0]
        frames = [f for f in c.decode(st) if f.samples]
        return np.concatenate([_audio_frame_to_float(f) for f in frames], axis=1), frames[0].sample_rate


@pytest.mark.parametrize("codec", ["pcm_s16le", "pcm_u8", "pcm_s32le", "pcm_s24le", "pcm_f32le", "pcm_f64le"])
@pytest.mark.parametrize("channels", [1, 2, 6])
def test_whole_track_conversion_equals_per_frame_conversion(tmp_path, codec, channels):
    rng = np.random.default_rng(channels)
    x = np.clip(0.4 * rng.standard_normal((channels, 20000)), -1, 1).astype(np.float32)
    p = write_wav(tmp_path / "a.wav", x, 22050, codec)
    w, sr = decode_audio(p)
    ref, ref_sr = _plain_decode(p)
    assert sr == ref_sr == 22050 and w.dtype == np.float32
    np.testing.assert_array_equal(w, ref)


def test_audio_opens_decode_like_a_default_open(shared_dir, tmp_path):
    files = [
        shared_dir / "samples" / "video_av" / "mov_bbb.mp4",
        shared_dir / "samples" / "imagebind" / "dog_audio.wav",
        write_mp4(tmp_path / "av.mp4", color_frames(75, 32, 32), 25, sine(440, 3.0, 48000, 6), 48000, start_s=1.0),
        write_mp4(tmp_path / "a.mp4", None, audio=sine(440, 2.0, 22050, 2), sample_rate=22050),
    ]
    for p in files:
        w, sr = decode_audio(p)
        ref, ref_sr = _plain_decode(p)
        assert sr == ref_sr
        np.testing.assert_array_equal(w, ref)
