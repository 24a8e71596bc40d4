"""Opening and probing media containers with PyAV: the layer under ``audio_decode`` and ``video_decode``.

Clock: every time these modules return is in seconds. Video frame times are
``frame.pts * time_base - video_stream.start_time`` (pts, never frame index, so variable frame
rate works); audio time 0 is the audio stream's first decoded sample unless a caller puts audio on
the video's clock (``audio_decode.align_audio``).

Cost: opening avoids FFmpeg's probe decoding where the container header already says everything
(WAV here; the video stream when only audio is decoded, in ``audio_decode``). ``probe`` decodes at
most one frame per stream.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av


def _free_codec_contexts_before_fork() -> None:
    """A PyAV codec context caught in a reference cycle owns FFmpeg's frame threads until the garbage
    collector frees it. If that happens in a forked child (a DataLoader worker), where those threads
    do not exist, ``avcodec_free_context`` waits forever in ``pthread_cond_destroy`` (seen: workers
    hung in their first ``torch.manual_seed``). Collecting in the parent right before a fork frees
    them where their threads live."""
    import gc

    gc.collect()


os.register_at_fork(before=_free_codec_contexts_before_fork)


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


def _plain_open(path: str | Path, **kwargs) -> av.container.InputContainer:
    try:
        return av.open(str(path), "r", **kwargs)
    except (av.FFmpegError, OSError) as exc:
        raise ValueError(f"{path}: cannot open media ({type(exc).__name__}: {exc})") from exc


def is_wav(path: str | Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(12)
    except OSError:
        return False
    return head[:4] in (b"RIFF", b"RIFX", b"RF64") and head[8:12] == b"WAVE"


def open_media(path: str | Path) -> av.container.InputContainer:
    """Open for reading.

    A WAV header describes its one stream completely, yet ``avformat_find_stream_info`` reads up to
    its 5 MB probe size of samples first (about 20 ms, more than decoding them), so WAVs are opened
    with a tiny probe size; the stream parameters, and so decoding, are the same. A stream left
    without its rate or channel count (never seen) is reopened with FFmpeg's defaults."""
    if is_wav(path):
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


def ticks_to_s(ticks: int | None, tb: Fraction | None) -> Fraction:
    if ticks is None or tb is None:
        return Fraction(0)
    return Fraction(ticks) * tb


# ----------------------------------------------------------------------------------------- probe


def video_end_ticks(container, stream) -> int | None:
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


def frame_rotation(frame) -> int:
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
    with open_media(path) as c:
        video = audio = None
        if c.streams.video:
            vs = c.streams.video[0]
            end = video_end_ticks(c, vs)
            start_ticks = vs.start_time or 0
            c.seek(start_ticks, stream=vs, backward=True)
            first = _first_frame(c, vs)
            rotation = frame_rotation(first) if first is not None else 0
            if rotation == 0 and "rotate" in vs.metadata:  # pre-display-matrix files
                rotation = (-int(vs.metadata["rotate"])) % 360
            w, h = vs.codec_context.width, vs.codec_context.height
            if first is not None:
                w, h = first.width, first.height
            if rotation in (90, 270):
                w, h = h, w
            rate = vs.average_rate or vs.guessed_rate
            n_frames = vs.frames or None
            duration = float(ticks_to_s(end - start_ticks, vs.time_base)) if end is not None else 0.0
            video = VideoStreamInfo(
                fps=float(rate) if rate else 0.0,
                width=int(w),
                height=int(h),
                rotation=rotation,
                start_time_s=float(ticks_to_s(start_ticks, vs.time_base)),
                n_frames=n_frames,
                duration_s=duration,
            )
        if c.streams.audio:
            st = c.streams.audio[0]
            start_s = float(ticks_to_s(st.start_time, st.time_base))
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
            duration = float(ticks_to_s(st.duration, st.time_base))
        else:
            duration = (c.duration or 0) / av.time_base
    return MediaInfo(duration_s=float(duration), video=video, audio=audio)
