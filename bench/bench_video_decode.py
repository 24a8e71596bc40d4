"""Seek-based clip decoding vs decoding every frame.

Writes a 60 s, 25 fps, 640x360 H.264 mp4 with a keyframe every 25 frames, then times
``decode_video_frames`` for ImageBind's 5 clips of 2 s against one forward pass that decodes every
frame (keeping the same frames), checks both give identical frames, and prints both and the ratio.

    python bench/bench_video_decode.py [--seconds 60] [--gop 25] [--repeat 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from preprocess.clips import clip_spans
from preprocess.decode import decode_video_frames, uniform_indices


def write_video(path: Path, seconds: int, fps: int, gop: int, h: int = 360, w: int = 640) -> None:
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 64, size=(h, w, 3), dtype=np.uint8)
    with av.open(str(path), "w") as out:
        st = out.add_stream("libx264", rate=fps)
        st.width, st.height, st.pix_fmt = w, h, "yuv420p"
        st.codec_context.gop_size = gop
        st.codec_context.options = {"preset": "ultrafast", "bf": "0"}
        for i in range(seconds * fps):
            img = np.roll(texture, i * 3, axis=1) + np.uint8(i % 128)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            for pkt in st.encode(frame):
                out.mux(pkt)
        for pkt in st.encode(None):
            out.mux(pkt)


def decode_everything(path: Path, spans, frames_per_span: int) -> list[np.ndarray]:
    """Baseline: one forward pass over every frame (no seeking), same frame choice."""
    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        vs.thread_type = "AUTO"
        tb, start = vs.time_base, vs.start_time or 0
        frames = [(Fraction(f.pts - start) * tb, f) for f in c.decode(vs)]
        out = []
        for s, e in spans:
            kept = [f for t, f in frames if s <= t < e]
            out.append(np.stack([kept[j].to_ndarray(format="rgb24") for j in uniform_indices(len(kept), frames_per_span)]))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--fps", type=int, default=25)
    ap.add_argument("--gop", type=int, default=25)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.mp4"
        t = time.perf_counter()
        write_video(path, args.seconds, args.fps, args.gop)
        print(f"wrote {args.seconds} s @ {args.fps} fps, gop {args.gop}: {time.perf_counter() - t:.1f} s")
        spans = clip_spans(float(args.seconds), 2.0, 5)

        def best(fn):
            times, result = [], None
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                result = fn()
                times.append(time.perf_counter() - t0)
            return min(times), result

        t_seek, clips = best(lambda: decode_video_frames(path, spans, 2))
        t_full, full = best(lambda: decode_everything(path, spans, 2))
        for c, f in zip(clips, full):
            np.testing.assert_array_equal(c.frames, f)
        print(f"seek per span : {t_seek * 1000:8.1f} ms")
        print(f"decode all    : {t_full * 1000:8.1f} ms")
        print(f"speed-up      : {t_full / t_seek:8.1f}x  (identical frames)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
