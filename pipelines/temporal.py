"""Temporal modalities of one manifest row on one clock: video clips, audio clips, IMU window.

All times are seconds from the media start (the video stream's first frame; audio is aligned to that
clock by the decoder, Ego4D IMU canonical timestamps are already on it). A row with a time window
(``t0``/``t1``, e.g. an Ego4D narration) samples its clips inside that window; otherwise clips span
the whole media, as ImageBind does.
"""

from __future__ import annotations

import functools
from fractions import Fraction
from pathlib import Path

import numpy as np

from pipelines import faults
from pipelines.config import BuildConfig
from pipelines.sample_record import ProcessedSample, SampleError, _stage
from pipelines.sources.base import resolve_inside
from preprocess.audio import log_mel_clips
from preprocess.audio_decode import decode_audio_on_video_clock
from preprocess.clips import clip_spans
from preprocess.imu import imu_quality, imu_window, parse_ego4d_imu_csv
from preprocess.media import NoAudioStream, probe
from preprocess.video import video_frames_to_model_input
from preprocess.video_decode import decode_video_frames
from storage.location import local_copy

SILENCE_RMS = 1e-3  # -60 dBFS per 10 ms frame


def _path(row: dict, column: str) -> tuple[Path, str]:
    """A local file for a row's media (PyAV seeks in it): the file itself, or, for a source on an
    object store, a worker-local copy fetched once for all the samples and modalities that use it."""
    rel = row[column]
    try:
        faults.check_io("read", rel)
        location = resolve_inside(row["root"], rel)
    except (OSError, ValueError) as exc:
        raise SampleError("read", exc, rel) from exc
    if not location.is_file():
        raise SampleError("read", FileNotFoundError(f"{rel} does not exist"), rel)
    try:
        return local_copy(location), rel
    except OSError as exc:
        raise SampleError("read", exc, rel) from exc


def sample_window(row: dict, duration_s: float) -> tuple[float, float]:
    """The row's ``[t0, t1)`` clipped to the media, or the whole media."""
    t0, t1 = row.get("t0"), row.get("t1")
    if t0 is None or t1 is None:
        return 0.0, duration_s
    return max(0.0, float(t0)), min(duration_s, float(t1))


def _spans_in(window: tuple[float, float], clip_duration: float, clips: int) -> list[tuple[Fraction, Fraction]]:
    start = Fraction(window[0])
    return [(start + a, start + b) for a, b in clip_spans(window[1] - window[0], clip_duration, clips)]


def stored_video_pixels(model_input: np.ndarray, mean, std) -> np.ndarray:
    """Model-ready clips ``[N,3,F,S,S]`` -> uint8 for storage (the reader normalizes them back).
    Rounding to uint8 after the reference's float resize costs at most half a grey level."""
    m = np.asarray(mean, np.float32).reshape(1, 3, 1, 1, 1)
    s = np.asarray(std, np.float32).reshape(1, 3, 1, 1, 1)
    return np.clip(np.rint((model_input * s + m) * 255.0), 0, 255).astype(np.uint8)


def _video(row, cfg: BuildConfig, out: ProcessedSample) -> float:
    path, rel = _path(row, "uri_video")
    info = _stage("decode", rel, probe, path)
    if info.video is None:
        raise SampleError("decode", ValueError(f"{rel} has no video stream"), rel)
    duration = info.video.duration_s
    window = sample_window(row, duration)
    if window[1] <= window[0]:
        raise SampleError(
            "preprocess",
            ValueError(f"{rel}: window {row.get('t0')}..{row.get('t1')} s is outside the {duration:.2f} s video"),
            rel,
        )
    vc = cfg.video
    spans = _spans_in(window, vc.clip_duration, vc.clips_per_video)
    clips = _stage("decode", rel, decode_video_frames, path, spans, vc.frames_per_clip, duration_s=duration)
    frames = _stage("decode", rel, np.stack, [c.frames for c in clips])
    model_input = _stage("preprocess", rel, video_frames_to_model_input, frames, vc)
    t0 = [float(a) for a, _ in spans]
    t1 = [min(float(b), duration) for _, b in spans]
    covered = _union_length(list(zip(t0, t1)))
    out.add(
        "video",
        {"pixels": stored_video_pixels(model_input, vc.mean, vc.std)},
        video_clip_t0=t0,
        video_clip_t1=t1,
        media_duration_s=duration,
        fps=info.video.fps,
        q_clip_coverage=covered / duration if duration > 0 else 0.0,
    )
    return duration


