"""Clip spans shared by audio and video: pytorchvideo's ``ConstantClipsPerVideoSampler`` semantics,
as ImageBind uses them (exact rational clip boundaries)."""

from __future__ import annotations

from fractions import Fraction


def clip_spans(duration_s: float, clip_duration: float, clips: int) -> list[tuple[Fraction, Fraction]]:
    """``clips`` spans ``[start, start + clip_duration)`` evenly spread over ``[0, duration_s]``.

    ``max_start = max(duration - clip_duration, 0)`` is computed in float64 (as the reference does)
    and only then made an exact ``Fraction``; clip i starts at ``max_start * i / (clips - 1)``. So a
    recording shorter than one clip gives ``clips`` identical ``[0, clip_duration)`` spans, and the
    last clip of a longer one ends exactly at ``duration_s``. A single clip (where the reference
    divides by zero) is centred."""
    if clips < 1:
        raise ValueError(f"clips must be >= 1, got {clips}")
    if not clip_duration > 0:
        raise ValueError(f"clip_duration must be > 0, got {clip_duration}")
    if not duration_s >= 0:
        raise ValueError(f"duration must be >= 0, got {duration_s}")
    max_start = Fraction(max(float(duration_s) - float(clip_duration), 0.0))
    length = Fraction(clip_duration)
    if clips == 1:
        starts = [max_start / 2]
    else:
        starts = [max_start * i / (clips - 1) for i in range(clips)]
    return [(s, s + length) for s in starts]


def spans_as_float(spans: list[tuple[Fraction, Fraction]]) -> list[tuple[float, float]]:
    return [(float(s), float(e)) for s, e in spans]
