"""Audio decoding with PyAV: whole tracks as ``[C,N] float32`` in [-1, 1], and their alignment
with the video's clock.

``decode_audio`` puts time 0 at the audio stream's first decoded sample; ``decode_audio_track`` also
returns that sample's container time so callers can put audio on the video's clock
(``align_audio``). Audio is decoded whole (the clips depend on its length, and AAC's decoder state
on its history) and converted in one pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from preprocess.media import NoAudioStream, is_wav, open_media, ticks_to_s


@dataclass(frozen=True)
class AudioTrack:
    waveform: np.ndarray  # [C,N] float32
    sample_rate: int
    start_time_s: float  # container time of waveform[:, 0]


# Integer PCM is scaled the way FFmpeg converts it to float (x / 2^(bits-1), u8 centred on 128), so
# WAV input matches torchaudio/torchcodec's float output.
_INT_SCALE = {"u8": (128.0, 128.0), "s16": (0.0, 32768.0), "s32": (0.0, 2147483648.0), "s64": (0.0, 2.0**63)}


def _audio_frame_to_float(frame) -> np.ndarray:
    """One decoded ``AudioFrame`` -> ``[C,n] float32`` for any sample format, planar or packed."""
    fmt = frame.format
    channels = frame.layout.nb_channels
    arr = frame.to_ndarray()
    if not fmt.is_planar:  # packed: [1, n*C] interleaved
        arr = arr.reshape(-1, channels).T
    arr = arr[:, : frame.samples]
    base = fmt.name.rstrip("p")
    if base in _INT_SCALE:
        offset, scale = _INT_SCALE[base]
        return ((arr.astype(np.float64) - offset) / scale).astype(np.float32)
    return arr.astype(np.float32, copy=False)


_NP_SAMPLE = {"u8": np.uint8, "s16": np.int16, "s32": np.int32, "s64": np.int64, "flt": np.float32, "dbl": np.float64}


def _frames_to_float(frames: list, channels: int) -> np.ndarray:
    """Decoded ``AudioFrame``s (one format and layout) -> ``[C,N] float32``, exactly as
    ``_audio_frame_to_float`` per frame and a concatenation, with one conversion for the whole track:
    the samples are copied straight out of the frames' planes (``to_ndarray`` per frame costs more
    than decoding AAC). u8, s16 and s32 become float32 first and are then scaled by a power of two,
    which rounds once, as the float64 route does; s64 keeps that route."""
    fmt = frames[0].format
    base = fmt.name.rstrip("p")
    dtype = _NP_SAMPLE.get(base)
    if dtype is None:  # a sample format PyAV may add later: the per-frame route
        return np.ascontiguousarray(np.concatenate([_audio_frame_to_float(f) for f in frames], axis=1))
    total = sum(f.samples for f in frames)
    raw = np.empty((channels, total), dtype)
    o = 0
    for f in frames:
        n = f.samples
        if fmt.is_planar:
            for c, plane in enumerate(f.planes[:channels]):
                raw[c, o : o + n] = np.frombuffer(plane, dtype, n)
        else:
            raw[:, o : o + n] = np.frombuffer(f.planes[0], dtype, n * channels).reshape(n, channels).T
        o += n
    if base == "flt":
        return raw
    if base == "dbl":
        return raw.astype(np.float32)
    offset, scale = _INT_SCALE[base]
    if base == "s64":
        return ((raw.astype(np.float64) - offset) / scale).astype(np.float32)
    out = raw.astype(np.float32)
    if offset:
        out -= np.float32(offset)
    out *= np.float32(1.0 / scale)
    return out


def _open_for_audio(path: str | Path) -> av.container.InputContainer:
    """``open_media`` for decoding audio: when the first stream is video its probe decode is skipped
    (several H.264 frames, most of the cost of opening a short mp4), the audio streams are probed
    as usual. The video stream is only used for its start time; anything unexpected -> ``open_media``."""
    if is_wav(path):
        return open_media(path)
    try:
        c = av.open(str(path), "r", stream_options=[{"skip_frame": "nonkey"}])
    except (av.FFmpegError, OSError, ValueError):
        return open_media(path)
    try:
        first = c.streams[0] if len(c.streams) else None
        if (
            first is not None
            and first.type == "video"
            and c.streams.audio
            and all(
                s.codec_context is not None and s.codec_context.sample_rate and s.codec_context.channels
                for s in c.streams.audio
            )
        ):
            return c
    except BaseException:
        c.close()
        raise
    c.close()
    return open_media(path)


def decode_audio_track(path: str | Path) -> AudioTrack:
    """The whole first audio track, all channels, at its own rate, with its start time.

    Samples are concatenated in decode order; gaps in pts are not filled (containers with audio gaps
    are rare and the reference loader ignores them too)."""
    with _open_for_audio(path) as c:
        return _decode_audio_track(c, path)


def _decode_audio_track(c, path) -> AudioTrack:
    if not c.streams.audio:
        raise NoAudioStream(f"{path}: no audio stream")
    st = c.streams.audio[0]
    # No decoder threads: audio decoders have none to use, and asking for them costs ~3 ms per open.
    frames = []
    rate = channels = fmt = None
    start = None
    try:
        for frame in c.decode(st):
            if frame.samples == 0:
                continue
            if rate is None:
                rate, channels, fmt = frame.sample_rate, frame.layout.nb_channels, frame.format.name
                if frame.pts is not None and frame.time_base is not None:
                    start = Fraction(frame.pts) * frame.time_base
            elif frame.sample_rate != rate or frame.layout.nb_channels != channels:
                raise ValueError(
                    f"{path}: audio format changes mid-stream ({rate} Hz x{channels} -> "
                    f"{frame.sample_rate} Hz x{frame.layout.nb_channels})"
                )
            elif frame.format.name != fmt:
                fmt = None  # sample format changes: convert frame by frame
            frames.append(frame)
    except av.FFmpegError as exc:
        raise ValueError(f"{path}: audio decode failed ({type(exc).__name__}: {exc})") from exc
    if not frames:
        raise ValueError(f"{path}: audio stream has no samples")
    if start is None:
        start = ticks_to_s(st.start_time, st.time_base)
    if fmt is None:
        wave = np.ascontiguousarray(np.concatenate([_audio_frame_to_float(f) for f in frames], axis=1))
    else:
        wave = _frames_to_float(frames, int(channels))
    return AudioTrack(wave, int(rate), float(start))


def decode_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """Full audio track ``[C,N] float32`` and its sample rate; time 0 = the stream's first sample.

    This is what the reference's ``torchaudio.load`` returns (mov_bbb.mp4: 441344 samples per
    channel, 431 AAC frames of 1024, no priming trimmed)."""
    track = decode_audio_track(path)
    return track.waveform, track.sample_rate


def align_audio(track: AudioTrack, origin_s: float) -> np.ndarray:
    """Put ``track`` on a clock whose 0 is container time ``origin_s`` (usually the video stream's
    start): samples before it are dropped (e.g. encoder priming kept by the muxer), a later start is
    zero-padded, so audio sample k is at ``k / sample_rate`` seconds on the video's clock."""
    offset = int(round((track.start_time_s - origin_s) * track.sample_rate))
    w = track.waveform
    if offset > 0:
        return np.concatenate([np.zeros((w.shape[0], offset), np.float32), w], axis=1)
    if offset < 0:
        return np.ascontiguousarray(w[:, -offset:])
    return w


def decode_audio_on_video_clock(path: str | Path) -> tuple[np.ndarray, int]:
    """Audio ``[C,N] float32`` with time 0 at the video stream's start when there is video (one
    clock for audio and frames), else at the audio's first sample."""
    with _open_for_audio(path) as c:
        track = _decode_audio_track(c, path)
        if not c.streams.video:
            return track.waveform, track.sample_rate
        vs = c.streams.video[0]
        origin = float(ticks_to_s(vs.start_time, vs.time_base))
    return align_audio(track, origin), track.sample_rate
