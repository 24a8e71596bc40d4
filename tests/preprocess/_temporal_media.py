"""Factories for small synthetic media files (PyAV), used by the decode/audio/video/alignment tests.

Layouts: video frames ``[T,H,W,3] uint8``; audio ``[C,N] float32`` in [-1, 1].
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from pipelines.synth.media import encode_audio

_LAYOUTS = {1: "mono", 2: "stereo", 3: "2.1", 4: "quad", 6: "5.1", 8: "7.1"}


def layout_for(channels: int) -> str:
    try:
        return _LAYOUTS[channels]
    except KeyError:
        raise ValueError(f"no test layout for {channels} channels") from None


INDEX_BITS = 10


def color_frames(t: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    """``[T,H,W,3] uint8`` dark textured frames (never white) whose bottom half carries the frame
    index as ``INDEX_BITS`` vertical stripes (bit set = level 200, else 30), robust to lossy coding;
    read back with ``read_index``."""
    if w < INDEX_BITS * 2:
        raise ValueError("frames must be at least 20 pixels wide")
    rng = np.random.default_rng(seed)
    noise = rng.integers(-8, 9, size=(1, h, w, 3), dtype=np.int16)
    out = np.clip(np.full((t, 1, 1, 1), 60, np.int16) + noise, 0, 255).astype(np.uint8)
    sw = w // INDEX_BITS
    for i in range(t):
        for b in range(INDEX_BITS):
            out[i, h // 2 :, b * sw : (b + 1) * sw] = 200 if (i >> b) & 1 else 30
    return out


def read_index(img: np.ndarray) -> int:
    """Frame index written by ``color_frames`` (``img [H,W,3]`` as stored, not rotated)."""
    h, w = img.shape[:2]
    sw = w // INDEX_BITS
    bits = [img[h // 2 + 2 : h - 2, b * sw + 1 : (b + 1) * sw - 1].mean() > 115 for b in range(INDEX_BITS)]
    return sum(1 << b for b, on in enumerate(bits) if on)


def write_mp4(
    path: str | Path,
    frames: np.ndarray | None,
    fps: int | Fraction = 25,
    audio: np.ndarray | None = None,
    sample_rate: int = 16000,
    *,
    gop_size: int = 12,
    start_s: float = 0.0,
    rotation: int = 0,
    codec: str = "libx264",
    frame_times_s: np.ndarray | None = None,
    audio_codec: str = "aac",
) -> Path:
    """Write an mp4 with optional video (``frames [T,H,W,3] uint8``) and audio (``[C,N] float32``).

    ``start_s`` shifts the first pts of both streams (non-zero stream start_time);
    ``frame_times_s`` (seconds, relative to ``start_s``) gives variable-frame-rate timestamps;
    ``rotation`` is stored as display-matrix rotation (counter-clockwise degrees, as PyAV reads it
    back in ``VideoFrame.rotation``); ``gop_size`` is the keyframe interval in frames."""
    path = Path(path)
    with av.open(str(path), "w", format="mp4") as out:
        vstream = astream = None
        if frames is not None:
            t, h, w, _ = frames.shape
            vstream = out.add_stream(codec, rate=fps)
            vstream.width, vstream.height = w, h
            vstream.pix_fmt = "yuv420p"
            vstream.codec_context.gop_size = gop_size
            # millisecond-ish ticks so VFR timestamps and offsets are representable
            vstream.codec_context.time_base = Fraction(1, 1000) if frame_times_s is not None else 1 / Fraction(fps)
            if codec == "libx264":
                # no B-frames keeps decode order = display order, closed GOPs keep seeks exact
                vstream.codec_context.options = {"bf": "0", "crf": "18", "preset": "ultrafast"}
                vstream.codec_context.max_b_frames = 0
            if rotation:
                vstream.set_display_rotation(rotation)
        if audio is not None:
            astream = out.add_stream(audio_codec, rate=sample_rate)
            astream.layout = layout_for(audio.shape[0])
            astream.codec_context.time_base = Fraction(1, sample_rate)

        if vstream is not None:
            tb = vstream.codec_context.time_base
            for i, img in enumerate(frames):
                vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
                rel = float(frame_times_s[i]) if frame_times_s is not None else i / float(fps)
                vf.pts = int(round((start_s + rel) / tb))
                vf.time_base = tb
                for pkt in vstream.encode(vf):
                    out.mux(pkt)
            for pkt in vstream.encode(None):
                out.mux(pkt)

        if astream is not None:
            encode_audio(out, astream, audio, pts_offset=int(round(start_s * sample_rate)))
    return path


def write_wav(path: str | Path, audio: np.ndarray, sample_rate: int, codec: str = "pcm_s16le") -> Path:
    """Write ``[C,N] float32`` audio as a WAV with a packed integer/float PCM codec."""
    path = Path(path)
    channels = audio.shape[0]
    with av.open(str(path), "w", format="wav") as out:
        st = out.add_stream(codec, rate=sample_rate)
        st.layout = layout_for(channels)
        # the float formats are clipped too (audio_frame clips only integer ones), as this always did
        encode_audio(out, st, np.clip(audio, -1.0, 1.0 - 1.0 / 32768))
    return path


def sine(freq: float, duration_s: float, sample_rate: int, channels: int = 1, amp: float = 0.5) -> np.ndarray:
    """``[C,N] float32`` sine, channel c scaled by 1/(c+1) so channels differ."""
    n = int(round(duration_s * sample_rate))
    t = np.arange(n) / sample_rate
    base = amp * np.sin(2 * np.pi * freq * t)
    return np.stack([base / (c + 1) for c in range(channels)]).astype(np.float32)
