"""Video decoding with PyAV: the frames of time spans, subsampled as pytorchvideo does.

Clock: frame times are ``frame.pts * time_base - video_stream.start_time`` in seconds (pts, never
frame index, so variable frame rate works). Layout: ``[F,H,W,3] uint8`` RGB, upright
(``video_frames``).

Cost: clips decode only the frames kept and what they reference (``span_planner.SpanPlanner``:
packets are demuxed first, the kept frames chosen from their pts, then each decoded from its
keyframe, skipping unreferenced B-frames), bit-identical to decoding every frame; only kept frames
become RGB. Input the planner cannot vouch for is decoded forward (``_decode_forward``). Decoder
threads: ``threads`` arguments, default ``DECODE_THREADS`` (env ``BINDSET_DECODE_THREADS``; 1 is the
most work per CPU when samples are decoded in parallel processes).
"""

from __future__ import annotations

import bisect
import os
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator, Sequence

import av
import numpy as np

from preprocess.media import NoVideoStream, open_media, ticks_to_s, video_end_ticks
from preprocess.span_planner import PlanFallback, SpanPlanner
from preprocess.video_frames import DecodeStats, VideoClipFrames, to_rgb, uniform_indices

# Decoder threads when a call does not say: 0 = FFmpeg's choice (one per core), 1 = none.
DECODE_THREADS = int(os.environ.get("BINDSET_DECODE_THREADS", "0") or 0)


def _configure_threads(stream, threads: int | None) -> None:
    """``threads``: None or 0 lets FFmpeg pick (frame and slice threads, one per core); 1 decodes on the
    calling thread (the most frames per CPU-second; best when samples are decoded in parallel)."""
    if threads is None:
        threads = DECODE_THREADS
    cc = stream.codec_context
    if threads == 1:
        cc.thread_type = "NONE"
        cc.thread_count = 1
    else:
        cc.thread_type = "AUTO"
        cc.thread_count = max(int(threads), 0)


def _video_stream(c, path):
    if not c.streams.video:
        raise NoVideoStream(f"{path}: no video stream")
    return c.streams.video[0]


def decode_video_frames(
    path: str | Path,
    spans: Sequence[tuple[float | Fraction, float | Fraction]],
    frames_per_span: int,
    *,
    duration_s: float | Fraction | None = None,
    threads: int | None = None,
    stats: DecodeStats | None = None,
) -> list[VideoClipFrames]:
    """For each span ``[start, end)`` (seconds from the video start) the frames with
    ``start <= t < end`` (and ``t < duration_s`` when given), subsampled to ``frames_per_span`` as
    ``uniform_indices`` does. Decodes only what the chosen frames need, from one open container
    (see ``SpanPlanner``); ``threads`` as in ``_configure_threads``.

    Raises ``ValueError`` when the file has no video or a span holds no frame."""
    if frames_per_span < 1:
        raise ValueError("frames_per_span must be >= 1")
    fspans = [(Fraction(s), Fraction(e)) for s, e in spans]
    limit = Fraction(duration_s) if duration_s is not None else None
    with open_media(path) as c:
        vs = _video_stream(c, path)
        return _decode_spans(c, vs, path, fspans, frames_per_span, limit, threads, stats, fresh=True)


def decode_video_clips(
    path: str | Path,
    make_spans: Callable[[float], Sequence[tuple[float | Fraction, float | Fraction]]],
    frames_per_span: int,
    *,
    threads: int | None = None,
    stats: DecodeStats | None = None,
) -> tuple[float, list[tuple[Fraction, Fraction]], list[VideoClipFrames]]:
    """``probe`` + ``decode_video_frames`` on one open container: the video's duration (as
    ``VideoStreamInfo.duration_s``), the spans ``make_spans(duration)`` and their frames (cut at the
    duration)."""
    if frames_per_span < 1:
        raise ValueError("frames_per_span must be >= 1")
    with open_media(path) as c:
        vs = _video_stream(c, path)
        try:
            end = video_end_ticks(c, vs)
        except av.FFmpegError as exc:
            raise ValueError(f"{path}: cannot read video packets ({type(exc).__name__}: {exc})") from exc
        duration = float(ticks_to_s(end - (vs.start_time or 0), vs.time_base)) if end is not None else 0.0
        if not duration > 0:
            raise ValueError(f"{path}: video has no frames")
        fspans = [(Fraction(s), Fraction(e)) for s, e in make_spans(duration)]
        clips = _decode_spans(c, vs, path, fspans, frames_per_span, Fraction(duration), threads, stats, fresh=False)
    return duration, fspans, clips


def _decode_spans(c, vs, path, fspans, frames_per_span, limit, threads, stats, *, fresh: bool):
    stats = stats if stats is not None else DecodeStats()
    _configure_threads(vs, threads)
    try:
        return SpanPlanner(c, vs, path, frames_per_span, limit, stats, fresh).run(fspans)
    except PlanFallback:
        pass
    # Decode forward on a fresh container: the planned path left this one mid-stream.
    stats.fallback = True
    with open_media(path) as c2:
        vs2 = _video_stream(c2, path)
        _configure_threads(vs2, threads)
        return _decode_forward(c2, vs2, path, fspans, frames_per_span, limit, stats)


