"""Benchmark: ImageBind's video tensor from a long video, decoding only what the clips need vs
decoding every frame (what the reference does).

Writes (PyAV, libx264 ``fast`` preset, in a temporary folder) a 60 s, 1280x720, 30 fps H.264 video
with a keyframe every 2 s (GOP 60, B-frames as the preset makes them) showing a panning textured
scene, then times two ways to the reference video tensor ``[15,3,2,224,224]`` (5 clips of 2 s,
first and last frame of each, 3 crops):

- ours: ``video_model_input`` (one open container; packets demuxed from the keyframe before each
  clip, only the kept frames and what they reference decoded, see ``preprocess.span_planner``);
- baseline: one forward pass that decodes every frame (same decoder threads), keeping the frames
  inside the clips, then the same frame choice and ``video_frames_to_model_input``. It converts only
  the 10 chosen frames to RGB (the reference converts every frame), so it is a generous baseline.

The two tensors are asserted identical (``np.array_equal``) before timing. Rounds alternate
between the two (load from other processes hits both alike); each reports its median and best
wall time and its CPU time (all threads of the process). Also printed: frames decoded per frame
used, for both.

    python bench/bench_video_decode.py [--seconds 60] [--rounds 5] [--threads 0] [--torch-threads 1] [--video FILE]
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

from pipelines.synth.media import encode_audio
from preprocess.video import VideoConfig, video_clip_spans, video_frames_to_model_input
from preprocess.video_decode import decode_video_clips
from preprocess.video_frames import DecodeStats, uniform_indices

# --------------------------------------------------------------------------------- synthetic video


def _smooth_texture(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """``[h,w,3] float32`` multi-scale value noise (bilinear-upsampled random grids), mean 120."""
    img = np.zeros((h, w, 3), np.float32)
    for cell, amp in ((96, 80), (24, 45), (6, 25), (2, 10)):
        gh, gw = h // cell + 2, w // cell + 2
        grid = rng.standard_normal((gh, gw, 3)).astype(np.float32)
        ys, xs = np.linspace(0, gh - 1.001, h), np.linspace(0, gw - 1.001, w)
        y0, x0 = ys.astype(int), xs.astype(int)
        fy, fx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
        top = grid[y0][:, x0] * (1 - fx) + grid[y0][:, x0 + 1] * fx
        bottom = grid[y0 + 1][:, x0] * (1 - fx) + grid[y0 + 1][:, x0 + 1] * fx
        img += amp * (top * (1 - fy) + bottom * fy)
    return img + 120


def scene_frames(n: int, h: int, w: int, seed: int = 0):
    """``n`` frames ``[h,w,3] uint8`` of a camera panning over a textured scene with a moving block
    and sensor-like grain: content an H.264 encoder treats like natural video (P/B-frames with real
    motion, a few hundred kbit/s at 360p), cheap to make."""
    rng = np.random.default_rng(seed)
    pan_x, pan_y = w // 2, h // 4
    world = np.clip(_smooth_texture(h + pan_y, w + pan_x, rng), 0, 255).astype(np.int16)
    grain = rng.normal(0, 3.0, size=(8, h, w, 3)).astype(np.int16)
    block = max(h // 12, 4)
    for i in range(n):
        x = int(round(pan_x * i / max(n - 1, 1)))
        y = int(round(pan_y / 2 * (1 + math.sin(i / 40))))
        f = world[y : y + h, x : x + w] + grain[i % 8]
        cy = int(h / 2 + h / 3 * math.sin(i / 17))
        cx = int(w / 2 + w / 3 * math.cos(i / 23))
        f[max(cy - block, 0) : cy + block, max(cx - block, 0) : cx + block] = (230, 40, 40)
        yield np.clip(f, 0, 255).astype(np.uint8)


def write_h264(
    path: Path,
    seconds: float,
    fps: int,
    width: int,
    height: int,
    *,
    gop: int | None = None,
    preset: str = "fast",
    audio: np.ndarray | None = None,
    sample_rate: int = 44100,
    seed: int = 0,
) -> Path:
    """H.264 (libx264, yuv420p, ``preset``, keyframe every ``gop`` frames when given) and optional
    AAC audio ``[C,N] float32`` into an mp4."""
    n = int(round(seconds * fps))
    with av.open(str(path), "w", format="mp4") as out:
        vs = out.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        opts = {"preset": preset}
        if gop:
            vs.codec_context.gop_size = gop
            opts["x264-params"] = f"keyint={gop}:min-keyint={gop}:scenecut=0"
        vs.codec_context.options = opts
        ast = None
        if audio is not None:
            ast = out.add_stream("aac", rate=sample_rate)
            ast.layout = {1: "mono", 2: "stereo"}[audio.shape[0]]
        for i, img in enumerate(scene_frames(n, height, width, seed)):
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            for pkt in vs.encode(frame):
                out.mux(pkt)
        for pkt in vs.encode(None):
            out.mux(pkt)
        if ast is not None:
            encode_audio(out, ast, audio)
    return path


# ----------------------------------------------------------------------------------------- paths


def ours(path: Path, cfg: VideoConfig, threads: int | None, stats: DecodeStats | None = None) -> np.ndarray:
    """``video_model_input``'s steps, with the decode statistics exposed."""
    _, _, clips = decode_video_clips(
        path, lambda d: video_clip_spans(d, cfg), cfg.frames_per_clip, threads=threads, stats=stats
    )
    return video_frames_to_model_input(np.stack([c.frames for c in clips]), cfg)


