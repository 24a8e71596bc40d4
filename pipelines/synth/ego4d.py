"""Ego4D-style layout: head-mounted video of a procedural room, the IMU trace of that very head
motion, an audio track of the footsteps, and narrations of what the camera looks at.

Tree (relative to the root)::

    v2/full_scale/<video_uid>.mp4        H.264 320x240 @ 30 fps (default 20 s), AAC 48 kHz stereo
    v2/imu/<video_uid>.csv               component_idx,component_timestamp_ms,canonical_timestamp_ms,
                                         gyro_x,gyro_y,gyro_z,accl_x,accl_y,accl_z
    v2/annotations/narration.json        {uid: {"narration_pass_1": {"narrations": [...]}}}
    events.csv                           id,event_time_s  (the sync event of each video)

``video_uid`` is a uuid4 drawn from the sample's generator.

Motion model (camera body frame: x right, y forward, z up; see ``scene.py``). The wearer stands in
the middle of a room, turns the head along a smooth random yaw path ``yaw(t)`` (positive = left)
and walks in place: each step bobs the head up and down (``z(t) = A sin(2 pi f t + phi)``) and nods
the camera a little (``pitch(t) = P sin(2 pi f t + phi)``). The video is cut from a cylindrical
panorama rendered once from the room centre: frame columns follow ``yaw(t)``, rows follow
``pitch(t)``. The IMU is the same motion differentiated analytically and sampled at the IMU
timestamps: ``gyro = (pitch', yaw' sin(pitch), yaw' cos(pitch))`` rad/s, ``accl = (0, F sin(pitch),
F cos(pitch))`` m/s^2 with ``F = g + z''(t)`` (gravity on ``accl_z``), plus sensor noise and a
constant gyro bias. So ``integral(gyro_z) ~= yaw(t) - yaw(0)``.

IMU timing: rows about every 5 ms (jitter +-0.3 ms), ``canonical_timestamp_ms`` = milliseconds from
the media start (the first frame; the mp4's time 0 unless ``start_offset_s`` shifts every pts, in
which case add it); ``component_timestamp_ms = canonical_timestamp_ms + component_offset_ms``, a
per-video constant drawn in [1.0e6, 5.0e6) ms (the time of the clip inside its recording
component; there is one component, ``component_idx = 0``). The CSV has the warts real files have:
a few ``canonical_timestamp_ms`` fields empty (NULL), a few adjacent rows swapped (out of order),
and one row duplicated.

Sync event (one per video, frame-aligned, at least 3 s from both ends): a full white frame in the
video, a click in the audio and an accelerometer spike (a tap on the camera, mostly ``accl_x``),
all at ``event_time_s`` (``events.csv``, seconds from the media start like every time here).
Footstep thuds in the audio coincide with the lowest head position of each step (``Motion.step_times``).

Options: ``duration`` (20.0), ``fps`` (30), ``width``/``height`` (320x240), ``audio`` (True),
``sample_rate`` (48000), ``channels`` (2), ``gop_size`` (30), ``start_offset_s`` (0.0),
``imu_period_ms`` (5.0), ``imu_jitter_ms`` (0.3), ``hfov_deg`` (60).

Why one module of this size: one layout's generator, from head motion to muxed media, IMU and
narrations; nothing in it serves another layout.
"""

from __future__ import annotations

import csv
import io
import json
import math
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipelines.synth import scene as sc
from pipelines.synth.media import click, pack_yuv420p, rgb_to_yuv, write_mp4

G = 9.81
LOOK_DOWN_RAD = 0.35  # the rest pitch of the head-mounted camera (about 20 degrees down)
IMU_HEADER = (
    "component_idx",
    "component_timestamp_ms",
    "canonical_timestamp_ms",
    "gyro_x",
    "gyro_y",
    "gyro_z",
    "accl_x",
    "accl_y",
    "accl_z",
)
DEFAULTS = dict(
    duration=20.0,
    fps=30,
    width=320,
    height=240,
    audio=True,
    sample_rate=48000,
    channels=2,
    imu_period_ms=5.0,
    imu_jitter_ms=0.3,
    gop_size=30,
    start_offset_s=0.0,
    hfov_deg=60.0,
)


