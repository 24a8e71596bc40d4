"""Media decoding with PyAV: probing, full audio tracks, and span-wise video frames.

Clock: every time this module returns is in seconds. Video frame times are
``frame.pts * time_base - video_stream.start_time`` (pts, never frame index, so variable frame
rate works). ``decode_audio`` puts time 0 at the audio stream's first decoded sample;
``decode_audio_track`` also returns that sample's container time so callers can put audio on the
video's clock (``align_audio``).

Layouts: audio ``[C,N] float32`` in [-1, 1]; video frames ``[F,H,W,3] uint8`` RGB, rotated upright
as the container's display matrix asks.

Cost: video clips decode only the frames kept and what they reference (``_SpanPlanner``: packets are
demuxed first, the kept frames chosen from their pts, then each decoded from its keyframe, skipping
unreferenced B-frames), bit-identical to decoding every frame; only kept frames become RGB. Audio
is decoded whole (the clips depend on its length, and AAC's decoder state on its history) and
converted in one pass. Opening avoids FFmpeg's probe decoding where the container header already
says everything (WAV; the video stream when only audio is decoded). Decoder threads: ``threads``
arguments, default ``DECODE_THREADS`` (env ``BINDSET_DECODE_THREADS``; 1 is the most work per CPU
when samples are decoded in parallel processes).
"""

from __future__ import annotations

import bisect
import math
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator, Sequence

import av
import numpy as np
import torch


def _free_codec_contexts_before_fork() -> None:
    """A PyAV codec context caught in a reference cycle owns FFmpeg's frame threads until the garbage
    collector frees it. If that happens in a forked child (a DataLoader worker), where those threads
    do not exist, ``avcodec_free_context`` waits forever in ``pthread_cond_destroy`` (seen: workers
    hung in their first ``torch.manual_seed``). Collecting in the parent right before a fork frees
    them where their threads live."""
    import gc

    gc.collect()


os.register_at_fork(before=_free_codec_contexts_before_fork)


# Decoder threads when a call does not say: 0 = FFmpeg's choice (one per core), 1 = none.
DECODE_THREADS = int(os.environ.get("BINDSET_DECODE_THREADS", "0") or 0)


class NoAudioStream(ValueError):
    """The file has no audio stream (the build stores the sample without audio)."""


class NoVideoStream(ValueError):
    """The file has no video stream."""


@dataclass(frozen=True)
class VideoStreamInfo:
    fps: float  # average frame rate
    width: int  # as displayed, i.e. after rotation
    height: int
    rotation: int  # counter-clockwise degrees to display upright (PyAV's VideoFrame.rotation)
    start_time_s: float  # container time of the stream's first pts
    n_frames: int | None  # from the container header; None when it does not say
    duration_s: float  # last frame's pts + its duration, minus start: n_frames/fps for CFR


@dataclass(frozen=True)
class AudioStreamInfo:
    sample_rate: int
    channels: int
    start_time_s: float  # container time of the first decoded sample


@dataclass(frozen=True)
class MediaInfo:
    duration_s: float  # the video's duration when there is video, else the audio header's
    video: VideoStreamInfo | None
    audio: AudioStreamInfo | None


@dataclass(frozen=True)
class AudioTrack:
    waveform: np.ndarray  # [C,N] float32
    sample_rate: int
    start_time_s: float  # container time of waveform[:, 0]


@dataclass(frozen=True)
class VideoClipFrames:
    frames: np.ndarray  # [F,H,W,3] uint8, RGB, upright
    times_s: np.ndarray  # [F] float64, seconds from the video stream's start
    span: tuple[float, float]


def _plain_open(path: str | Path, **kwargs) -> av.container.InputContainer:
    try:
        return av.open(str(path), "r", **kwargs)
    except (av.FFmpegError, OSError) as exc:
        raise ValueError(f"{path}: cannot open media ({type(exc).__name__}: {exc})") from exc