def decode_everything(path: Path, cfg: VideoConfig, threads: int | None, counts: dict | None = None) -> np.ndarray:
    """Baseline: duration from the header (frames / rate, as decord), one forward pass decoding
    every frame; each clip's frames are held until the pass leaves the clip, then the same choice
    (converted to RGB) and ``video_frames_to_model_input``."""
    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        vs.thread_type = "AUTO"
        if threads:
            vs.codec_context.thread_count = threads
            if threads == 1:
                vs.thread_type = "NONE"
        tb, start = vs.time_base, vs.start_time or 0
        duration = vs.frames / Fraction(vs.average_rate)
        spans = video_clip_spans(float(duration), cfg)
        held: list[list] = [[] for _ in spans]
        clips: list[np.ndarray | None] = [None] * len(spans)

        def finish(k: int) -> None:
            frames = sorted(held[k], key=lambda tf: tf[0])
            chosen = [frames[j][1] for j in uniform_indices(len(frames), cfg.frames_per_clip)]
            clips[k] = np.stack([f.to_ndarray(format="rgb24") for f in chosen])
            held[k] = []

        decoded = 0
        for frame in c.decode(vs):
            decoded += 1
            t = Fraction(frame.pts - start) * tb
            for k, (s, e) in enumerate(spans):
                if clips[k] is None:
                    if s <= t < e and t < duration:
                        held[k].append((t, frame))
                    elif t >= e + 1 and held[k]:  # 1 s past the end: no reordered frame can still come
                        finish(k)
        for k in range(len(spans)):
            if clips[k] is None:
                finish(k)
    if counts is not None:
        counts.update(decoded=decoded, used=sum(len(c) for c in clips))
    return video_frames_to_model_input(np.stack(clips), cfg)


def _timed(fn):
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w0, time.process_time() - c0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--fps", type=int, default=30)
    ap.add_argument("--size", default="1280x720")
    ap.add_argument("--gop", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="decoder threads for both paths (0 = FFmpeg's choice)")
    ap.add_argument("--torch-threads", type=int, default=1, help="torch intra-op threads (0: leave as is)")
    ap.add_argument("--video", type=Path, help="use this file (written here first if it does not exist)")
    args = ap.parse_args(argv)
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    w, h = (int(v) for v in args.size.split("x"))
    cfg = VideoConfig()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.video or Path(tmp) / "bench.mp4"
        if not path.exists():
            t = time.perf_counter()
            write_h264(path, args.seconds, args.fps, w, h, gop=args.gop, preset="fast")
            print(
                f"wrote {args.seconds:g} s {w}x{h} @ {args.fps} fps, keyframe every {args.gop} frames, "
                f"libx264 fast: {path.stat().st_size / 1e6:.1f} MB in {time.perf_counter() - t:.0f} s"
            )
        with av.open(str(path)) as c:
            vs = c.streams.video[0]
            print(
                f"video: {vs.frames} frames, {vs.codec_context.width}x{vs.codec_context.height}, "
                f"B-frames: {bool(vs.codec_context.has_b_frames)}"
            )

        stats, counts = DecodeStats(), {}
        a = ours(path, cfg, args.threads, stats)
        b = decode_everything(path, cfg, args.threads, counts)
        assert a.shape == (15, 3, 2, 224, 224) and np.array_equal(a, b), "outputs differ"
        print(f"outputs identical: {a.shape} float32, max abs diff {np.abs(a - b).max()}")

        times = {"ours": [], "baseline": []}
        runs = {
            "ours": lambda: ours(path, cfg, args.threads),
            "baseline": lambda: decode_everything(path, cfg, args.threads),
        }
        for r in range(args.rounds):
            names = ("ours", "baseline") if r % 2 == 0 else ("baseline", "ours")
            for name in names:
                times[name].append(_timed(runs[name]))
        med = {k: (float(np.median([x[0] for x in v])), float(np.median([x[1] for x in v]))) for k, v in times.items()}
        best = {k: min(x[0] for x in v) for k, v in times.items()}
        threads = "FFmpeg's choice" if args.threads == 0 else args.threads
        print(
            f"decoder threads: {threads}, torch threads {torch.get_num_threads()}; {args.rounds} alternating "
            f"rounds; wall median (best), CPU median"
        )
        for k in ("ours", "baseline"):
            print(f"  {k:9s}: {med[k][0] * 1000:8.1f} ms ({best[k] * 1000:.1f})   CPU {med[k][1] * 1000:8.1f} ms")
        print(
            f"speed-up  : {med['baseline'][0] / med['ours'][0]:.2f}x wall (median), "
            f"{best['baseline'] / best['ours']:.2f}x (best), {med['baseline'][1] / med['ours'][1]:.2f}x CPU"
        )
        print(
            f"frames decoded per frame used: ours {stats.frames_decoded / stats.frames_used:.1f} "
            f"({stats.frames_decoded} decoded, {stats.packets_decoded} packets sent, {stats.packets_demuxed} demuxed, "
            f"{stats.seeks} seeks), baseline {counts['decoded'] / counts['used']:.1f} ({counts['decoded']})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