@dataclass(frozen=True)
class Motion:
    """Head motion: yaw = sum_k a_k sin(2 pi f_k t + p_k) + w0 t; bob/nod at the step frequency."""

    yaw_amp: tuple[float, ...]
    yaw_freq: tuple[float, ...]
    yaw_phase: tuple[float, ...]
    yaw_drift: float  # rad/s
    step_hz: float
    bob_m: float
    nod_rad: float
    step_phase: float

    def yaw(self, t):
        t = np.asarray(t, np.float64)
        out = self.yaw_drift * t
        for a, f, p in zip(self.yaw_amp, self.yaw_freq, self.yaw_phase):
            out = out + a * np.sin(2 * math.pi * f * t + p)
        return out

    def yaw_rate(self, t):
        t = np.asarray(t, np.float64)
        out = np.full_like(t, self.yaw_drift)
        for a, f, p in zip(self.yaw_amp, self.yaw_freq, self.yaw_phase):
            out = out + a * 2 * math.pi * f * np.cos(2 * math.pi * f * t + p)
        return out

    def _arg(self, t):
        return 2 * math.pi * self.step_hz * np.asarray(t, np.float64) + self.step_phase

    def pitch(self, t):
        return self.nod_rad * np.sin(self._arg(t))

    def pitch_rate(self, t):
        return self.nod_rad * 2 * math.pi * self.step_hz * np.cos(self._arg(t))

    def bob_accel(self, t):
        """Vertical head acceleration z''(t) in m/s^2."""
        return -self.bob_m * (2 * math.pi * self.step_hz) ** 2 * np.sin(self._arg(t))

    def step_times(self, duration: float) -> np.ndarray:
        """Foot strikes: the lowest head position, where sin(arg) = -1."""
        k0 = math.ceil((self.step_phase + math.pi / 2) / (2 * math.pi) - 1e-9) - 1
        times = []
        k = k0
        while True:
            t = (2 * math.pi * k - math.pi / 2 - self.step_phase) / (2 * math.pi * self.step_hz)
            if t > duration:
                break
            if t >= 0:
                times.append(t)
            k += 1
        return np.asarray(times)


@dataclass(frozen=True)
class EgoSample:
    seed: int
    index: int
    uid: str
    room: sc.Room
    motion: Motion
    event_time_s: float
    component_offset_ms: float
    duration: float
    fps: int
    width: int
    height: int
    fx: float
    eye_height: float

    @property
    def n_frames(self) -> int:
        return int(round(self.duration * self.fps))

    def frame_times(self) -> np.ndarray:
        return np.arange(self.n_frames) / self.fps

    def object_azimuths(self) -> list[tuple[float, sc.RoomObject]]:
        """Yaw angle (scene convention, positive = left) at which the camera looks at each object."""
        out = []
        for obj in self.room.objects:
            x, y, _ = obj.center
            out.append((math.atan2(-x, y), obj))
        return out


def _rng(sample: EgoSample, stream: int) -> np.random.Generator:
    """Separate generators for the noise of each modality, so changing one leaves the others."""
    return sc.sample_rng(sample.seed, sample.index, 100 * sc.SEED_SALT["ego4d"] + stream)


def _uid(rng: np.random.Generator) -> str:
    return str(uuid.UUID(bytes=rng.bytes(16), version=4))


def make_sample(seed: int, index: int, **options) -> EgoSample:
    o = {**DEFAULTS, **options}
    rng = sc.sample_rng(seed, index, sc.SEED_SALT["ego4d"])
    uid = _uid(rng)
    duration = float(o["duration"])
    fps = int(o["fps"])
    n_obj = int(rng.integers(5, 8))
    placements: list[tuple[float, float]] = []
    azimuths: list[float] = []
    for _ in range(500):
        if len(placements) == n_obj:
            break
        az = float(rng.uniform(-math.pi, math.pi))
        if any(abs((az - a + math.pi) % (2 * math.pi) - math.pi) < 0.55 for a in azimuths):
            continue
        r = float(rng.uniform(1.6, 3.0))
        azimuths.append(az)
        placements.append((r * math.sin(az), r * math.cos(az)))
    half = float(rng.uniform(3.6, 4.5))
    room = sc.make_room(rng, placements, (-half, half), (-half, half), float(rng.uniform(2.6, 3.0)))
    k = 3
    motion = Motion(
        yaw_amp=tuple(float(v) for v in rng.uniform(0.3, 0.9, k)),
        yaw_freq=tuple(float(v) for v in rng.uniform(0.03, 0.15, k)),
        yaw_phase=tuple(float(v) for v in rng.uniform(0, 2 * math.pi, k)),
        yaw_drift=float(rng.uniform(-0.15, 0.15)),
        step_hz=float(rng.uniform(1.6, 2.0)),
        bob_m=float(rng.uniform(0.02, 0.035)),
        nod_rad=float(rng.uniform(0.012, 0.022)),
        step_phase=float(rng.uniform(0, 2 * math.pi)),
    )
    lo = 3.0
    hi = max(duration - 3.0, lo)
    event_frame = (
        int(rng.integers(int(math.ceil(lo * fps)), int(hi * fps) + 1)) if duration > 6 else int(duration * fps / 2)
    )
    event_time = event_frame / fps
    offset = float(np.round(rng.uniform(1.0e6, 5.0e6), 3))
    width, height = int(o["width"]), int(o["height"])
    fx = (width / 2) / math.tan(math.radians(float(o["hfov_deg"])) / 2)
    return EgoSample(
        seed,
        index,
        uid,
        room,
        motion,
        event_time,
        offset,
        duration,
        fps,
        width,
        height,
        fx,
        float(rng.uniform(1.5, 1.7)),
    )


