"""Encoding helpers shared by the synthetic layouts (and by tests that need small media files):
deterministic JPEG, and H.264/AAC mp4 via PyAV.

NOTE (coordination, see COORDINATION.md): ``write_mp4`` keeps the brief's public signature
``write_mp4(path, frames_uint8, fps, audio=None, sample_rate=44100, gop_size=50, start_offset_s=0.0)``;
a callable ``frame_at(k)`` is accepted in place of the array when ``n_frames=`` is given.

Layouts: video ``frames [T, H, W, 3] uint8`` (RGB); audio ``[C, N] float32`` in ``[-1, 1]``, C = 1 or 2.

Timing conventions, which the decode/alignment code downstream relies on:

- frame ``i`` is presented at ``start_offset_s + i / fps``; audio sample ``k`` at
  ``start_offset_s + k / sample_rate``. ``start_offset_s > 0`` gives streams whose ``start_time`` is
  not 0, as many real downloads have. The video stream's time base is 1/90000 s, so any offset is
  representable (it is not rounded to whole frames).
- x264 runs without B-frames and with a fixed keyframe interval (``gop_size`` frames, no scene-cut
  keyframes), so decode order equals display order and seek tests can rely on keyframe spacing.
- x264 runs single-threaded: the output bytes then do not depend on the machine's core count.
- AAC's encoder delay: with ``start_offset_s = 0`` the muxer's edit list trims it and a PyAV decode
  returns the audio from pts 0. With an offset, the decoder also returns the ~1024 priming samples,
  so the first decoded frame starts ~1024 samples *before* the offset; the decoded frames' own
  timestamps stay correct (sample ``k`` of the input decodes at its pts within ~1 ms).
- Packets of the two streams are muxed in presentation order (interleaved, as real files are).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

AAC_FRAME = 1024
CHANNEL_LAYOUTS = {1: "mono", 2: "stereo"}
VIDEO_TIME_BASE = Fraction(1, 90000)


def save_jpeg(path: Path, rgb: np.ndarray, quality: int = 95) -> None:
    """Baseline JPEG, 4:2:0, no optimisation pass: the same pixels give the same bytes."""
    Image.fromarray(rgb, "RGB").save(path, "JPEG", quality=quality, optimize=False, progressive=False, subsampling=2)


def write_mp4(
    path: str | Path,
    frames_uint8: np.ndarray | Sequence[np.ndarray] | Callable[[int], np.ndarray] | None,
    fps: int | float | Fraction,
    audio: np.ndarray | None = None,
    sample_rate: int = 44100,
    gop_size: int = 50,
    start_offset_s: float = 0.0,
    *,
    n_frames: int | None = None,
    frame_format: str = "rgb24",
    crf: int = 23,
    preset: str = "veryfast",
    audio_bitrate: int = 96000,
) -> Path:
    """Write an mp4 with H.264 video (``libx264``, yuv420p) and optionally an AAC audio track.

    ``frames_uint8``: ``[T, H, W, 3] uint8`` RGB, a sequence of ``[H, W, 3]``, or a callable
    ``frame_at(k)`` together with ``n_frames``; None writes an audio-only file. With
    ``frame_format="yuv420p"`` each frame is instead PyAV's planar ``[H * 3 // 2, W] uint8`` layout
    (see :func:`rgb_to_yuv420p`), which skips the per-frame colour conversion.
    ``audio``: ``[C, N] float32`` (C = 1 or 2; a 1-D array is mono) or None for no audio track.
    Returns ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fps_q = fps if isinstance(fps, Fraction) else Fraction(fps).limit_denominator(1001)
    if callable(frames_uint8):
        if n_frames is None:
            raise ValueError("a frame_at callable needs n_frames=")
        frame_at = frames_uint8
        total = int(n_frames)
    elif frames_uint8 is not None:
        total = len(frames_uint8) if n_frames is None else int(n_frames)
        frame_at = frames_uint8.__getitem__
    else:
        frame_at, total = None, 0
    if frame_at is not None and total == 0:
        raise ValueError("no frames to write")
    if audio is not None:
        audio = np.asarray(audio, np.float32)
        if audio.ndim == 1:
            audio = audio[None, :]
        if audio.shape[0] not in CHANNEL_LAYOUTS:
            raise ValueError(f"audio must be [C, N] with C in {sorted(CHANNEL_LAYOUTS)}, got shape {audio.shape}")
        audio = np.ascontiguousarray(np.clip(audio, -1.0, 1.0))

    with av.open(str(path), "w", format="mp4") as out:
        vstream = astream = None
        first = None
        if frame_at is not None:
            if frame_format not in ("rgb24", "yuv420p"):
                raise ValueError(f"frame_format must be 'rgb24' or 'yuv420p', got {frame_format!r}")
            first = np.asarray(frame_at(0), np.uint8)
            h, w = first.shape[:2]
            if frame_format == "yuv420p":
                h = h * 2 // 3
            if h % 2 or w % 2:
                raise ValueError(f"yuv420p needs even frame sizes, got {w}x{h}")
            vstream = out.add_stream("libx264", rate=fps_q)
            vstream.width, vstream.height = w, h
            vstream.pix_fmt = "yuv420p"
            cc = vstream.codec_context
            cc.time_base = VIDEO_TIME_BASE
            cc.gop_size = int(gop_size)
            cc.max_b_frames = 0
            cc.options = {
                "crf": str(crf),
                "preset": preset,
                "bf": "0",
                "threads": "1",
                "x264-params": f"keyint={int(gop_size)}:min-keyint={int(gop_size)}:scenecut=0",
            }
        if audio is not None:
            astream = out.add_stream("aac", rate=int(sample_rate))
            astream.layout = CHANNEL_LAYOUTS[audio.shape[0]]
            astream.codec_context.time_base = Fraction(1, int(sample_rate))
            astream.codec_context.bit_rate = int(audio_bitrate)

        a_offset = int(round(start_offset_s * sample_rate))
        a_pos = 0
        n_audio = audio.shape[1] if audio is not None else 0

        def push_audio(until_s: float) -> None:
            nonlocal a_pos
            while astream is not None and a_pos < n_audio and a_pos / sample_rate <= until_s:
                af = audio_frame(audio[:, a_pos : a_pos + AAC_FRAME], astream, a_offset + a_pos)
                for pkt in astream.encode(af):
                    out.mux(pkt)
                a_pos += AAC_FRAME

        for i in range(total):
            push_audio(i / float(fps_q))
            img = first if i == 0 else np.asarray(frame_at(i), np.uint8)
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format=frame_format)
            vf.pts = int(round((start_offset_s + i / fps_q) / VIDEO_TIME_BASE))
            vf.time_base = VIDEO_TIME_BASE
            for pkt in vstream.encode(vf):
                out.mux(pkt)
        push_audio(float("inf"))
        if vstream is not None:
            for pkt in vstream.encode(None):
                out.mux(pkt)
        if astream is not None:
            for pkt in astream.encode(None):
                out.mux(pkt)
    return path


