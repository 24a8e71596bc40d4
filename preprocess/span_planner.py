"""The planned video decode: only the frames the spans keep, and what they reference
(``SpanPlanner``), bit-identical to decoding every frame. ``video_decode`` runs it and decodes
forward instead when it raises ``PlanFallback``.
"""

from __future__ import annotations

import bisect
import math
from fractions import Fraction
from typing import Iterator

import av
import numpy as np

from preprocess.video_frames import DecodeStats, VideoClipFrames, to_rgb, uniform_indices


class PlanFallback(Exception):
    """The planned path met input it cannot handle exactly (packets without pts, duplicate pts, a
    kept frame with no keyframe before it, a kept frame the decoder did not return, an unseekable
    input): decode forward instead."""


# Codecs whose decoders honour skip_frame=NONREF by dropping only frames no other frame references
# (nal_ref_idc == 0 / sub-layer non-reference pictures), so the frames kept decode bit-identically.
_SKIP_NONREF_CODECS = frozenset({"h264", "hevc"})
_MAX_SEGMENT_BYTES = 256 << 20


class SpanPlanner:
    """Decode exactly the frames that the spans keep, and what they depend on.

    Spans are taken by start time. For each one the packets are demuxed (not decoded) from the
    keyframe before it, seeking there when that keyframe lies beyond the demux position, until a
    packet's decode timestamp reaches the span end (dts is monotonic and dts <= pts, so no later
    packet shows a frame inside the span). The packets' pts give every frame time in the span, so
    ``uniform_indices`` picks the kept frames before anything is decoded. Then, per run of packets
    between seeks ("segment"), each kept frame is decoded from the last keyframe before it in
    decode order that is not displayed after it; the decoder goes on from where it is when that
    keyframe is behind it, else it is drained, flushed and restarted at the keyframe (no seek: the
    packets are in memory). Frames between keyframes that nothing references are skipped
    (skip_frame NONREF, H.264/HEVC) unless kept. A kept frame depends only on its keyframe and the
    reference frames after it, so it decodes bit-identically to a decode of every frame.

    Frames are matched to packets by pts; anything that breaks that (see ``PlanFallback``) makes the
    caller decode forward instead, selecting among decoded frames as before."""

    def __init__(self, c, vs, path, frames_per_span, limit, stats: DecodeStats, fresh: bool):
        self.c, self.vs, self.path, self.n = c, vs, path, frames_per_span
        self.stats = stats
        self.tb = vs.time_base
        self.start = vs.start_time or 0
        self.limit_ticks = math.ceil(limit / self.tb) if limit is not None else None
        self.cc = vs.codec_context
        self.skip_ok = self.cc.name in _SKIP_NONREF_CODECS
        self.reorders = bool(self.cc.has_b_frames)
        self.meta_rotation = (-int(vs.metadata["rotate"])) % 360 if "rotate" in vs.metadata else 0
        try:
            self.index_keys = sorted({e.timestamp - self.start for e in vs.index_entries if e.is_keyframe})
        except (AttributeError, TypeError):
            self.index_keys = []
        self.fresh = fresh
        self.got: dict[int, object] = {}  # pts (ticks from the stream start) -> decoded frame
        self.mode = None
        self.seg: _Segment | None = None
        self.it: Iterator | None = None
        self.eof = False
        self.pos: int | None = None  # dts of the last demuxed packet
        self.last_key: int | None = None
        self.gop = 0

    # ---- demuxing

    def _demux(self):
        try:
            yield from self.c.demux(self.vs)
        except av.FFmpegError as exc:
            raise ValueError(f"{self.path}: video decode failed ({type(exc).__name__}: {exc})") from exc

    def _new_segment(self) -> None:
        self.seg = _Segment()
        self.it = self._demux()
        self.eof, self.pos, self.last_key = False, None, None

    def _pull(self) -> int | None:
        seg = self.seg
        while True:
            try:
                pkt = next(self.it)
            except StopIteration:
                self.eof = True
                return None
            if not pkt.size:
                continue  # the end-of-stream marker
            if pkt.pts is None:
                raise PlanFallback
            pts = pkt.pts - self.start
            if pkt.dts is not None:
                dts = pkt.dts - self.start
            elif not self.reorders:
                dts = pts
            else:
                dts = None  # e.g. Matroska's first packets: the next known dts bounds them (dts is monotonic)
            key = bool(pkt.is_keyframe)
            if dts is not None:
                if key:
                    if self.last_key is not None and dts > self.last_key:
                        self.gop = max(self.gop, dts - self.last_key)
                    self.last_key = dts
                self.pos = dts
            seg.add(pkt, pts, key)
            self.stats.packets_demuxed += 1
            return len(seg.pts) - 1

    def _seek(self, lo: int) -> None:
        """Seek so that the segment starts with a keyframe displayed at or before ``lo``. Seeking is
        by the index (decode timestamps in mp4) or by timestamp search (MPEG-TS, landing anywhere),
        so the first keyframe read may still come after ``lo``: then seek earlier, by growing steps."""
        target, previous = lo, None
        step = max(self.gop, math.ceil(1 / self.tb))
        for _ in range(8):
            try:
                self.c.seek(self.start + target, stream=self.vs, backward=True)
            except av.FFmpegError:
                raise PlanFallback from None  # unseekable input: decode forward
            self.stats.seeks += 1
            self._new_segment()
            j = self._pull()
            while j is not None and not self.seg.keys[j]:
                j = self._pull()
            if j is None:
                if self.seg.pts:
                    raise PlanFallback  # packets but no keyframe: let the forward decode judge
                return  # nothing after this point: spans here have no frames
            key_pts = self.seg.pts[j]
            if key_pts <= lo or key_pts == previous:
                return  # (the same keyframe again: nothing earlier to land on)
            previous = key_pts
            target = min(target, self.pos if self.pos is not None else key_pts) - step
            step *= 2

    def _worth_seeking(self, lo: int) -> bool:
        # Demuxing on from `pos` reaches `lo` reading nothing twice; a seek restarts at the keyframe
        # before `lo`. Seek only when that keyframe lies beyond `pos` (spans that start behind us or
        # within the current keyframe interval are served by reading on), as before.
        if self.pos is None or self.eof or lo <= self.pos:
            return False
        if self.index_keys:
            k = bisect.bisect_right(self.index_keys, lo) - 1
            return k >= 0 and self.index_keys[k] > self.pos
        known = max(self.gop, self.pos - self.last_key) if self.last_key is not None else self.gop
        return lo > self.pos + known

    # ---- decoding

    def _on_frames(self, frames, want) -> None:
        for f in frames:
            self.stats.frames_decoded += 1
            if f.pts is not None:
                p = f.pts - self.start
                if p in want and p not in self.got:
                    self.got[p] = f

    def _send(self, pkt, keep: bool, want) -> None:
        mode = "DEFAULT" if keep or not self.skip_ok else "NONREF"
        if mode != self.mode:
            self.cc.skip_frame = mode
            self.mode = mode
        self.stats.packets_decoded += 1
        try:
            frames = self.cc.decode(pkt)
        except av.FFmpegError as exc:
            raise ValueError(f"{self.path}: video decode failed ({type(exc).__name__}: {exc})") from exc
        self._on_frames(frames, want)

    def _drain(self, want) -> None:
        try:
            frames = self.cc.decode(None)
        except av.FFmpegError as exc:
            raise ValueError(f"{self.path}: video decode failed ({type(exc).__name__}: {exc})") from exc
        self._on_frames(frames, want)
        self.cc.flush_buffers()

    def _decode_segment(self) -> None:
        seg = self.seg
        want = {p: j for p, j in seg.targets.items() if p not in self.got}
        if not want:
            return
        kept = sorted(set(want.values()))
        kept_set = set(kept)
        keys = [j for j, k in enumerate(seg.keys) if k]
        fed = chain = -1  # last packet sent; keyframe the decoder started from
        for t in kept:
            k = bisect.bisect_right(keys, t) - 1
            while k >= 0 and seg.pts[keys[k]] > seg.pts[t]:  # a leading frame of an open GOP
                k -= 1
            if k < 0:
                raise PlanFallback
            kj = keys[k]
            if fed < 0 or kj > fed + 1 or kj < chain:
                if fed >= 0:
                    self._drain(want)
                chain, fed = kj, kj - 1
            for j in range(fed + 1, t + 1):
                self._send(seg.pkts[j], j in kept_set, want)
            fed = t
        self._drain(want)
        self.cc.skip_frame = self.mode = "DEFAULT"
        if any(p not in self.got for p in want):
            raise PlanFallback
        seg.pkts.clear()

    # ---- spans

    def run(self, fspans) -> list[VideoClipFrames]:
        tb = self.tb
        order = sorted(range(len(fspans)), key=lambda i: fspans[i])
        chosen: list[list[int] | None] = [None] * len(fspans)
        for i in order:
            start, end = fspans[i]
            lo, hi = math.ceil(start / tb), math.ceil(end / tb)  # t >= start <=> pts >= lo, etc.
            if self.limit_ticks is not None:
                hi = min(hi, self.limit_ticks)
            if self.seg is None or self._worth_seeking(lo) or self.seg.nbytes > _MAX_SEGMENT_BYTES:
                if self.seg is not None:
                    self._decode_segment()
                if self.fresh and lo <= 0:
                    self._new_segment()  # nothing read yet: the container is at the start
                else:
                    self._seek(lo)
                self.fresh = False
            while not self.eof and (self.pos is None or self.pos < hi):
                self._pull()
            seg = self.seg
            cand = sorted((p, j) for j, p in enumerate(seg.pts) if lo <= p < hi)
            if not cand:
                raise ValueError(f"{self.path}: no video frame in span [{float(start):.4f}, {float(end):.4f}) s")
            if len({p for p, _ in cand}) != len(cand):
                raise PlanFallback
            sel = [cand[j] for j in uniform_indices(len(cand), self.n)]
            for p, j in sel:
                seg.targets.setdefault(p, j)
            chosen[i] = [p for p, _ in sel]
        if self.seg is not None:
            self._decode_segment()

        rgb: dict[int, np.ndarray] = {}
        results = []
        for i, pts_list in enumerate(chosen):
            start, end = fspans[i]
            try:
                for p in pts_list:
                    if p not in rgb:
                        rgb[p] = to_rgb(self.got[p], self.meta_rotation)
                frames = np.stack([rgb[p] for p in pts_list])
            except ValueError as exc:
                raise ValueError(f"{self.path}: frame size changes inside a span ({exc})") from exc
            self.stats.frames_used += len(pts_list)
            results.append(
                VideoClipFrames(
                    frames=frames,
                    times_s=np.array([float(Fraction(p) * tb) for p in pts_list], np.float64),
                    span=(float(start), float(end)),
                )
            )
        return results


class _Segment:
    """Packets demuxed since the last seek, in decode order, and the kept frames' pts -> index."""

    __slots__ = ("pkts", "pts", "keys", "nbytes", "targets")

    def __init__(self) -> None:
        self.pkts: list = []
        self.pts: list[int] = []
        self.keys: list[bool] = []
        self.nbytes = 0
        self.targets: dict[int, int] = {}

    def add(self, pkt, pts: int, key: bool) -> None:
        self.pkts.append(pkt)
        self.pts.append(pts)
        self.keys.append(key)
        self.nbytes += pkt.size
