import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _temporal_media import color_frames, read_index, write_mp4  # noqa: E402

from preprocess.video import (  # noqa: E402
    VideoConfig,
    short_side_scale,
    spatial_crop_offsets,
    video_clip_frames,
    video_clip_spans,
    video_frames_to_model_input,
    video_model_input,
)


def test_matches_imagebind_reference(shared_dir):
    ref = np.load(shared_dir / "reference" / "imagebind" / "video_mov_bbb.npy")[0]
    out, spans = video_model_input(shared_dir / "samples" / "video_av" / "mov_bbb.mp4")
    assert out.shape == (15, 3, 2, 224, 224) and out.dtype == np.float32
    diff = np.abs(out - ref)
    assert diff.mean() <= 1e-3 and diff.max() <= 1e-3  # bit-identical here
    assert spans == [(0.0, 2.0), (2.0, 4.0), (4.0, 6.0), (6.0, 8.0), (8.0, 10.0)]


def test_mov_bbb_keeps_first_and_last_frame_of_each_clip(shared_dir):
    frames, _ = video_clip_frames(shared_dir / "samples" / "video_av" / "mov_bbb.mp4")
    assert frames.shape == (5, 2, 176, 320, 3) and frames.dtype == np.uint8
    assert spatial_crop_offsets(224, 407, 224, 3) == [(0, 0), (0, 92), (0, 183)]


def test_frame_selection_follows_ceil_semantics(tmp_path):
    # 7 s at 25 fps: starts k*5/4 s; clip 1 = [1.25, 3.25) -> frames ceil(31.25)=32 .. ceil(81.25)-1=81
    p = write_mp4(tmp_path / "v.mp4", color_frames(175, 32, 48), 25, gop_size=10)
    frames, spans = video_clip_frames(p)
    assert spans[1] == (1.25, 3.25)
    got = [[read_index(f) for f in clip] for clip in frames]
    assert got == [[0, 49], [32, 81], [63, 112], [94, 143], [125, 174]]


def test_short_video_repeats_the_whole_clip(tmp_path):
    p = write_mp4(tmp_path / "short.mp4", color_frames(10, 32, 48), 10)
    frames, spans = video_clip_frames(p)
    assert spans == [(0.0, 2.0)] * 5
    assert all([read_index(f) for f in clip] == [0, 9] for clip in frames)


def test_portrait_crops_are_top_center_bottom(tmp_path):
    h, w = 80, 48
    ramp = np.linspace(0, 255, h).astype(np.uint8)[None, :, None, None]
    frames = np.broadcast_to(ramp, (30, h, w, 3)).copy()
    p = write_mp4(tmp_path / "portrait.mp4", frames, 10)
    out, _ = video_model_input(p)
    assert out.shape == (15, 3, 2, 224, 224)
    # scaled to 373x224 (floor(80/48*224)); crops at y = 0, ceil(149/2) = 75, 149
    assert spatial_crop_offsets(373, 224, 224, 3) == [(0, 0), (75, 0), (149, 0)]
    means = out[:3].mean(axis=(1, 2, 3, 4))
    assert means[0] < means[1] < means[2]
    # the rows of a vertical ramp are constant across x: crops differ only vertically
    assert np.abs(out[1, :, :, :, 0] - out[1, :, :, :, -1]).max() < 0.05


def test_model_input_layout_is_clip_major_and_pure():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(2, 2, 60, 100, 3), dtype=np.uint8)
    before = frames.copy()
    cfg = VideoConfig(clips_per_video=2)
    out = video_frames_to_model_input(frames, cfg)
    np.testing.assert_array_equal(frames, before)
    assert out.shape == (6, 3, 2, 224, 224)
    # independent: entry clip*3+crop is the crop of the scaled, normalized clip
    x = torch.from_numpy(frames[1]).permute(3, 0, 1, 2).float() / 255.0
    x = torch.nn.functional.interpolate(x, size=(224, math.floor(100 / 60 * 224)), mode="bilinear", align_corners=False)
    mean = torch.tensor(cfg.mean)[:, None, None, None]
    std = torch.tensor(cfg.std)[:, None, None, None]
    x = ((x - mean) / std).numpy()
    np.testing.assert_allclose(out[3 + 2], x[:, :, :, 373 - 224 :], atol=1e-6)
    np.testing.assert_allclose(out[3 + 1], x[:, :, :, 75 : 75 + 224], atol=1e-6)


def test_short_side_scale_is_not_antialiased():
    x = torch.zeros(1, 1, 672, 1008)
    x[..., ::3, ::3] = 1.0  # a grid of period 3: a 3x bilinear downscale samples only the gaps
    y = short_side_scale(x, 224)
    assert y.shape == (1, 1, 224, 336)
    assert y.max() == 0  # aliased away, exactly what ShortSideScale (no antialias) does
    antialiased = torch.nn.functional.interpolate(x, size=(224, 336), mode="bilinear", antialias=True)
    assert antialiased.mean() > 0.05


def test_spans_and_config():
    assert video_clip_spans(10.0) == [(0, 2), (2, 4), (4, 6), (6, 8), (8, 10)]
    assert video_clip_spans(1.5) == [(0, 2)] * 5
    with pytest.raises(ValueError):
        video_frames_to_model_input(np.zeros((2, 60, 100, 3), np.uint8))


def test_no_video_raises(tmp_path):
    from _temporal_media import sine

    p = write_mp4(tmp_path / "a.mp4", None, audio=sine(440, 1.0, 16000), sample_rate=16000)
    with pytest.raises(ValueError, match="no video"):
        video_model_input(p)


def test_model_input_with_b_frames_equals_decoding_every_frame(tmp_path):
    """ImageBind's clips tile the video; decoding only what the kept frames need (skipping the
    B-frames nothing references) gives the tensor a decode of every frame gives, bit for bit."""
    from fractions import Fraction

    import av

    from preprocess.video_frames import uniform_indices

    p = tmp_path / "b.mp4"
    frames = color_frames(175, 48, 80, seed=5)
    with av.open(str(p), "w") as out:
        vs = out.add_stream("libx264", rate=25)
        vs.width, vs.height, vs.pix_fmt = 80, 48, "yuv420p"
        vs.codec_context.options = {"preset": "fast", "x264-params": "keyint=50:bframes=3"}
        for i, img in enumerate(frames):
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            f.pts, f.time_base = i, Fraction(1, 25)
            for pkt in vs.encode(f):
                out.mux(pkt)
        for pkt in vs.encode(None):
            out.mux(pkt)
    with av.open(str(p)) as c:
        every = [
            (Fraction(f.pts) * c.streams.video[0].time_base, f.to_ndarray(format="rgb24")) for f in c.decode(video=0)
        ]
    every.sort(key=lambda x: x[0])
    clips = []
    for s, e in video_clip_spans(7.0):
        kept = [img for t, img in every if s <= t < e]
        clips.append(np.stack([kept[j] for j in uniform_indices(len(kept), 2)]))
    ref = video_frames_to_model_input(np.stack(clips))
    for threads in (None, 1):
        out, spans = video_model_input(p, threads=threads)
        assert spans[1] == (1.25, 3.25)
        np.testing.assert_array_equal(out, ref)