def _union_length(spans: list[tuple[float, float]]) -> float:
    total, end = 0.0, -np.inf
    for a, b in sorted(spans):
        if b > end:
            total += b - max(a, end)
            end = b
    return total


def silence_fraction(waveform: np.ndarray, sample_rate: int) -> float:
    """Share of 10 ms frames (channel mean) quieter than -60 dBFS."""
    mono = waveform.mean(axis=0)
    hop = max(1, sample_rate // 100)
    n = mono.size // hop
    if n == 0:
        return 1.0
    rms = np.sqrt((mono[: n * hop].reshape(n, hop) ** 2).mean(axis=1))
    return float((rms < SILENCE_RMS).mean())


@functools.lru_cache(maxsize=1)
def _decoded_audio(path: str, mtime_ns: int) -> tuple[np.ndarray, int]:
    """The last file's audio, kept while consecutive samples (one video's narrations) reuse it.
    Callers must not modify it (log_mel_clips copies before its in-place mean removal)."""
    waveform, sr = decode_audio_on_video_clock(path)
    waveform.setflags(write=False)
    return waveform, sr


@functools.lru_cache(maxsize=4)
def _parsed_imu(path: str, mtime_ns: int):
    return parse_ego4d_imu_csv(path)


def _audio(row, cfg: BuildConfig, out: ProcessedSample, duration: float | None) -> None:
    path, rel = _path(row, "uri_audio")
    try:
        waveform, sr = _decoded_audio(str(path), path.stat().st_mtime_ns)
    except NoAudioStream:
        return  # the sample simply has no audio; its index row's modalities say so
    except Exception as exc:
        raise SampleError("decode", exc, rel) from exc
    start = 0.0
    if row.get("t0") is not None and row.get("t1") is not None:
        start, end = sample_window(row, waveform.shape[1] / sr)
        waveform = waveform[:, int(start * sr) : int(end * sr)]
    mel, spans = _stage("preprocess", rel, log_mel_clips, waveform, sr, cfg.audio)
    out.add(
        "audio",
        # float16 log-mel: the reader normalizes; 11 mantissa bits stay within 1e-3 after /std.
        {"log_mel": mel.astype(np.float16)},
        audio_clip_t0=[start + a for a, _ in spans],
        audio_clip_t1=[start + b for _, b in spans],
        q_audio_silence_fraction=silence_fraction(waveform, sr),
    )
    if duration is None:
        out.fields["media_duration_s"] = waveform.shape[1] / sr


def _imu(row, cfg: BuildConfig, out: ProcessedSample, duration: float | None) -> None:
    path, rel = _path(row, "uri_imu")
    series = _stage("decode", rel, _parsed_imu, str(path), path.stat().st_mtime_ns)
    anchor = row.get("anchor_s")
    if anchor is None:
        # No narration: centre the window on the media (or the IMU record when there is no video).
        anchor = duration / 2 if duration else float((series.times_s[0] + series.times_s[-1]) / 2)
    values, mask, (t0, t1) = _stage("preprocess", rel, imu_window, series, anchor, cfg.imu)
    quality = imu_quality(values, mask)
    out.add(
        "imu",
        {"values": values.astype(np.float32), "valid": mask.astype(bool)},
        imu_t0=t0,
        imu_t1=t1,
        anchor_s=float(anchor),
        q_imu_gap_fraction=quality["gap_fraction"],
        q_imu_saturation_fraction=quality["saturation_fraction"],
    )


def process_temporal(row: dict, cfg: BuildConfig, out: ProcessedSample) -> None:
    duration = _video(row, cfg, out) if row.get("uri_video") else None
    if row.get("uri_audio"):
        _audio(row, cfg, out, duration)
    if row.get("uri_imu"):
        _imu(row, cfg, out, duration)