# --------------------------------------------------------------------------------------------
# video


def render_panorama(sample: EgoSample, margin: int) -> np.ndarray:
    """``[H + 2 margin, W_pano, 3] uint8`` cylindrical panorama; column c looks at angle c / fx
    to the right of +y (so yaw psi, positive left, centres column -psi * fx); the middle row looks
    ``LOOK_DOWN_RAD`` below the horizon."""
    fx = sample.fx
    w_pano = int(round(2 * math.pi * fx))
    h = sample.height + 2 * margin
    theta = (np.arange(w_pano, dtype=np.float32) + 0.5) * (2 * math.pi / w_pano)
    cy = h / 2
    up = -(np.arange(h, dtype=np.float32) + 0.5 - cy) / fx
    dirs = np.empty((3, h, w_pano), np.float32)  # channel-first, as scene.cast takes them
    dirs[0] = np.sin(theta)[None, :]
    dirs[1] = np.cos(theta)[None, :]
    # head-mounted cameras look down a little: shift the cylinder's rows (vertical lines stay vertical)
    dirs[2] = up[:, None] + np.float32(math.tan(-LOOK_DOWN_RAD))
    origin = (0.0, 0.0, sample.eye_height)
    hit = sc.cast(sample.room.scene, origin, dirs)
    rng = _rng(sample, 55)
    return sc.to_uint8(sc.shade(sample.room.scene, hit), rng, noise=0.01)


def _windows(sample: EgoSample, margin: int, w_pano: int) -> tuple[np.ndarray, np.ndarray]:
    """Per frame, the panorama window's left column (view centre at angle -yaw) and top row
    (looking up, positive pitch, moves the window up), rounded to whole pixels (at most 0.5 px =
    0.1 degree of quantisation)."""
    t = sample.frame_times()
    scale = w_pano / (2 * math.pi)
    left = np.round(-sample.motion.yaw(t) * scale - sample.width / 2).astype(np.int64) % w_pano
    top = margin - np.round(sample.motion.pitch(t) * sample.fx).astype(np.int64)
    return left, top


def _margin(sample: EgoSample) -> int:
    return int(math.ceil(sample.motion.nod_rad * sample.fx)) + 2


def render_frames(sample: EgoSample) -> np.ndarray:
    """``[T, H, W, 3] uint8`` RGB: the panorama window at yaw(t) and pitch(t), with the white sync
    frame. (``write`` uses :func:`render_frames_yuv420p`, the same pictures without the per-frame
    colour conversion.)"""
    margin = _margin(sample)
    pano = render_panorama(sample, margin)
    w_pano = pano.shape[1]
    ext = np.concatenate([pano, pano[:, : sample.width]], axis=1)  # wrap-around: windows are slices
    left, top = _windows(sample, margin, w_pano)
    frames = np.empty((sample.n_frames, sample.height, sample.width, 3), np.uint8)
    for i in range(sample.n_frames):
        frames[i] = ext[top[i] : top[i] + sample.height, left[i] : left[i] + sample.width]
    ev = int(round(sample.event_time_s * sample.fps))
    if 0 <= ev < len(frames):
        frames[ev] = 255
    return frames


