"""Media decoding with PyAV: probing, full audio tracks, and span-wise video frames.

Clock: every time this module returns is in seconds. Video frame times are
``frame.pts * time_base - video_stream.start_time`` (pts, never frame index, so variable frame
rate works). ``decode_audio`` puts time 0 at the audio stream's first decoded sample;
``decode_audio_track`` also returns that sample's container time so callers can put audio on the
video's clock (``align_audio``).

Layouts: audio ``[C,N] float32`` in [-1, 1]; video frames ``[F,H,W,3] uint8`` RGB, rotated upright
as the container's display matrix asks.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Sequence

import av
import numpy as np
import torch


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


def _open(path: str | Path) -> av.container.InputContainer:
    try:
        return av.open(str(path), "r")
    except (av.FFmpegError, OSError) as exc:
        raise ValueError(f"{path}: cannot open media ({type(exc).__name__}: {exc})") from exc


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


def decode_audio_track(path: str | Path) -> AudioTrack:
    """The whole first audio track, all channels, at its own rate, with its start time.

    Samples are concatenated in decode order; gaps in pts are not filled (containers with audio gaps
    are rare and the reference loader ignores them too)."""
    with _open(path) as c:
        if not c.streams.audio:
            raise NoAudioStream(f"{path}: no audio stream")
        st = c.streams.audio[0]
        st.thread_type = "AUTO"
        chunks: list[np.ndarray] = []
        rate = None
        channels = None
        start = None
        try:
            for frame in c.decode(st):
                if frame.samples == 0:
                    continue
                if rate is None:
                    rate, channels = frame.sample_rate, frame.layout.nb_channels
                    if frame.pts is not None and frame.time_base is not None:
                        start = Fraction(frame.pts) * frame.time_base
                elif frame.sample_rate != rate or frame.layout.nb_channels != channels:
                    raise ValueError(
                        f"{path}: audio format changes mid-stream ({rate} Hz x{channels} -> "
                        f"{frame.sample_rate} Hz x{frame.layout.nb_channels})"
                    )
                chunks.append(_audio_frame_to_float(frame))
        except av.FFmpegError as exc:
            raise ValueError(f"{path}: audio decode failed ({type(exc).__name__}: {exc})") from exc
        if not chunks:
            raise ValueError(f"{path}: audio stream has no samples")
        if start is None:
            start = _ticks_to_s(st.start_time, st.time_base)
    return AudioTrack(np.ascontiguousarray(np.concatenate(chunks, axis=1)), int(rate), float(start))


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
    track = decode_audio_track(path)
    with _open(path) as c:
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


def decode_video_frames(
    path: str | Path,
    spans: Sequence[tuple[float | Fraction, float | Fraction]],
    frames_per_span: int,
    *,
    duration_s: float | Fraction | None = None,
) -> list[VideoClipFrames]:
    """For each span ``[start, end)`` (seconds from the video start) the frames with
    ``start <= t < end`` (and ``t < duration_s`` when given), subsampled to ``frames_per_span`` as
    ``uniform_indices`` does. Decodes only what the spans need, from one open container.

    Raises ``ValueError`` when the file has no video or a span holds no frame."""
    if frames_per_span < 1:
        raise ValueError("frames_per_span must be >= 1")
    fspans = [(Fraction(s), Fraction(e)) for s, e in spans]
    limit = Fraction(duration_s) if duration_s is not None else None
    order = sorted(range(len(fspans)), key=lambda i: fspans[i])
    results: list[VideoClipFrames | None] = [None] * len(fspans)

    with _open(path) as c:
        if not c.streams.video:
            raise NoVideoStream(f"{path}: no video stream")
        vs = c.streams.video[0]
        vs.thread_type = "AUTO"
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
                    for frame in pkt.decode():
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
            results[i] = VideoClipFrames(
                frames=rgb,
                times_s=np.array([float(t) for t, _ in sel], np.float64),
                span=(float(start), float(end)),
            )
    return results  # type: ignore[return-value]
