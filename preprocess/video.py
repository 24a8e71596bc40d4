"""Video as ImageBind's ``load_and_transform_video_data``: 5 clips of 2 s evenly spread, first and last
frame of each, /255, short side 224 (bilinear, no antialias), CLIP normalize, 3 spatial crops.

Layouts: decoded clips ``[clips,F,H,W,3] uint8`` (source resolution, upright); model input
``[clips*crops,3,F,S,S] float32`` ordered clip-major, crop-minor (index = clip*crops + crop).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from preprocess.clips import clip_spans, spans_as_float
from preprocess.video_decode import decode_video_clips

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class VideoConfig:
    clip_duration: float = 2.0
    clips_per_video: int = 5
    frames_per_clip: int = 2
    size: int = 224
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD
    num_crops: int = 3


def video_clip_spans(duration_s: float, cfg: VideoConfig = VideoConfig()) -> list[tuple[Fraction, Fraction]]:
    return clip_spans(duration_s, cfg.clip_duration, cfg.clips_per_video)


def video_clip_frames(
    path: str | Path, cfg: VideoConfig = VideoConfig(), *, threads: int | None = None
) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Decode the frames ImageBind keeps: ``[clips,F,H,W,3] uint8`` and the clip spans in seconds
    from the video start. The duration is the last frame's end time (= n_frames/fps for constant
    frame rate, the reference's decord duration). One open container; only the kept frames and
    the frames they reference are decoded (``decode_video_clips``); ``threads``: decoder threads
    (None: FFmpeg's choice, 1: none)."""
    _, spans, clips = decode_video_clips(
        path, lambda duration: video_clip_spans(duration, cfg), cfg.frames_per_clip, threads=threads
    )
    try:
        frames = np.stack([c.frames for c in clips])
    except ValueError as exc:
        raise ValueError(f"{path}: frame size changes between clips ({exc})") from exc
    return frames, spans_as_float(spans)


def short_side_scale(x: torch.Tensor, size: int) -> torch.Tensor:
    """pytorchvideo ``ShortSideScale`` on ``[C,T,H,W]`` float: bilinear, align_corners=False, no
    antialias; the long side becomes ``floor(long/short*size)``."""
    _, _, h, w = x.shape
    if w < h:
        new_h, new_w = int(math.floor(float(h) / w * size)), size
    else:
        new_h, new_w = size, int(math.floor(float(w) / h * size))
    return torch.nn.functional.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False)


def spatial_crop_offsets(h: int, w: int, size: int, num_crops: int) -> list[tuple[int, int]]:
    """pytorchvideo ``SpatialCrop`` boxes as ``(y, x)``: for 3 crops left/center/right (landscape) or
    top/center/bottom (portrait, H > W); centre offset ``ceil((dim-size)/2)``, last ``dim-size``.
    For 1 crop the centre one."""
    if num_crops == 1:
        return [(int(math.ceil((h - size) / 2)), int(math.ceil((w - size) / 2)))]
    if num_crops != 3:
        raise ValueError(f"num_crops must be 1 or 3, got {num_crops}")
    cy, cx = int(math.ceil((h - size) / 2)), int(math.ceil((w - size) / 2))
    if h > w:
        return [(0, cx), (cy, cx), (h - size, cx)]
    return [(cy, 0), (cy, cx), (cy, w - size)]


def video_frames_to_model_input(frames: np.ndarray, cfg: VideoConfig = VideoConfig()) -> np.ndarray:
    """``[clips,F,H,W,3] uint8`` -> ``[clips*crops,3,F,S,S] float32`` (pure; input untouched)."""
    if frames.ndim != 5 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"expected [clips,F,H,W,3] uint8 frames, got {frames.shape} {frames.dtype}")
    mean = torch.tensor(cfg.mean, dtype=torch.float32)[:, None, None, None]
    std = torch.tensor(cfg.std, dtype=torch.float32)[:, None, None, None]
    out = []
    for clip in frames:
        # [F,H,W,3] -> [C,T,H,W] float, then the reference's order: /255, resize, normalize, crop
        x = torch.from_numpy(np.ascontiguousarray(clip)).permute(3, 0, 1, 2).to(torch.float32)
        x = x / 255.0
        x = short_side_scale(x, cfg.size)
        x = (x - mean) / std
        _, _, h, w = x.shape
        for y0, x0 in spatial_crop_offsets(h, w, cfg.size, cfg.num_crops):
            out.append(x[:, :, y0 : y0 + cfg.size, x0 : x0 + cfg.size])
    return torch.stack(out).contiguous().numpy()


def video_model_input(
    path: str | Path, cfg: VideoConfig = VideoConfig(), *, threads: int | None = None
) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """What ImageBind's vision encoder sees for one video: ``[15,3,2,224,224] float32`` and spans."""
    frames, spans = video_clip_frames(path, cfg, threads=threads)
    return video_frames_to_model_input(frames, cfg), spans