# Sample formats an audio encoder may ask for: numpy dtype, scale and offset from float [-1, 1].
_SAMPLE_CODING = {
    "s16": (np.int16, 32768.0, 0),
    "s32": (np.int32, 2147483648.0, 0),
    "u8": (np.uint8, 128.0, 128),
    "flt": (np.float32, 1.0, 0),
    "dbl": (np.float64, 1.0, 0),
}


def audio_frame(block: np.ndarray, stream, pts: int) -> av.AudioFrame:
    """``[C, n]`` float audio in [-1, 1] as one frame in ``stream``'s encoder sample format:
    planar or packed, integer formats scaled (clipped just below full scale so +1.0 cannot wrap)."""
    fmt = stream.codec_context.format
    dtype, scale, offset = _SAMPLE_CODING[fmt.name.rstrip("p")]
    if np.issubdtype(dtype, np.integer):
        data = np.round(np.clip(block, -1.0, 1.0 - 1.0 / 32768) * scale + offset).astype(dtype)
    else:
        data = np.asarray(block, dtype)
    data = np.ascontiguousarray(data) if fmt.is_planar else np.ascontiguousarray(data.T.reshape(1, -1))
    rate = stream.codec_context.sample_rate
    frame = av.AudioFrame.from_ndarray(data, format=fmt.name, layout=stream.layout.name)
    frame.sample_rate, frame.pts, frame.time_base = rate, pts, Fraction(1, rate)
    return frame


