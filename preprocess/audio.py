"""Audio as ImageBind's ``load_and_transform_audio_data``: resample to 16 kHz, 3 clips of 2 s, per-clip
mean removal, Kaldi fbank (128 mel) of channel 0, pad/crop to 204 frames, normalize.

Layouts: waveform ``[C,N] float32``; log-mel clips ``[clips,1,mel,frames] float32`` (before
normalization, what the shard stores); model input: the same, normalized.
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
import torchaudio

from preprocess.audio_decode import decode_audio_on_video_clock
from preprocess.clips import clip_spans, spans_as_float

log = logging.getLogger(__name__)


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
        t = _resampler(int(sample_rate), cfg.sample_rate)(t)
    return t


@functools.lru_cache(maxsize=32)
def _resampler(orig: int, new: int) -> torchaudio.transforms.Resample:
    """torchaudio's public ``Resample`` transform for a rate pair, built once: its kernel is computed
    in float32 (``dtype``), as ``torchaudio.functional.resample`` computes it for a float32 waveform on
    every call, and applied by the same code, so the output is bit-identical to the functional form's
    (the reference's); tests/preprocess/test_audio.py checks that on fixed signals."""
    return torchaudio.transforms.Resample(orig, new, dtype=torch.float32)


# ------------------------------------------------------------------ resampling only what the clips use
#
# torchaudio's resample (sinc_interp_hann, width 6, rolloff 0.99) is one conv1d: with g = gcd(orig,
# new), o = orig/g and q = new/g, the signal is zero-padded by `width` before and `width + o` after,
# and block b of q output samples is the kernel [q, 1, 2*width + o] applied at padded offset b*o.
# So output samples [j0, j1) need only blocks j0//q .. ceil(j1/q) and input samples
# [b0*o - width, b1*o + width) (zeros outside the signal): the same kernel over the same values,
# started at a multiple of o, i.e. the same polyphase phase. With the same convolution backend the
# results are bit-identical (checked at first use per rate pair, see _partial_resample_is_exact).
# PyTorch convolves a single channel shorter than _NATIVE_CONV_MAX samples with its native im2col
# code, whose rounding depends on the length; longer or multi-channel input goes to oneDNN, whose
# result per output does not. Mono spans are therefore made longer than that, and a mono signal
# that short is resampled whole, as the reference does.
_NATIVE_CONV_MAX = 20480
_WHOLE_IF_COVERED = 0.9  # resample the whole signal when the clips need nearly all of it


@functools.lru_cache(maxsize=32)
def _sinc_kernel(orig: int, new: int) -> tuple[torch.Tensor, int] | None:
    """The kernel ``_resampler(orig, new)`` holds (its ``kernel`` buffer and ``width``: public
    attributes of torchaudio's transform, no private function) if it has the layout described above;
    None otherwise, and every waveform at this rate is then resampled whole (the same output, slower).
    test_audio.py fails loudly if that happens, or if the kernel stops being the functional form's."""
    resampler = _resampler(orig, new)
    kernel, width = getattr(resampler, "kernel", None), getattr(resampler, "width", None)
    g = math.gcd(orig, new)
    if (
        not isinstance(kernel, torch.Tensor)
        or not isinstance(width, int)
        or kernel.shape != (new // g, 1, 2 * width + orig // g)
        or kernel.dtype != torch.float32
    ):
        log.warning(
            "torchaudio %s's Resample(%d, %d) does not hold its kernel as expected: audio is resampled whole "
            "(the same output, slower)",
            torchaudio.__version__,
            orig,
            new,
        )
        return None
    return kernel, width


def _resampled_length(n: int, orig: int, new: int) -> int:
    """The output length torchaudio gives (its float32 ceil, reproduced exactly)."""
    g = math.gcd(orig, new)
    return int(torch.ceil(torch.as_tensor((new // g) * n / (orig // g))).long())


def _resample_ranges(w: np.ndarray, orig: int, new: int, ranges: list[tuple[int, int]]) -> torch.Tensor | None:
    """``[C,M]`` float32 tensor laid out like torchaudio's resample output (same row stride), whose
    columns inside ``ranges`` (output sample ranges) hold exactly torchaudio's values; the other
    columns are unspecified. None when this cannot be done exactly (then resample everything)."""
    plan = _sinc_kernel(orig, new)
    if plan is None:
        return None
    kernel, width = plan
    g = math.gcd(orig, new)
    o, q = orig // g, new // g
    c, n = w.shape
    mono = c == 1
    if mono and n + 2 * width + o <= _NATIVE_CONV_MAX:
        return None  # the whole signal takes the native path: resample it whole
    total_blocks = n // o + 1  # torchaudio's conv output positions
    blocks: list[list[int]] = []
    for j0, j1 in sorted(ranges):
        if j1 <= j0:
            continue
        b0, b1 = j0 // q, -(-j1 // q)
        if blocks and b0 <= blocks[-1][1]:
            blocks[-1][1] = max(blocks[-1][1], b1)
        else:
            blocks.append([b0, b1])
    if sum(b1 - b0 for b0, b1 in blocks) >= _WHOLE_IF_COVERED * total_blocks:
        return None
    if mono:  # keep every span on the oneDNN path (longer than _NATIVE_CONV_MAX padded samples)
        need = (_NATIVE_CONV_MAX - 2 * width) // o + 1  # blocks
        if need > total_blocks:
            return None
        for blk in blocks:
            short = need - (blk[1] - blk[0])
            if short > 0:
                grow = min(short, total_blocks - blk[1])
                blk[1] += grow
                blk[0] -= short - grow
    out = torch.empty(c, total_blocks * q)
    for b0, b1 in blocks:
        a, e = b0 * o - width, b1 * o + width
        seg = np.zeros((c, e - a), np.float32)
        lo, hi = max(a, 0), min(e, n)
        if hi > lo:
            seg[:, lo - a : hi - a] = w[:, lo:hi]  # float32, or rounded to it as torch.tensor(w, float32) does
        y = torch.nn.functional.conv1d(torch.from_numpy(seg)[:, None], kernel, stride=o)  # [c, q, blocks]
        out[:, b0 * q : b1 * q].view(c, b1 - b0, q).copy_(y.transpose(1, 2))
    return out[:, : _resampled_length(n, orig, new)]


@functools.lru_cache(maxsize=64)
def _partial_resample_is_exact(orig: int, new: int, mono: bool) -> bool:
    """Self-check, once per rate pair and channel case: spans resampled alone equal torchaudio's
    resample of the whole signal bit for bit (guards against another torch/torchaudio doing the
    convolution differently)."""
    rng = np.random.default_rng(12345)
    n = max(3 * orig, 2 * _NATIVE_CONV_MAX) + 17
    x = (0.3 * rng.standard_normal((1 if mono else 2, n))).astype(np.float32)
    full = torchaudio.functional.resample(torch.tensor(x), orig, new)
    m = full.shape[1]
    ranges = [(0, m // 6), (m // 2 - 5, m // 2 + m // 9), (m - m // 7, m)]
    try:
        part = _resample_ranges(x, orig, new, ranges)
    except RuntimeError:
        return False
    return part is not None and all(torch.equal(part[:, a:b], full[:, a:b]) for a, b in ranges)


def _resampled_for_clips(
    w: np.ndarray, sample_rate: int, cfg: AudioConfig
) -> tuple[int, list[tuple[Fraction, Fraction]], list[tuple[int, int]], torch.Tensor | None]:
    """Length at ``cfg.sample_rate``, clip spans, their sample ranges and, when only those ranges
    were resampled, the tensor holding them (None: resample the whole waveform)."""
    n = w.shape[1] if sample_rate == cfg.sample_rate else _resampled_length(w.shape[1], sample_rate, cfg.sample_rate)
    spans = audio_clip_spans(n / cfg.sample_rate, cfg)
    # int() of a Fraction truncates; the slice is cut at the signal end
    ranges = [(int(s * cfg.sample_rate), min(int(e * cfg.sample_rate), n)) for s, e in spans]
    part = None
    if sample_rate != cfg.sample_rate and n >= cfg.window_samples:
        mono = w.shape[0] == 1
        if _sinc_kernel(sample_rate, cfg.sample_rate) is not None and _partial_resample_is_exact(
            sample_rate, cfg.sample_rate, mono
        ):
            part = _resample_ranges(w, sample_rate, cfg.sample_rate, ranges)
    return n, spans, ranges, part


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
    w_in = np.asarray(waveform)
    if w_in.ndim != 2 or w_in.shape[0] < 1:
        raise ValueError(f"expected a [C,N] waveform, got shape {w_in.shape}")
    if sample_rate <= 0:
        raise ValueError(f"invalid sample rate {sample_rate}")
    n, spans, ranges, w = _resampled_for_clips(w_in, int(sample_rate), cfg)
    if n < cfg.window_samples:
        raise ValueError(
            f"audio too short: {n} samples at {cfg.sample_rate} Hz, fewer than one "
            f"{cfg.frame_length:g} ms fbank window ({cfg.window_samples} samples)"
        )
    if w is None:
        w = resample_waveform(w_in, sample_rate, cfg)
    out = []
    for a, b in ranges:
        view = w[:, a:b]
        # In place on a view of the resampled waveform, as the reference: overlapping clips see
        # samples already shifted by an earlier clip's mean. `w` is our own tensor, laid out as the
        # reference's (same row stride, so the same reduction order for the mean).
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


def audio_model_input(
    path: str | Path, cfg: AudioConfig = AudioConfig()
) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Decode ``path`` with PyAV and return ``([clips,1,128,204] float32, spans)``."""
    mel, spans = log_mel_clips_from_file(path, cfg)
    return normalize_log_mel(mel, cfg), spans