def _is_wav(path: str | Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(12)
    except OSError:
        return False
    return head[:4] in (b"RIFF", b"RIFX", b"RF64") and head[8:12] == b"WAVE"


def _open(path: str | Path) -> av.container.InputContainer:
    """Open for reading.

    A WAV header describes its one stream completely, yet ``avformat_find_stream_info`` reads up to
    its 5 MB probe size of samples first (about 20 ms, more than decoding them), so WAVs are opened
    with a tiny probe size; the stream parameters, and so decoding, are the same. A stream left
    without its rate or channel count (never seen) is reopened with FFmpeg's defaults."""
    if _is_wav(path):
        try:
            c = av.open(str(path), "r", container_options={"probesize": "32"})
        except (av.FFmpegError, OSError):
            return _plain_open(path)
        if all(
            s.type != "audio"
            or (s.codec_context is not None and s.codec_context.sample_rate and s.codec_context.channels)
            for s in c.streams
        ):
            return c
        c.close()
    return _plain_open(path)


def _ticks_to_s(ticks: int | None, tb: Fraction | None) -> Fraction:
    if ticks is None or tb is None:
        return Fraction(0)
    return Fraction(ticks) * tb


# ----------------------------------------------------------------------------------------- probe


def _video_end_ticks(container, stream) -> int | None:
    """Largest ``pts + duration`` over the video packets, read by demuxing only the tail.

    The header's ``stream.duration`` is not the end of the last frame (mov_bbb: 499 ticks of 1/50 s
    for 250 frames at 25 fps), and decord/ImageBind's duration is ``n_frames / fps`` = 10.0 s, which
    equals the last frame's pts plus its duration. Demuxing (no decoding) from the last keyframe is
    cheap even for long files."""
    tb = stream.time_base
    start = stream.start_time or 0
    default_dur = 0
    rate = stream.average_rate or stream.guessed_rate
    if rate and tb:
        default_dur = max(int(round(1 / (Fraction(rate) * tb))), 1)

    def scan() -> int | None:
        end = None
        for pkt in container.demux(stream):
            if pkt.pts is None:
                continue
            e = pkt.pts + (pkt.duration or default_dur)
            end = e if end is None else max(end, e)
        return end

    end = None
    if stream.duration:
        try:
            container.seek(start + stream.duration, stream=stream, backward=True)
            end = scan()
        except av.FFmpegError:
            end = None
    if end is None:
        container.seek(start, stream=stream, backward=True)
        end = scan()
    return end


def _first_frame(container, stream):
    stream.codec_context.thread_count = 1  # one frame: starting decoder threads costs more than it saves
    for frame in container.decode(stream):
        return frame
    return None


def _frame_rotation(frame) -> int:
    try:
        rot = frame.rotation
    except AttributeError:  # older PyAV
        rot = 0
    return int(round(rot or 0)) % 360


def probe(path: str | Path) -> MediaInfo:
    """Stream facts without decoding more than one frame per stream."""
    try:
        return _probe(path)
    except av.FFmpegError as exc:
        raise ValueError(f"{path}: cannot probe media ({type(exc).__name__}: {exc})") from exc


def _probe(path: str | Path) -> MediaInfo:
    with _open(path) as c:
        video = audio = None
        if c.streams.video:
            vs = c.streams.video[0]
            end = _video_end_ticks(c, vs)
            start_ticks = vs.start_time or 0
            c.seek(start_ticks, stream=vs, backward=True)
            first = _first_frame(c, vs)
            rotation = _frame_rotation(first) if first is not None else 0
            if rotation == 0 and "rotate" in vs.metadata:  # pre-display-matrix files
                rotation = (-int(vs.metadata["rotate"])) % 360
            w, h = vs.codec_context.width, vs.codec_context.height
            if first is not None:
                w, h = first.width, first.height
            if rotation in (90, 270):
                w, h = h, w
            rate = vs.average_rate or vs.guessed_rate
            n_frames = vs.frames or None
            duration = float(_ticks_to_s(end - start_ticks, vs.time_base)) if end is not None else 0.0
            video = VideoStreamInfo(
                fps=float(rate) if rate else 0.0,
                width=int(w),
                height=int(h),
                rotation=rotation,
                start_time_s=float(_ticks_to_s(start_ticks, vs.time_base)),
                n_frames=n_frames,
                duration_s=duration,
            )
        if c.streams.audio:
            st = c.streams.audio[0]
            start_s = float(_ticks_to_s(st.start_time, st.time_base))
            c.seek(st.start_time or 0, stream=st, backward=True)
            first = _first_frame(c, st)
            if first is not None and first.pts is not None and first.time_base is not None:
                start_s = float(first.pts * first.time_base)
            audio = AudioStreamInfo(
                sample_rate=int(st.codec_context.sample_rate or st.rate),
                channels=int(st.codec_context.channels),
                start_time_s=start_s,
            )
        if video is not None:
            duration = video.duration_s
        elif c.streams.audio and c.streams.audio[0].duration:
            st = c.streams.audio[0]
            duration = float(_ticks_to_s(st.duration, st.time_base))
        else:
            duration = (c.duration or 0) / av.time_base
    return MediaInfo(duration_s=float(duration), video=video, audio=audio)


# ----------------------------------------------------------------------------------------- audio

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
    """``_open`` for decoding audio: when the first stream is video its probe decode is skipped
    (several H.264 frames, most of the cost of opening a short mp4), the audio streams are probed
    as usual. The video stream is only used for its start time; anything unexpected -> ``_open``."""
    if _is_wav(path):
        return _open(path)
    try:
        c = av.open(str(path), "r", stream_options=[{"skip_frame": "nonkey"}])
    except (av.FFmpegError, OSError, ValueError):
        return _open(path)
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
    return _open(path)


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
        start = _ticks_to_s(st.start_time, st.time_base)
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
        origin = float(_ticks_to_s(vs.start_time, vs.time_base))
    return align_audio(track, origin), track.sample_rate


# ----------------------------------------------------------------------------------------- video


def _rotate(rgb: np.ndarray, rotation: int) -> np.ndarray:
    # rotation is counter-clockwise degrees; np.rot90 with k>0 also turns counter-clockwise
    k = (rotation // 90) % 4
    return np.ascontiguousarray(np.rot90(rgb, k=k)) if k else rgb


def _to_rgb(frame, fallback_rotation: int) -> np.ndarray:
    rotation = _frame_rotation(frame) or fallback_rotation
    return _rotate(frame.to_ndarray(format="rgb24"), rotation)


def _index_keyframe_times(stream, start_ticks: int) -> list[Fraction]:
    """Keyframe times from the demuxer's index (mp4/mkv have one; no I/O), sorted; [] if none."""
    try:
        entries = stream.index_entries
        tb = stream.time_base
        keys = sorted({Fraction(e.timestamp - start_ticks) * tb for e in entries if e.is_keyframe})
    except (AttributeError, TypeError):
        return []
    return keys


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
    fallback: bool = False  # the planned path gave way to decoding forward (see _SpanPlanner)


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
    (see ``_SpanPlanner``); ``threads`` as in ``_configure_threads``.

    Raises ``ValueError`` when the file has no video or a span holds no frame."""
    if frames_per_span < 1:
        raise ValueError("frames_per_span must be >= 1")
    fspans = [(Fraction(s), Fraction(e)) for s, e in spans]
    limit = Fraction(duration_s) if duration_s is not None else None
    with _open(path) as c:
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
    with _open(path) as c:
        vs = _video_stream(c, path)
        try:
            end = _video_end_ticks(c, vs)
        except av.FFmpegError as exc:
            raise ValueError(f"{path}: cannot read video packets ({type(exc).__name__}: {exc})") from exc
        duration = float(_ticks_to_s(end - (vs.start_time or 0), vs.time_base)) if end is not None else 0.0
        if not duration > 0:
            raise ValueError(f"{path}: video has no frames")
        fspans = [(Fraction(s), Fraction(e)) for s, e in make_spans(duration)]
        clips = _decode_spans(c, vs, path, fspans, frames_per_span, Fraction(duration), threads, stats, fresh=False)
    return duration, fspans, clips


def _decode_spans(c, vs, path, fspans, frames_per_span, limit, threads, stats, *, fresh: bool):
    stats = stats if stats is not None else DecodeStats()
    _configure_threads(vs, threads)
    try:
        return _SpanPlanner(c, vs, path, frames_per_span, limit, stats, fresh).run(fspans)
    except _Fallback:
        pass
    # Decode forward on a fresh container: the planned path left this one mid-stream.
    stats.fallback = True
    with _open(path) as c2:
        vs2 = _video_stream(c2, path)
        _configure_threads(vs2, threads)
        return _decode_forward(c2, vs2, path, fspans, frames_per_span, limit, stats)


class _Fallback(Exception):
    """The planned path met input it cannot handle exactly (packets without pts, duplicate pts, a
    kept frame with no keyframe before it, a kept frame the decoder did not return, an unseekable
    input): decode forward instead."""


# Codecs whose decoders honour skip_frame=NONREF by dropping only frames no other frame references
# (nal_ref_idc == 0 / sub-layer non-reference pictures), so the frames kept decode bit-identically.
_SKIP_NONREF_CODECS = frozenset({"h264", "hevc"})
_MAX_SEGMENT_BYTES = 256 << 20


class _SpanPlanner:
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

    Frames are matched to packets by pts; anything that breaks that (see ``_Fallback``) makes the
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
                raise _Fallback
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
                raise _Fallback from None  # unseekable input: decode forward
            self.stats.seeks += 1
            self._new_segment()
            j = self._pull()
            while j is not None and not self.seg.keys[j]:
                j = self._pull()
            if j is None:
                if self.seg.pts:
                    raise _Fallback  # packets but no keyframe: let the forward decode judge
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
                raise _Fallback
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
            raise _Fallback
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
                raise _Fallback
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
                        rgb[p] = _to_rgb(self.got[p], self.meta_rotation)
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


def _decode_forward(c, vs, path, fspans, frames_per_span, limit, stats: DecodeStats) -> list[VideoClipFrames]:
    """Decode every frame from the keyframe before each span (seeking per span when that skips
    something) and select among the decoded frames by their pts. The general path: any timestamps,
    unseekable input; used when ``_SpanPlanner`` cannot vouch for its result."""
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
            rgb = np.stack([_to_rgb(f, meta_rotation) for _, f in sel])
        except ValueError as exc:
            raise ValueError(f"{path}: frame size changes inside a span ({exc})") from exc
        stats.frames_used += len(sel)
        results[i] = VideoClipFrames(
            frames=rgb,
            times_s=np.array([float(t) for t, _ in sel], np.float64),
            span=(float(start), float(end)),
        )
    return results  # type: ignore[return-value]
