import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
import torchaudio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _temporal_media import color_frames, sine, write_mp4, write_wav  # noqa: E402

from preprocess.audio import (  # noqa: E402
    AudioConfig,
    audio_clip_spans,
    audio_model_input,
    audio_model_input_from_waveform,
    log_mel_clips,
    normalize_log_mel,
)
from preprocess.media import NoAudioStream  # noqa: E402

PAD_VALUE = np.float32(4.268) / np.float32(9.138)


@pytest.mark.parametrize(
    "name,rel",
    [
        ("dog", "imagebind/dog_audio.wav"),
        ("car", "imagebind/car_audio.wav"),
        ("bird", "imagebind/bird_audio.wav"),
        ("mov_bbb", "video_av/mov_bbb.mp4"),
    ],
)
def test_matches_imagebind_reference(shared_dir, name, rel):
    ref = np.load(shared_dir / "reference" / "imagebind" / f"audio_{name}.npy")[0]
    out, spans = audio_model_input(shared_dir / "samples" / rel)
    assert out.shape == (3, 1, 128, 204) and out.dtype == np.float32
    diff = np.abs(out - ref)
    # WAVs decode bit-identically to torchaudio.load; PyAV's AAC decoding of mov_bbb is within 3.5e-5
    assert diff.max() <= (1e-6 if rel.endswith(".wav") else 1e-4)
    if name == "dog":
        assert spans == [(0.0, 2.0), pytest.approx((0.305125, 2.305125)), pytest.approx((0.61025, 2.61025))]
    if name == "mov_bbb":
        assert spans == [(0.0, 2.0), (4.00390625, 6.00390625), (8.0078125, 10.0078125)]


def test_clip_spans_are_exact_fractions():
    spans = audio_clip_spans(160125 / 16000)
    assert spans[1] == (Fraction(4.00390625), Fraction(6.00390625)) and isinstance(spans[1][0], Fraction)
    assert audio_clip_spans(1.0) == [(0, 2)] * 3


def _reference_steps(wave: np.ndarray, sr: int, copy_clips: bool = False) -> np.ndarray:
    """The reference written out independently, optionally without its in-place quirk."""
    w = torch.tensor(wave)
    if sr != 16000:
        w = torchaudio.functional.resample(w, sr, 16000)
    dur = w.shape[1] / 16000
    max_start = Fraction(max(dur - 2.0, 0.0))
    out = []
    for i in range(3):
        s, e = max_start * i / 2, max_start * i / 2 + 2
        clip = w[:, int(s * 16000) : int(e * 16000)]
        if copy_clips:
            clip = clip.clone()
        clip -= clip.mean()
        fb = torchaudio.compliance.kaldi.fbank(
            clip,
            htk_compat=True,
            sample_frequency=16000,
            use_energy=False,
            window_type="hanning",
            num_mel_bins=128,
            dither=0.0,
            frame_length=25,
            frame_shift=10,
        ).T
        fb = torch.nn.functional.pad(fb, (0, max(204 - fb.shape[1], 0)))[:, :204]
        out.append((fb - -4.268) / 9.138)
    return torch.stack(out).unsqueeze(1).numpy()


def test_overlapping_clips_see_earlier_mean_removal_and_input_is_untouched():
    rng = np.random.default_rng(0)
    wave = (0.3 + 0.2 * rng.standard_normal((2, 16000 * 3))).astype(np.float32)  # DC offset, 3 s
    before = wave.copy()
    out, spans = audio_model_input_from_waveform(wave, 16000)
    np.testing.assert_array_equal(wave, before)
    assert spans == [(0.0, 2.0), (0.5, 2.5), (1.0, 3.0)]
    np.testing.assert_allclose(out, _reference_steps(before, 16000), atol=1e-5)
    # copying each clip first (no quirk) gives a measurably different result
    assert np.abs(out - _reference_steps(before, 16000, copy_clips=True)).max() > 1e-3


def test_only_channel_zero_reaches_the_fbank():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((1, 40000)).astype(np.float32) * 0.1
    b = rng.standard_normal((1, 40000)).astype(np.float32) * 0.1
    stereo = np.concatenate([a, b])
    # channel 1 matters only through the shared mean: add a pattern with zero mean over every clip
    # (clips start at even sample offsets and are 32000 samples long)
    b2 = b + 0.5 * (-1.0) ** np.arange(40000, dtype=np.float32)
    out1, _ = audio_model_input_from_waveform(stereo, 16000)
    out2, _ = audio_model_input_from_waveform(np.concatenate([a, b2]), 16000)
    np.testing.assert_allclose(out1, out2, atol=1e-4)
    out3, _ = audio_model_input_from_waveform(np.concatenate([b, a]), 16000)
    assert np.abs(out1 - out3).max() > 0.1


def test_log_mel_and_normalize_compose_to_model_input():
    wave = sine(500, 3.0, 22050, 2)
    mel, spans = log_mel_clips(wave, 22050)
    out, spans2 = audio_model_input_from_waveform(wave, 22050)
    assert spans == spans2
    np.testing.assert_array_equal(normalize_log_mel(mel), out)
    assert mel.min() >= np.log(np.finfo(np.float32).eps) - 1e-4


def test_one_second_audio_gives_three_identical_padded_clips():
    out, spans = audio_model_input_from_waveform(sine(440, 1.0, 16000), 16000)
    assert spans == [(0.0, 2.0)] * 3
    np.testing.assert_array_equal(out[0], out[1])
    np.testing.assert_array_equal(out[0], out[2])
    frames = 1 + (16000 - 400) // 160  # 98 fbank frames, the rest zero-padded before normalizing
    assert np.all(out[:, :, :, frames:] == PAD_VALUE)
    assert not np.all(out[:, :, :, frames - 1] == PAD_VALUE)


