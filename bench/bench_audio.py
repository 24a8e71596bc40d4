"""Benchmark: ImageBind's audio clips per second, ``audio_model_input`` vs a reference-style path.

- ours: ``audio_model_input`` (one open container; only the samples the 3 clips use are resampled,
  exactly as resampling everything would give them, see ``preprocess.audio``);
- baseline (what the reference does): open the file with PyAV's defaults, decode the whole track
  (same PyAV decoding and on the same clock), resample all of it with
  ``torchaudio.functional.resample``, then slice the 3 clips (in-place mean removal on views of the
  resampled waveform), Kaldi fbank of channel 0, pad to 204 frames, normalize.

Inputs: the three ImageBind sample WAVs and ``mov_bbb.mp4`` from ``../shared/samples`` when present,
and, generated here: an AudioSet-like 10 s mp4 (H.264 640x360 + AAC 44.1 kHz stereo), a 60 s
48 kHz stereo AAC (m4a), a 30 s 22.05 kHz mono WAV and a 20 s 8 kHz mono WAV. The two outputs are
asserted bit-identical (``np.array_equal``) for every input before timing. Rounds alternate
between the two paths; each path's median round gives clips/s (3 clips per file).

    python bench/bench_audio.py [--rounds 7] [--torch-threads 1]
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
import torchaudio

from pipelines.synth.media import encode_audio
from preprocess.audio import AudioConfig, audio_model_input, normalize_log_mel
from preprocess.audio_decode import AudioTrack, _audio_frame_to_float, align_audio


def reference_style(path: Path, cfg: AudioConfig = AudioConfig()) -> np.ndarray:
    """Decode everything, resample everything, then slice (ImageBind's order of work)."""
    with av.open(str(path)) as c:
        st = c.streams.audio[0]
        chunks, start, rate = [], None, None
        for frame in c.decode(st):
            if frame.samples == 0:
                continue
            if rate is None:
                rate = frame.sample_rate
                start = Fraction(frame.pts) * frame.time_base if frame.pts is not None else Fraction(0)
            chunks.append(_audio_frame_to_float(frame))
        wave = np.concatenate(chunks, axis=1)
        if c.streams.video:
            vs = c.streams.video[0]
            wave = align_audio(AudioTrack(wave, rate, float(start)), float(Fraction(vs.start_time or 0) * vs.time_base))
    w = torch.tensor(wave, dtype=torch.float32)
    if rate != cfg.sample_rate:
        w = torchaudio.functional.resample(w, rate, cfg.sample_rate)
    duration = w.shape[1] / cfg.sample_rate
    max_start = Fraction(max(duration - cfg.clip_duration, 0.0))
    out = []
    for i in range(cfg.clips_per_video):
        s = max_start * i / (cfg.clips_per_video - 1)
        clip = w[:, int(s * cfg.sample_rate) : int((s + Fraction(cfg.clip_duration)) * cfg.sample_rate)]
        clip -= clip.mean()
        fb = torchaudio.compliance.kaldi.fbank(
            clip,
            htk_compat=True,
            sample_frequency=cfg.sample_rate,
            use_energy=False,
            window_type="hanning",
            num_mel_bins=cfg.num_mel_bins,
            dither=0.0,
            frame_length=cfg.frame_length,
            frame_shift=cfg.frame_shift,
        ).T
        fb = torch.nn.functional.pad(fb, (0, max(cfg.target_length - fb.shape[1], 0)))[:, : cfg.target_length]
        out.append(fb)
    return normalize_log_mel(torch.stack(out).unsqueeze(1).numpy(), cfg)


def _write_audio(path: Path, wave: np.ndarray, rate: int, codec: str) -> Path:
    with av.open(str(path), "w") as out:
        st = out.add_stream(codec, rate=rate)
        st.layout = {1: "mono", 2: "stereo"}[wave.shape[0]]
        encode_audio(out, st, wave)
    return path


def _signal(seconds: float, rate: int, channels: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    chans = [
        0.25 * np.sin(2 * np.pi * (300 + 200 * c) * t) * (1 + 0.5 * np.sin(2 * np.pi * 0.7 * t))
        + 0.03 * rng.standard_normal(t.size)
        for c in range(channels)
    ]
    return np.stack(chans).astype(np.float32)


def inputs(tmp: Path) -> list[tuple[str, Path]]:
    files = []
    shared = Path(os.environ.get("BINDSET_SHARED", Path(__file__).resolve().parents[1].parent / "shared")) / "samples"
    for name, rel in (
        ("dog.wav", "imagebind/dog_audio.wav"),
        ("car.wav", "imagebind/car_audio.wav"),
        ("bird.wav", "imagebind/bird_audio.wav"),
        ("mov_bbb.mp4", "video_av/mov_bbb.mp4"),
    ):
        if (shared / rel).is_file():
            files.append((name, shared / rel))
    from bench_video_decode import write_h264

    files.append(
        (
            "audioset 10s 44.1k AAC mp4",
            write_h264(tmp / "audioset.mp4", 10, 25, 640, 360, audio=_signal(10, 44100, 2, 0), sample_rate=44100),
        )
    )
    files.append(("60s 48k stereo AAC m4a", _write_audio(tmp / "long.m4a", _signal(60, 48000, 2, 1), 48000, "aac")))
    files.append(
        ("30s 22.05k mono WAV", _write_audio(tmp / "mono22.wav", _signal(30, 22050, 1, 2), 22050, "pcm_s16le"))
    )
    files.append(("20s 8k mono WAV", _write_audio(tmp / "mono8.wav", _signal(20, 8000, 1, 3), 8000, "pcm_s16le")))
    return files


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--torch-threads", type=int, default=1, help="torch intra-op threads (0: leave as is)")
    args = ap.parse_args(argv)
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    with tempfile.TemporaryDirectory() as tmp:
        files = inputs(Path(tmp))
        print(f"torch threads {torch.get_num_threads()}; {args.rounds} alternating rounds, median round")
        for name, path in files:  # also warms kernels and the resampling self-check
            a, _ = audio_model_input(path)
            b = reference_style(path)
            assert np.array_equal(a, b), f"{name}: outputs differ (max {np.abs(a - b).max()})"
        print(f"outputs bit-identical (max abs diff 0) on all {len(files)} inputs")
        rows, tot = [], {"ours": 0.0, "baseline": 0.0}
        for name, path in files:
            t = {"ours": [], "baseline": []}
            fns = {"ours": lambda: audio_model_input(path), "baseline": lambda: reference_style(path)}
            for r in range(args.rounds):
                for k in ("ours", "baseline") if r % 2 == 0 else ("baseline", "ours"):
                    t0 = time.perf_counter()
                    fns[k]()
                    t[k].append(time.perf_counter() - t0)
            m = {k: float(np.median(v)) for k, v in t.items()}
            for k in m:
                tot[k] += m[k]
            rows.append((name, 3 / m["ours"], 3 / m["baseline"], m["baseline"] / m["ours"]))
        print(f"{'input':30s} {'ours clips/s':>13s} {'baseline':>10s} {'ratio':>7s}")
        for name, o, b, r in rows:
            print(f"{name:30s} {o:13.0f} {b:10.0f} {r:6.2f}x")
        n = 3 * len(files)
        print(
            f"{'all inputs':30s} {n / tot['ours']:13.0f} {n / tot['baseline']:10.0f} {tot['baseline'] / tot['ours']:6.2f}x"
        )
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