def render_frames_yuv420p(sample: EgoSample) -> np.ndarray:
    """``[T, H * 3 // 2, W] uint8`` yuv420p frames (PyAV's planar layout) of :func:`render_frames`.

    The panorama is converted once; the 2x2 chroma averages are precomputed for the four parities of
    the window origin, so every frame is three slices."""
    margin = _margin(sample)
    pano = render_panorama(sample, margin)
    w_pano = pano.shape[1]
    ext = np.concatenate([pano, pano[:, : sample.width + 2]], axis=1)
    y, cb, cr = rgb_to_yuv(ext)
    y8 = np.clip(y + 0.5, 0, 255).astype(np.uint8)
    hh, ww = (y.shape[0] - 1) // 2, (y.shape[1] - 1) // 2

    def half(c, dy, dx):
        c = c[dy : dy + 2 * hh, dx : dx + 2 * ww]
        return np.clip(c.reshape(hh, 2, ww, 2).mean(axis=(1, 3)) + 0.5, 0, 255).astype(np.uint8)

    chroma = {(dy, dx): (half(cb, dy, dx), half(cr, dy, dx)) for dy in (0, 1) for dx in (0, 1)}
    left, top = _windows(sample, margin, w_pano)
    h, w = sample.height, sample.width
    out = np.empty((sample.n_frames, h * 3 // 2, w), np.uint8)
    q = h // 4
    for i in range(sample.n_frames):
        t0, l0 = int(top[i]), int(left[i])
        u, v = chroma[(t0 % 2, l0 % 2)]
        out[i, :h] = y8[t0 : t0 + h, l0 : l0 + w]
        out[i, h : h + q] = u[t0 // 2 : t0 // 2 + h // 2, l0 // 2 : l0 // 2 + w // 2].reshape(q, w)
        out[i, h + q :] = v[t0 // 2 : t0 // 2 + h // 2, l0 // 2 : l0 // 2 + w // 2].reshape(q, w)
    ev = int(round(sample.event_time_s * sample.fps))
    if 0 <= ev < len(out):
        out[ev] = pack_yuv420p(
            np.full((h, w), 235, np.uint8),
            np.full((h // 2, w // 2), 128, np.uint8),
            np.full((h // 2, w // 2), 128, np.uint8),
        )
    return out


# --------------------------------------------------------------------------------------------
# audio


def render_audio(sample: EgoSample, sample_rate: int, channels: int) -> np.ndarray:
    """``[C, N] float32``: room tone, a thud at every foot strike, the sync click."""
    rng = _rng(sample, 56)
    n = int(round(sample.duration * sample_rate))
    x = (0.004 * rng.standard_normal(n)).astype(np.float32)
    x = np.convolve(x, np.ones(8, np.float32) / 8, mode="same")  # darker room tone
    m = int(0.08 * sample_rate)
    j = np.arange(m) / sample_rate
    thud = np.sin(2 * math.pi * 70 * j) * np.exp(-j / 0.02) + 0.3 * rng.standard_normal(m) * np.exp(-j / 0.004)
    thud = (0.25 * thud).astype(np.float32)
    for ts in sample.motion.step_times(sample.duration):
        k = int(round(ts * sample_rate))
        e = min(k + m, n)
        x[k:e] += thud[: e - k]
    x = x + click(n, sample_rate, sample.event_time_s)
    out = np.stack([x * (1.0 if c == 0 else 0.92) for c in range(channels)])
    return np.clip(out, -1, 1).astype(np.float32)


# --------------------------------------------------------------------------------------------
# IMU


def imu_times_ms(sample: EgoSample, rng: np.random.Generator, period_ms: float, jitter_ms: float) -> np.ndarray:
    n = int(sample.duration * 1000.0 / period_ms) + 1
    steps = period_ms + np.clip(rng.normal(0, jitter_ms / 2, n), -jitter_ms, jitter_ms)
    t = np.concatenate([[0.0], np.cumsum(steps[:-1])])
    return t[t <= sample.duration * 1000.0]


def imu_signals(sample: EgoSample, t_s: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``[N, 6]`` (gyro xyz rad/s, accl xyz m/s^2) at times ``t_s`` (seconds from the video start)."""
    m = sample.motion
    p = m.pitch(t_s)
    yr = m.yaw_rate(t_s)
    gyro = np.stack([m.pitch_rate(t_s), yr * np.sin(p), yr * np.cos(p)], axis=1)
    f = G + m.bob_accel(t_s)
    accl = np.stack([np.zeros_like(t_s), f * np.sin(p), f * np.cos(p)], axis=1)
    # a tap on the camera at the sync event: a sharp, mostly sideways jolt lasting ~15 ms
    dt = t_s - sample.event_time_s
    tap = np.where((dt >= -0.0025) & (dt < 0.015), np.exp(-np.clip(dt, 0, None) / 0.005), 0.0)
    accl = accl + tap[:, None] * np.array([30.0, -8.0, 12.0])
    gyro = gyro + tap[:, None] * np.array([0.0, 0.0, 0.4])
    bias = rng.normal(0, 0.002, 3)
    gyro = gyro + bias + rng.normal(0, 0.004, gyro.shape)
    accl = accl + rng.normal(0, 0.04, accl.shape)
    return np.concatenate([gyro, accl], axis=1)


def imu_csv(sample: EgoSample, period_ms: float = 5.0, jitter_ms: float = 0.3) -> str:
    rng = _rng(sample, 57)
    t_ms = imu_times_ms(sample, rng, period_ms, jitter_ms)
    sig = imu_signals(sample, t_ms / 1000.0, rng)
    rows = []
    for tm, s in zip(t_ms, sig):
        rows.append(["0", f"{tm + sample.component_offset_ms:.3f}", f"{tm:.3f}", *(f"{v:.6f}" for v in s)])
    n = len(rows)
    # warts: NULL canonical timestamps, swapped neighbours, one duplicated row
    # (keep the rows around the sync event clean so the spike stays easy to find)
    ev = int(np.searchsorted(t_ms, sample.event_time_s * 1000.0))
    keep_clear = set(range(ev - 10, ev + 10))
    pool = np.array([i for i in range(5, n - 5) if i not in keep_clear])
    picks = rng.choice(pool, size=min(9, len(pool)), replace=False)
    for i in picks[:4]:
        rows[i][2] = ""
    for i in sorted(picks[4:7]):
        rows[i], rows[i + 1] = rows[i + 1], rows[i]
    dup = int(picks[7])
    rows.insert(dup + 1, list(rows[dup]))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(IMU_HEADER)
    w.writerows(rows)
    return buf.getvalue()


# --------------------------------------------------------------------------------------------
# narrations


def narrations(sample: EgoSample, rng: np.random.Generator) -> list[dict]:
    """A few narrations at times >= 2.5 s from both ends, naming what is in view at that time."""
    lo, hi = 2.5, sample.duration - 2.5
    if hi <= lo:
        return []
    k = int(rng.integers(3, 6))
    times = np.sort(rng.uniform(lo, hi, k))
    half_fov = math.atan(sample.width / 2 / sample.fx)
    out = []
    for t in times:
        t = float(np.round(t, 3))
        yaw = float(sample.motion.yaw(t))
        rate = float(sample.motion.yaw_rate(t))
        best = None
        for az, obj in sample.object_azimuths():
            d = abs((az - yaw + math.pi) % (2 * math.pi) - math.pi)
            if d < 0.6 * half_fov and (best is None or d < best[0]):
                best = (d, obj)
        if best is not None:
            text = f"#C C looks at the {best[1].color} {best[1].kind}"
        elif abs(rate) > 0.3:
            text = f"#C C turns {'left' if rate > 0 else 'right'}"
        else:
            text = "#C C walks around the room"
        out.append({"timestamp_sec": t, "timestamp_frame": int(round(t * sample.fps)), "narration_text": text})
    return out


# --------------------------------------------------------------------------------------------


def write(root: Path, n: int, seed: int = 0, **options) -> list[str]:
    o = {**DEFAULTS, **options}
    unknown = set(options) - set(DEFAULTS)
    if unknown:
        raise TypeError(f"unknown ego4d options {sorted(unknown)}; valid: {sorted(DEFAULTS)}")
    files: list[str] = []
    narr: dict[str, dict] = {}
    events = ["id,event_time_s"]
    (root / "v2" / "imu").mkdir(parents=True, exist_ok=True)
    (root / "v2" / "annotations").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        s = make_sample(seed, i, **options)
        frames = render_frames_yuv420p(s)
        audio = render_audio(s, int(o["sample_rate"]), int(o["channels"])) if o["audio"] else None
        vrel = f"v2/full_scale/{s.uid}.mp4"
        write_mp4(
            root / vrel,
            frames,
            s.fps,
            audio,
            int(o["sample_rate"]),
            gop_size=int(o["gop_size"]),
            start_offset_s=float(o["start_offset_s"]),
            frame_format="yuv420p",
        )
        irel = f"v2/imu/{s.uid}.csv"
        (root / irel).write_text(imu_csv(s, float(o["imu_period_ms"]), float(o["imu_jitter_ms"])))
        rng = _rng(s, 58)
        narr[s.uid] = {"narration_pass_1": {"narrations": narrations(s, rng)}}
        events.append(f"{s.uid},{s.event_time_s:.6f}")
        files += [vrel, irel]
    (root / "v2/annotations/narration.json").write_text(json.dumps(narr, indent=1) + "\n")
    (root / "events.csv").write_text("\n".join(events) + "\n")
    return files + ["v2/annotations/narration.json", "events.csv"]
