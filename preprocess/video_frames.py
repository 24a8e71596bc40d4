"""What a decoded video span is, how its frames are chosen and how they become RGB: shared by
``video_decode``'s two paths (the planned one in ``span_planner``, and decoding forward).

Layout: frames ``[F,H,W,3] uint8`` RGB, rotated upright as the container's display matrix asks;
times in seconds from the video stream's start.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from preprocess.media import frame_rotation


@dataclass(frozen=True)
class VideoClipFrames:
    frames: np.ndarray  # [F,H,W,3] uint8, RGB, upright
    times_s: np.ndarray  # [F] float64, seconds from the video stream's start
    span: tuple[float, float]


def _rotate(rgb: np.ndarray, rotation: int) -> np.ndarray:
    # rotation is counter-clockwise degrees; np.rot90 with k>0 also turns counter-clockwise
    k = (rotation // 90) % 4
    return np.ascontiguousarray(np.rot90(rgb, k=k)) if k else rgb


def to_rgb(frame, fallback_rotation: int) -> np.ndarray:
    rotation = frame_rotation(frame) or fallback_rotation
    return _rotate(frame.to_ndarray(format="rgb24"), rotation)


def uniform_indices(t: int, n: int) -> list[int]:
    """pytorchvideo's UniformTemporalSubsample index choice: ``linspace(0, t-1, n)`` in float32,
    truncated (n=2 -> first and last)."""
    idx = torch.linspace(0, t - 1, n).clamp(0, t - 1).long()
    return idx.tolist()


@dataclass
class DecodeStats:
    """Counters of one ``decode_video_frames`` / ``decode_video_clips`` call (pass one in to read them)."""

    packets_demuxed: int = 0
    packets_decoded: int = 0  # sent to the decoder
    frames_decoded: int = 0  # returned by the decoder (skipped non-reference frames are not)
    frames_used: int = 0  # frames returned to the caller
    seeks: int = 0
    fallback: bool = False  # the planned path gave way to decoding forward (see SpanPlanner)