def _index_keyframe_times(stream, start_ticks: int) -> list[Fraction]:
    """Keyframe times from the demuxer's index (mp4/mkv have one; no I/O), sorted; [] if none."""
    try:
        entries = stream.index_entries
        tb = stream.time_base
        keys = sorted({Fraction(e.timestamp - start_ticks) * tb for e in entries if e.is_keyframe})
    except (AttributeError, TypeError):
        return []
    return keys


def _decode_forward(c, vs, path, fspans, frames_per_span, limit, stats: DecodeStats) -> list[VideoClipFrames]:
    """Decode every frame from the keyframe before each span (seeking per span when that skips
    something) and select among the decoded frames by their pts. The general path: any timestamps,
    unseekable input; used when ``SpanPlanner`` cannot vouch for its result."""
    order = sorted(range(len(fspans)), key=lambda i: fspans[i])
    results: list[VideoClipFrames | None] = [None] * len(fspans)

    tb = vs.time_base
    start_ticks = vs.start_time or 0
    origin = Fraction(start_ticks) * tb
    meta_rotation = (-int(vs.metadata["rotate"])) % 360 if "rotate" in vs.metadata else 0

    index_keys = _index_keyframe_times(vs, start_ticks)
    it: Iterator | None = None
    exhausted = False
    pos: Fraction | None = None  # time of the last decoded frame
    buf: list[tuple[Fraction, object]] = []  # decoded frames at or after the current span start
    floor = Fraction(0)  # frames before the current span start are dropped as they come
    last_key: Fraction | None = None
    gop = Fraction(0)  # largest keyframe spacing seen (used when the container has no index)

    def frames_from():
        try:
            for pkt in c.demux(vs):
                stats.packets_demuxed += 1
                stats.packets_decoded += 1
                for frame in pkt.decode():
                    stats.frames_decoded += 1
                    yield frame
        except av.FFmpegError as exc:
            raise ValueError(f"{path}: video decode failed ({type(exc).__name__}: {exc})") from exc

    def restart(seek_to: Fraction | None) -> bool:
        """Seek (None: read on from the container's current position, i.e. its start when fresh)
        and start a new decode; False, leaving the current decode as it was, if seeking fails."""
        nonlocal it, exhausted, pos, last_key
        if seek_to is not None:
            try:
                c.seek(int(start_ticks + seek_to / tb), stream=vs, backward=True)
                stats.seeks += 1
            except av.FFmpegError:
                return False  # unseekable input (e.g. a pipe or raw stream): decode forward instead
        it = frames_from()
        exhausted, pos, last_key = False, None, None
        buf.clear()
        return True

    def pull() -> Fraction | None:
        nonlocal pos, exhausted, gop, last_key
        while True:
            try:
                frame = next(it)
            except StopIteration:
                exhausted = True
                return None
            ticks = frame.pts if frame.pts is not None else frame.dts
            if ticks is None:
                continue
            t = Fraction(ticks) * tb - origin
            if frame.key_frame:
                if last_key is not None and t > last_key:
                    gop = max(gop, t - last_key)
                last_key = t
            pos = t
            if t >= floor:
                buf.append((t, frame))
            return t

    def worth_seeking(start: Fraction) -> bool:
        # Decoding on from `pos` reaches `start` without re-decoding anything; a seek restarts at
        # the keyframe before `start`. Seek only when that keyframe lies beyond `pos`, so spans
        # that start behind us (overlapping spans of a short video, frames still buffered) or
        # within the current keyframe interval are served by decoding forward.
        if pos is None or exhausted or start <= pos:
            return False
        if index_keys:
            k = bisect.bisect_right(index_keys, start) - 1
            return k >= 0 and index_keys[k] > pos
        known = max(gop, pos - last_key) if last_key is not None else gop
        return start > pos + known

    def seek(start: Fraction) -> None:
        if it is None and start <= 0:
            restart(None)
            return
        if not restart(start):
            if it is None:
                restart(None)  # fresh container: decoding from the top reaches every span
            elif start < pos:
                raise ValueError(f"{path}: cannot seek back to {float(start):.3f} s")
            return
        first = pull()
        if first is not None and first > start:
            restart(Fraction(0))  # the seek landed after the span start (bad index): from the top

    for i in order:
        start, end = fspans[i]
        floor = start
        if it is None or worth_seeking(start):
            seek(start)
        while not exhausted and (pos is None or pos < end):
            pull()
        # frames before this span are never needed again (spans are processed by start)
        buf[:] = [(t, f) for t, f in buf if t >= start]
        kept = [(t, f) for t, f in buf if t < end and (limit is None or t < limit)]
        kept.sort(key=lambda tf: tf[0])
        if not kept:
            raise ValueError(f"{path}: no video frame in span [{float(start):.4f}, {float(end):.4f}) s")
        sel = [kept[j] for j in uniform_indices(len(kept), frames_per_span)]
        try:
            rgb = np.stack([to_rgb(f, meta_rotation) for _, f in sel])
        except ValueError as exc:
            raise ValueError(f"{path}: frame size changes inside a span ({exc})") from exc
        stats.frames_used += len(sel)
        results[i] = VideoClipFrames(
            frames=rgb,
            times_s=np.array([float(t) for t, _ in sel], np.float64),
            span=(float(start), float(end)),
        )
    return results  # type: ignore[return-value]
