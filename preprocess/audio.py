"""Audio as ImageBind's ``load_and_transform_audio_data``: resample to 16 kHz, 3 clips of 2 s, per-clip
mean removal, Kaldi fbank (128 mel) of channel 0, pad/crop to 204 frames, normalize.

Layouts: waveform ``[C,N] float32``; log-mel clips ``[clips,1,mel,frames] float32`` (before
normalization, what the shard stores); model input: the same, normalized.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
import torchaudio

from preprocess.clips import clip_spans, spans_as_float
from preprocess.decode import decode_audio_on_video_clock


@dataclass(frozen=True)
class AudioConfig:
    sample_rate: int = 16000
    clip_duration: float = 2.0
    clips_per_video: int = 3
    num_mel_bins: int = 128
    target_length: int = 204
    mean: float = -4.268
    std: float = 9.138
    frame_length: float = 25.0  # ms
    frame_shift: float = 10.0  # ms

    @property
    def window_samples(self) -> int:
        return int(self.sample_rate * self.frame_length / 1000)


def audio_clip_spans(duration_s: float, cfg: AudioConfig = AudioConfig()) -> list[tuple[Fraction, Fraction]]:
    """Clip spans in seconds (exact fractions), ``ConstantClipsPerVideoSampler`` semantics."""
    return clip_spans(duration_s, cfg.clip_duration, cfg.clips_per_video)


def resample_waveform(waveform: np.ndarray, sample_rate: int, cfg: AudioConfig = AudioConfig()) -> torch.Tensor:
    """``[C,N]`` at ``sample_rate`` -> ``[C,M] float32`` tensor at ``cfg.sample_rate`` (a new tensor:
    the caller's array is never touched). torchaudio's defaults (sinc_interp_hann, width 6, rolloff
    0.99), all channels, as the reference."""
    w = np.asarray(waveform)
    if w.ndim != 2 or w.shape[0] < 1:
        raise ValueError(f"expected a [C,N] waveform, got shape {w.shape}")
    if sample_rate <= 0:
        raise ValueError(f"invalid sample rate {sample_rate}")
    t = torch.tensor(w, dtype=torch.float32)  # copies
    if sample_rate != cfg.sample_rate:
        t = torchaudio.functional.resample(t, int(sample_rate), cfg.sample_rate)
    return t


def _fbank(clip: torch.Tensor, cfg: AudioConfig) -> torch.Tensor:
    """``[C,n]`` clip -> ``[mel, target_length]``; Kaldi fbank of channel 0 only (fbank's default
    ``channel=-1`` picks channel 0, although the mean removed before was over all channels)."""
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
    ).transpose(0, 1)
    n = fb.shape[1]
    if n < cfg.target_length:
        # zero-pad before normalization (padded cells become -mean/std after it), as the reference
        fb = torch.nn.functional.pad(fb, (0, cfg.target_length - n))
    else:
        fb = fb[:, : cfg.target_length]
    return fb


def log_mel_clips(
    waveform: np.ndarray, sample_rate: int, cfg: AudioConfig = AudioConfig()
) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """``[C,N]`` waveform -> pre-normalization log-mel ``[clips,1,mel,target_length] float32`` and the
    clip spans ``(t0, t1)`` in seconds from the waveform's first sample.

    Raises ``ValueError`` when the audio (at ``cfg.sample_rate``) is shorter than one fbank window
    (400 samples = 25 ms): Kaldi fbank returns no frames, and a clip made only of padding carries
    no audio, so such samples are rejected rather than stored as a constant."""
    w = resample_waveform(waveform, sample_rate, cfg)
    n = w.shape[1]
    if n < cfg.window_samples:
        raise ValueError(
            f"audio too short: {n} samples at {cfg.sample_rate} Hz, fewer than one "
            f"{cfg.frame_length:g} ms fbank window ({cfg.window_samples} samples)"
        )
    spans = audio_clip_spans(n / cfg.sample_rate, cfg)
    out = []
    for start, end in spans:
        # int() of a Fraction truncates; the slice is cut at the signal end
        view = w[:, int(start * cfg.sample_rate) : int(end * cfg.sample_rate)]
        # In place on a view of the resampled waveform, as the reference: overlapping clips see
        # samples already shifted by an earlier clip's mean. `w` is our own copy.
        view -= view.mean()
        out.append(_fbank(view, cfg))
    mel = torch.stack(out).unsqueeze(1)
    return mel.numpy(), spans_as_float(spans)


def normalize_log_mel(log_mel: np.ndarray, cfg: AudioConfig = AudioConfig()) -> np.ndarray:
    """``(x - mean) / std`` in float32, as torchvision ``Normalize`` computes it (any leading dims)."""
    x = torch.as_tensor(np.asarray(log_mel, dtype=np.float32))
    mean = torch.tensor(cfg.mean, dtype=torch.float32)
    std = torch.tensor(cfg.std, dtype=torch.float32)
    return ((x - mean) / std).numpy()


def audio_model_input_from_waveform(
    waveform: np.ndarray, sample_rate: int, cfg: AudioConfig = AudioConfig()
) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """What ImageBind's audio encoder sees: ``[clips,1,128,204] float32`` and the clip spans."""
    mel, spans = log_mel_clips(waveform, sample_rate, cfg)
    return normalize_log_mel(mel, cfg), spans


def decode_waveform(path: str | Path) -> tuple[np.ndarray, int]:
    """Decoded audio ``[C,N] float32`` on the video's clock when the file has video (sample 0 at the
    first video frame's time), else from the first audio sample. Raises ``NoAudioStream``."""
    return decode_audio_on_video_clock(path)


def log_mel_clips_from_file(
    path: str | Path, cfg: AudioConfig = AudioConfig()
) -> tuple[np.ndarray, list[tuple[float, float]]]:
    waveform, sr = decode_waveform(path)
    try:
        return log_mel_clips(waveform, sr, cfg)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc


def audio_model_input(path: str | Path, cfg: AudioConfig = AudioConfig()) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Decode ``path`` with PyAV and return ``([clips,1,128,204] float32, spans)``."""
    mel, spans = log_mel_clips_from_file(path, cfg)
    return normalize_log_mel(mel, cfg), spans