def test_too_short_audio_is_rejected():
    with pytest.raises(ValueError, match="too short"):
        audio_model_input_from_waveform(sine(440, 0.01, 16000), 16000)
    # exactly one window is enough: one frame, the rest padding
    out, _ = audio_model_input_from_waveform(sine(440, 0.025, 16000), 16000)
    assert np.all(out[..., 1:] == PAD_VALUE) and not np.all(out[..., 0] == PAD_VALUE)


@pytest.mark.parametrize("sr", [8000, 22050, 48000])
@pytest.mark.parametrize("channels", [1, 2, 6])
def test_rates_and_channel_counts(tmp_path, sr, channels):
    wave = sine(1000, 2.5, sr, channels)
    p = write_wav(tmp_path / "x.wav", wave, sr, "pcm_f32le")
    out, spans = audio_model_input(p)
    assert out.shape == (3, 1, 128, 204) and out.dtype == np.float32
    assert spans == [(0.0, 2.0), (0.25, 2.25), (0.5, 2.5)]
    # a 1 kHz tone puts its energy in the same mel bin whatever the input rate
    ref, _ = audio_model_input_from_waveform(sine(1000, 2.5, 16000, 1), 16000)
    assert np.argmax(out[0, 0, :, 50]) == np.argmax(ref[0, 0, :, 50])
    assert np.abs(out[0, 0, :, 10:190] - ref[0, 0, :, 10:190]).mean() < 0.05


def test_file_without_audio_raises_no_audio_stream(tmp_path):
    p = write_mp4(tmp_path / "v.mp4", color_frames(10, 32, 32), 10)
    with pytest.raises(NoAudioStream):
        audio_model_input(p)


def test_config_changes_shape():
    cfg = AudioConfig(clips_per_video=2, num_mel_bins=64, target_length=100)
    out, spans = audio_model_input_from_waveform(sine(440, 4.0, 16000), 16000, cfg)
    assert out.shape == (2, 1, 64, 100) and spans == [(0.0, 2.0), (2.0, 4.0)]


# ------------------------------------------------------------------ resampling only the clips' spans


@pytest.mark.parametrize("sr", [8000, 22050, 44100, 48000])
@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("seconds", [1.0, 2.61, 3.0, 10.0, 31.3])
def test_span_resampling_is_bit_identical_to_resampling_everything(sr, channels, seconds):
    rng = np.random.default_rng(int(seconds * 10) + channels)
    wave = (0.1 + 0.3 * rng.standard_normal((channels, int(seconds * sr)))).astype(np.float32)
    out, _ = audio_model_input_from_waveform(wave, sr)
    np.testing.assert_array_equal(out, _reference_steps(wave, sr))  # max abs diff 0, not a tolerance


@pytest.mark.parametrize("sr", [8000, 11025, 22050, 44100, 48000, 96000])
@pytest.mark.parametrize("channels", [1, 2])
def test_cached_resampler_is_torchaudio_functional_resample_bit_for_bit(sr, channels):
    """The cached transform (torchaudio's public Resample) and its kernel give exactly what
    torchaudio.functional.resample gives, the reference's resampler: a torchaudio release that
    computes either differently, or stops exposing the kernel, fails here rather than drifting."""
    import math

    import preprocess.audio as audio_mod

    rng = np.random.default_rng(sr + channels)
    x = (0.3 * rng.standard_normal((channels, 3 * sr + 17))).astype(np.float32)
    ref = torchaudio.functional.resample(torch.tensor(x), sr, 16000)
    assert torch.equal(audio_mod.resample_waveform(x, sr), ref)
    plan = audio_mod._sinc_kernel(sr, 16000)
    assert plan is not None, "torchaudio's Resample does not expose its kernel: span-only resampling is off"
    kernel, width = plan
    o = sr // math.gcd(sr, 16000)
    padded = torch.nn.functional.pad(torch.tensor(x), (width, width + o))
    y = torch.nn.functional.conv1d(padded[:, None], kernel, stride=o).transpose(1, 2).reshape(channels, -1)
    assert torch.equal(y[:, : ref.shape[1]], ref)
    assert audio_mod._partial_resample_is_exact(sr, 16000, channels == 1)


def test_long_audio_resamples_only_the_clips():
    import preprocess.audio as audio_mod

    wave = sine(440, 30.0, 44100, 2)
    n, spans, ranges, part = audio_mod._resampled_for_clips(wave, 44100, AudioConfig())
    assert n == 480000 and ranges == [(0, 32000), (224000, 256000), (448000, 480000)]
    assert part is not None and part.shape == (2, n)
    full = torchaudio.functional.resample(torch.tensor(wave), 44100, 16000)
    assert part.stride() == full.stride()  # same layout: the in-place mean reduces in the same order
    for a, b in ranges:
        assert torch.equal(part[:, a:b], full[:, a:b])
    # a mono signal short enough for PyTorch's native convolution is resampled whole, as the reference
    assert audio_mod._resampled_for_clips(sine(440, 2.5, 8000), 8000, AudioConfig())[3] is None


@pytest.mark.parametrize(
    "name,rel",
    [
        ("dog", "imagebind/dog_audio.wav"),
        ("car", "imagebind/car_audio.wav"),
        ("bird", "imagebind/bird_audio.wav"),
        ("mov_bbb", "video_av/mov_bbb.mp4"),
    ],
)
def test_reference_files_equal_the_whole_signal_steps_exactly(shared_dir, name, rel):
    from preprocess.audio import decode_waveform

    path = shared_dir / "samples" / rel
    wave, sr = decode_waveform(path)
    out, _ = audio_model_input(path)
    np.testing.assert_array_equal(out, _reference_steps(wave, sr))
