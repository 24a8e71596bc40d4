"""Benchmark: AudioSet-like samples -> model-ready video + audio tensors per second, ours vs a
reference-style path.

Samples (generated here, in a temporary folder): 10 s mp4s, H.264 640x360 at 25 fps (libx264
``fast``, keyframe every 2 s, B-frames as the preset makes them; a panning textured scene with a
moving block and grain) with AAC 44.1 kHz stereo. Each sample becomes ImageBind's video tensor
``[15,3,2,224,224]`` and audio tensor ``[3,1,128,204]``:

- ours: ``video_model_input(path)`` + ``audio_model_input(path)``. The five reference clips tile the
  whole video, so every frame it references must be decoded; it decodes from one open container,
  skips non-reference frames it does not keep, and converts to RGB only the 10 frames kept;
- baseline (how the reference works): open with PyAV's defaults, decode every frame converting
  each to RGB (as pytorchvideo's PyAV decoder does), pick the frames, then the same
  ``video_frames_to_model_input``; audio: ``bench_audio.reference_style`` (decode all, resample all,
  then slice).

Outputs are asserted bit-identical per sample before timing. Rounds alternate between the paths;
samples/s is from each path's median round. Also printed: CPU seconds per sample (all threads of
the process), i.e. samples per CPU-second = per core. Defaults measure one core: decoder threads 1,
torch threads 1. ``--threads 0`` lets FFmpeg use its threads (then samples/s per core =
samples/s / cores used).

    python bench/bench_audioset_samples.py [--samples 4] [--rounds 5] [--threads 1] [--torch-threads 1]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_audio import _signal, reference_style  # noqa: E402
from bench_video_decode import write_h264  # noqa: E402

from preprocess.audio import audio_model_input  # noqa: E402
from preprocess.video import VideoConfig, video_clip_spans, video_frames_to_model_input, video_model_input  # noqa: E402
from preprocess.video_frames import uniform_indices  # noqa: E402


def reference_video(path: Path, threads: int, cfg: VideoConfig = VideoConfig()) -> np.ndarray:
    """Every frame decoded and converted to RGB, then the clip frames picked (pytorchvideo's PyAV
    decoder; decord likewise decodes every frame of a clip)."""
    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        if threads == 1:
            vs.thread_type = "NONE"
            vs.codec_context.thread_count = 1
        else:
            vs.thread_type = "AUTO"
            vs.codec_context.thread_count = threads
        tb, start = vs.time_base, vs.start_time or 0
        duration = vs.frames / Fraction(vs.average_rate)  # decord: frames / average fps
        decoded = [(Fraction(f.pts - start) * tb, f.to_ndarray(format="rgb24")) for f in c.decode(vs)]
    decoded.sort(key=lambda tf: tf[0])
    clips = []
    for s, e in video_clip_spans(float(duration), cfg):
        kept = [img for t, img in decoded if s <= t < e and t < duration]
        clips.append(np.stack([kept[j] for j in uniform_indices(len(kept), cfg.frames_per_clip)]))
    return video_frames_to_model_input(np.stack(clips), cfg)


def ours(path: Path, threads: int) -> tuple[np.ndarray, np.ndarray]:
    return video_model_input(path, threads=threads)[0], audio_model_input(path)[0]


def baseline(path: Path, threads: int) -> tuple[np.ndarray, np.ndarray]:
    return reference_video(path, threads), reference_style(path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="decoder threads, both paths (0 = FFmpeg's choice)")
    ap.add_argument("--torch-threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.torch_threads)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        paths = [
            write_h264(
                Path(tmp) / f"s{i}.mp4",
                10,
                25,
                640,
                360,
                gop=50,
                preset="fast",
                audio=_signal(10, 44100, 2, seed=i),
                sample_rate=44100,
                seed=i,
            )
            for i in range(args.samples)
        ]
        mb = sum(p.stat().st_size for p in paths) / len(paths) / 1e6
        print(
            f"{len(paths)} samples of 10 s 640x360 25 fps H.264 + AAC 44.1 kHz stereo ({mb:.2f} MB each), "
            f"written in {time.perf_counter() - t0:.0f} s"
        )
        for p in paths:  # identical outputs; also warms caches and the resampling self-check
            (va, aa), (vb, ab) = ours(p, args.threads), baseline(p, args.threads)
            assert va.shape == (15, 3, 2, 224, 224) and aa.shape == (3, 1, 128, 204)
            assert np.array_equal(va, vb) and np.array_equal(aa, ab), f"{p.name}: outputs differ"
        print("outputs bit-identical (video and audio) for every sample")

        fns = {"ours": ours, "baseline": baseline}
        wall = {k: [] for k in fns}
        cpu = {k: [] for k in fns}
        for r in range(args.rounds):
            for k in ("ours", "baseline") if r % 2 == 0 else ("baseline", "ours"):
                w0, c0 = time.perf_counter(), time.process_time()
                for p in paths:
                    fns[k](p, args.threads)
                wall[k].append(time.perf_counter() - w0)
                cpu[k].append(time.process_time() - c0)
        n = len(paths)
        thr = "FFmpeg's choice" if args.threads == 0 else args.threads
        print(
            f"decoder threads {thr}, torch threads {torch.get_num_threads()}, {os.cpu_count()} CPUs; "
            f"{args.rounds} alternating rounds of {n} samples, median round"
        )
        res = {}
        for k in fns:
            sps = n / float(np.median(wall[k]))
            per_cpu_s = n / float(np.median(cpu[k]))
            res[k] = (sps, per_cpu_s)
            print(
                f"  {k:9s}: {sps:6.2f} samples/s wall, {1000 / per_cpu_s:7.1f} ms CPU per sample "
                f"= {per_cpu_s:5.2f} samples per CPU-second (per core)"
            )
        print(
            f"ratio     : {res['ours'][0] / res['baseline'][0]:.2f}x wall, {res['ours'][1] / res['baseline'][1]:.2f}x per CPU-second"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