def encode_audio(out, stream, audio: np.ndarray, pts_offset: int = 0) -> None:
    """All of ``[C, N]`` float ``audio`` through ``stream``'s encoder (in its frame size, else blocks
    of 4096 samples), then the encoder flushed; sample ``k`` gets pts ``pts_offset + k``."""
    step = stream.codec_context.frame_size or 4096
    for start in range(0, audio.shape[1], step):
        for packet in stream.encode(audio_frame(audio[:, start : start + step], stream, pts_offset + start)):
            out.mux(packet)
    for packet in stream.encode(None):
        out.mux(packet)


def rgb_to_yuv(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``[..., 3] uint8`` RGB -> full-resolution float32 (Y, Cb, Cr), BT.601 limited range: the
    matrix swscale (and so every decoder here) assumes for untagged H.264."""
    x = np.asarray(rgb, np.float32)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    y = 16.0 + (65.481 * r + 128.553 * g + 24.966 * b) / 255.0
    cb = 128.0 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255.0
    cr = 128.0 + (112.0 * r - 93.786 * g - 18.214 * b) / 255.0
    return y, cb, cr


def pack_yuv420p(y: np.ndarray, cb_half: np.ndarray, cr_half: np.ndarray) -> np.ndarray:
    """Planes (``[H, W]``, ``[H/2, W/2]`` x 2, float or uint8) -> PyAV's ``[H * 3 // 2, W] uint8``."""
    h, w = y.shape
    out = np.empty((h * 3 // 2, w), np.uint8)
    out[:h] = np.clip(np.asarray(y) + 0.5, 0, 255) if y.dtype != np.uint8 else y
    for k, c in enumerate((cb_half, cr_half)):
        c = np.clip(np.asarray(c) + 0.5, 0, 255) if c.dtype != np.uint8 else c
        out[h + k * (h // 4) : h + (k + 1) * (h // 4)] = c.reshape(h // 4, w)
    return out


def rgb_to_yuv420p(rgb: np.ndarray) -> np.ndarray:
    """``[H, W, 3] uint8`` -> ``[H * 3 // 2, W] uint8`` yuv420p (chroma averaged over 2x2 blocks)."""
    y, cb, cr = rgb_to_yuv(rgb)
    h, w = y.shape
    half = lambda c: c.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))  # noqa: E731
    return pack_yuv420p(y, half(cb), half(cr))


def click(n: int, sample_rate: int, at_s: float, amplitude: float = 0.9, length_s: float = 0.003) -> np.ndarray:
    """``[n] float32``: a short, sharp click starting at ``at_s``: a 3 kHz burst decaying in ~1 ms.

    Its energy sits well inside AAC's passband (a one-sample impulse would be mostly filtered away),
    and its largest sample is within 0.1 ms of ``at_s``."""
    out = np.zeros(n, np.float32)
    k0 = int(round(at_s * sample_rate))
    m = max(int(length_s * sample_rate), 4)
    k1 = min(k0 + m, n)
    if 0 <= k0 < n:
        j = np.arange(k1 - k0) / sample_rate
        out[k0:k1] = amplitude * np.sin(2 * np.pi * 3000.0 * j + np.pi / 4) * np.exp(-j / 0.0006)
    return out
