"""AudioSet-style layout: 10 s clips whose sound is caused by what the picture shows.

Tree (relative to the root)::

    videos/<YTID>.mp4            H.264 320x240 @ 25 fps + AAC 44.1 kHz (stereo by default), 10 s
    labels.csv                   AudioSet segment CSV (3 ``#`` lines, then YTID, start, end, "labels")
    class_labels_indices.csv     index,mid,display_name of the classes used here (real AudioSet MIDs;
                                 the indices are this subset's, 0..K-1)
    events.csv                   id,event_time_s: the sync event of each clip
    sound_events.csv             id,label,time_s: every visual event that makes a sound

Each clip shows one of four scenes, and its soundtrack is generated from the same event times:

- ``ball``: a ball bouncing along the floor -> a thud at every floor contact;
- ``siren``: a light bar flashing red/blue -> a two-tone siren, high tone while red, low while blue
  (``sound_events`` lists every tone switch);
- ``bird``: a bird flapping across the sky -> a chirp at the top of every wing beat;
- ``clock``: a pendulum clock -> a tick (alternating tick/tock pitch) at each end of the swing.

The stereo pan follows the sounding object's horizontal position. Every clip also carries one sync
event at a frame-aligned time at least 2 s from both ends: one full white frame and a click (a
2 ms impulse, the loudest sample of the track) at ``event_time_s``. All times in ``events.csv`` and
``sound_events.csv`` are seconds from the first frame (the stream start; with ``start_offset_s`` the
pts are that much later).

Options: ``duration`` (10.0), ``fps`` (25), ``width``/``height`` (320x240), ``audio`` (True),
``sample_rate`` (44100), ``channels`` (2), ``gop_size`` (50), ``start_offset_s`` (0.0),
``classes`` (a subset of ``CLASSES``).

Why one module of this size: one layout's generator, from scene to muxed media and metadata
files; nothing in it serves another layout.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipelines.synth import scene as sc
from pipelines.synth.media import click, write_mp4

# (mid, display_name) per class; the first label is the class's main one.
CLASSES: dict[str, tuple[tuple[str, str], ...]] = {
    "ball": (("/m/07pqn27", "Bouncing"), ("/m/07qnq_y", "Thump, thud")),
    "siren": (("/m/03kmc9", "Siren"), ("/m/03j1ly", "Emergency vehicle"), ("/m/04qvtq", "Police car (siren)")),
    "bird": (("/m/015p6", "Bird"), ("/m/07pggtn", "Chirp, tweet"), ("/m/05_wcq", "Bird flight, flapping wings")),
    "clock": (("/m/01x3z", "Clock"), ("/m/07qjznl", "Tick-tock"), ("/m/07qjznt", "Tick")),
}
YTID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
DEFAULTS = dict(
    duration=10.0,
    fps=25,
    width=320,
    height=240,
    audio=True,
    sample_rate=44100,
    channels=2,
    gop_size=50,
    start_offset_s=0.0,
    classes=tuple(CLASSES),
)
CSV_CREATED = "Sun Mar  5 10:54:25 2017"


def label_table() -> list[tuple[int, str, str]]:
    """``(index, mid, display_name)`` of every label used, in a fixed order."""
    seen: dict[str, str] = {}
    for labels in CLASSES.values():
        for mid, name in labels:
            seen.setdefault(mid, name)
    return [(i, mid, name) for i, (mid, name) in enumerate(seen.items())]


@dataclass(frozen=True)
class ClipSample:
    seed: int
    index: int
    ytid: str
    kind: str  # a CLASSES key
    start_seconds: float
    duration: float
    fps: int
    width: int
    height: int
    event_time_s: float
    params: dict  # per-kind motion parameters (drawn from the sample's generator)

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(mid for mid, _ in CLASSES[self.kind])

    @property
    def n_frames(self) -> int:
        return int(round(self.duration * self.fps))

    # ---- the shared event timeline -------------------------------------------------------

    def sound_events(self) -> list[tuple[str, float]]:
        """``(label, time_s)`` of every visual event that makes a sound, sorted by time."""
        p, d = self.params, self.duration
        if self.kind == "ball":
            k = np.arange(0, int(d / p["period"]) + 2)
            ts = p["t0"] + k * p["period"]
            return [("thud", float(t)) for t in ts if 0 <= t < d]
        if self.kind == "siren":
            k = np.arange(0, int(d / p["half"]) + 2)
            ts = p["t0"] + k * p["half"]
            return [("high" if self._siren_red(t + 1e-6) else "low", float(t)) for t in ts if 0 <= t < d]
        if self.kind == "bird":
            # wing at its highest: sin(2 pi f t + phase) = 1
            f, ph = p["flap_hz"], p["phase"]
            k0 = math.ceil((ph - math.pi / 2) / (2 * math.pi))
            ts = [(2 * math.pi * k + math.pi / 2 - ph) / (2 * math.pi * f) for k in range(k0, k0 + int(d * f) + 3)]
            return [("chirp", float(t)) for t in ts if 0 <= t < d]
        if self.kind == "clock":
            # pendulum angle A sin(pi t / T + phase): ends of the swing at cos = 0
            T, ph = p["half"], p["phase"]
            k0 = math.ceil((ph - math.pi / 2) / math.pi)
            out = []
            for k in range(k0, k0 + int(d / T) + 3):
                t = (math.pi * k + math.pi / 2 - ph) * T / math.pi
                if 0 <= t < d:
                    out.append(("tick" if k % 2 == 0 else "tock", float(t)))
            return out
        raise ValueError(self.kind)

    def _siren_red(self, t):
        p = self.params
        return (np.floor((np.asarray(t) - p["t0"]) / p["half"]).astype(np.int64) % 2) == 0

    def position(self, t) -> tuple[np.ndarray, np.ndarray]:
        """Pixel position (x, y) of the sounding object at times ``t``."""
        t = np.asarray(t, np.float64)
        p, w = self.params, self.width
        if self.kind == "ball":
            phi = np.mod((t - p["t0"]) / p["period"], 1.0)
            height = p["jump"] * 4 * phi * (1 - phi)
            y = p["floor"] - p["radius"] - height
            span = w - 2 * p["radius"]
            u = np.mod(p["x0"] + p["vx"] * t, 2 * span)
            x = p["radius"] + np.where(u < span, u, 2 * span - u)
            return x, y
        if self.kind == "siren":
            return np.full_like(t, p["x"]), np.full_like(t, p["y"])
        if self.kind == "bird":
            x = p["x0"] + p["vx"] * t
            x = np.mod(x + 40, w + 80) - 40
            y = p["y0"] + p["bob"] * np.sin(2 * math.pi * 0.3 * t)
            return x, y
        if self.kind == "clock":
            ang = self.pendulum_angle(t)
            return p["x"] + p["length"] * np.sin(ang), p["y"] + p["length"] * np.cos(ang)
        raise ValueError(self.kind)

    def pendulum_angle(self, t):
        p = self.params
        return p["amp"] * np.sin(math.pi * np.asarray(t, np.float64) / p["half"] + p["phase"])

    def wing(self, t):
        p = self.params
        return np.sin(2 * math.pi * p["flap_hz"] * np.asarray(t, np.float64) + p["phase"])


def _ytid(rng: np.random.Generator) -> str:
    return "".join(YTID_ALPHABET[int(k)] for k in rng.integers(0, len(YTID_ALPHABET), 11))


def make_sample(seed: int, index: int, **options) -> ClipSample:
    o = {**DEFAULTS, **options}
    rng = sc.sample_rng(seed, index, sc.SEED_SALT["audioset"])
    ytid = _ytid(rng)
    classes = tuple(o["classes"])
    kind = classes[int(rng.integers(len(classes)))]
    w, h, d, fps = int(o["width"]), int(o["height"]), float(o["duration"]), int(o["fps"])
    if kind == "ball":
        r = float(rng.uniform(10, 18)) * h / 240
        params = dict(
            radius=r,
            floor=0.85 * h,
            jump=float(rng.uniform(0.35, 0.6)) * h,
            period=float(rng.uniform(0.7, 1.3)),
            t0=float(rng.uniform(0.2, 0.7)),
            x0=float(rng.uniform(0, w - 2 * r)),
            vx=float(rng.uniform(20, 60)) * w / 320,
            color=sc.CHROMATIC[int(rng.integers(len(sc.CHROMATIC)))],
        )
    elif kind == "siren":
        params = dict(
            x=float(rng.uniform(0.3, 0.7)) * w,
            y=float(rng.uniform(0.45, 0.6)) * h,
            half=float(rng.uniform(0.35, 0.65)),
            t0=float(rng.uniform(0.1, 0.5)),
            f_hi=float(rng.uniform(900, 1000)),
            f_lo=float(rng.uniform(700, 800)),
        )
    elif kind == "bird":
        params = dict(
            x0=float(rng.uniform(0, w)),
            vx=float(rng.choice([-1, 1]) * rng.uniform(15, 35)) * w / 320,
            y0=float(rng.uniform(0.25, 0.45)) * h,
            bob=float(rng.uniform(4, 12)) * h / 240,
            flap_hz=float(rng.uniform(1.4, 2.4)),
            phase=float(rng.uniform(0, 2 * math.pi)),
            size=float(rng.uniform(14, 22)) * h / 240,
        )
    else:  # clock
        params = dict(
            x=float(rng.uniform(0.35, 0.65)) * w,
            y=0.22 * h,
            length=0.5 * h,
            amp=float(rng.uniform(0.25, 0.4)),
            half=float(rng.uniform(0.5, 0.9)),
            phase=float(rng.uniform(0, 2 * math.pi)),
        )
    params["sky"] = tuple(float(v) for v in rng.uniform((0.1, 0.15, 0.25), (0.45, 0.55, 0.8)))
    params["ground"] = tuple(float(v) for v in rng.uniform((0.2, 0.2, 0.15), (0.5, 0.45, 0.35)))
    lo, hi = int(math.ceil(2.0 * fps)), int(math.floor((d - 2.0) * fps))
    event_frame = int(rng.integers(lo, hi + 1)) if hi >= lo else int(d * fps) // 2
    start = float(rng.integers(0, 30) * 10)
    return ClipSample(seed, index, ytid, kind, start, d, fps, w, h, event_frame / fps, params)


# --------------------------------------------------------------------------------------------
# drawing (anti-aliased masks on the object's bounding box only)


def _coverage(dist_inside: np.ndarray) -> np.ndarray:
    """Signed distance (px, positive inside) -> pixel coverage in [0, 1]."""
    return np.clip(dist_inside + 0.5, 0.0, 1.0)


def _paint(img: np.ndarray, box, cover: np.ndarray, color) -> None:
    y0, y1, x0, x1 = box
    sub = img[y0:y1, x0:x1]
    sub += cover[..., None] * (np.asarray(color, np.float32) - sub)


def _box(cx, cy, r, h, w):
    return (max(int(cy - r) - 2, 0), min(int(cy + r) + 3, h), max(int(cx - r) - 2, 0), min(int(cx + r) + 3, w))


def _grid(box):
    y0, y1, x0, x1 = box
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    return xx + 0.5, yy + 0.5


def draw_disc(img, cx, cy, r, color) -> None:
    h, w = img.shape[:2]
    box = _box(cx, cy, r, h, w)
    if box[1] <= box[0] or box[3] <= box[2]:
        return
    xx, yy = _grid(box)
    _paint(img, box, _coverage(r - np.hypot(xx - cx, yy - cy)), color)


def draw_ellipse(img, cx, cy, rx, ry, color) -> None:
    h, w = img.shape[:2]
    box = _box(cx, cy, max(rx, ry), h, w)
    if box[1] <= box[0] or box[3] <= box[2]:
        return
    xx, yy = _grid(box)
    q = np.hypot((xx - cx) / rx, (yy - cy) / ry)
    _paint(img, box, _coverage((1 - q) * min(rx, ry)), color)


def draw_segment(img, x0, y0, x1, y1, half_width, color) -> None:
    h, w = img.shape[:2]
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    r = math.hypot(x1 - x0, y1 - y0) / 2 + half_width
    box = _box(cx, cy, r, h, w)
    if box[1] <= box[0] or box[3] <= box[2]:
        return
    xx, yy = _grid(box)
    dx, dy = x1 - x0, y1 - y0
    L2 = max(dx * dx + dy * dy, 1e-9)
    s = np.clip(((xx - x0) * dx + (yy - y0) * dy) / L2, 0, 1)
    dist = np.hypot(xx - (x0 + s * dx), yy - (y0 + s * dy))
    _paint(img, box, _coverage(half_width - dist), color)


def background(sample: ClipSample) -> np.ndarray:
    """``[H, W, 3] float32``: sky gradient over textured ground (static)."""
    h, w = sample.height, sample.width
    p = sample.params
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    horizon = 0.85 * h if sample.kind == "ball" else 0.75 * h
    sky = np.asarray(p["sky"], np.float32) * (0.7 + 0.5 * (yy / h))[..., None]
    grain = sc.value_noise(xx / 6.0, yy / 3.0, seed=(sample.seed * 7919 + sample.index + 17) % 1_000_003)[..., None]
    ground = np.asarray(p["ground"], np.float32) * (0.8 + 0.4 * grain)
    img = np.where((yy < horizon)[..., None], sky, ground).astype(np.float32)
    if sample.kind == "clock":  # the clock case
        x, y = p["x"], p["y"]
        draw_ellipse(img, x, y - 0.08 * h, 0.12 * h, 0.12 * h, (0.85, 0.82, 0.7))
        draw_ellipse(img, x, y - 0.08 * h, 0.105 * h, 0.105 * h, (0.97, 0.96, 0.92))
        draw_segment(img, x, y - 0.08 * h, x, y - 0.16 * h, 1.5, (0.1, 0.1, 0.1))
        draw_segment(img, x, y - 0.08 * h, x + 0.05 * h, y - 0.08 * h, 1.5, (0.1, 0.1, 0.1))
    if sample.kind == "siren":  # the car under the light bar
        x, y = p["x"], p["y"]
        img[int(y + 8) : int(y + 0.18 * h), max(int(x - 0.22 * w), 0) : int(x + 0.22 * w)] = (0.85, 0.85, 0.88)
        img[int(y + 0.18 * h) : int(y + 0.26 * h), max(int(x - 0.28 * w), 0) : int(x + 0.28 * w)] = (0.15, 0.15, 0.2)
        draw_disc(img, x - 0.17 * w, y + 0.27 * h, 0.06 * h, (0.05, 0.05, 0.05))
        draw_disc(img, x + 0.17 * w, y + 0.27 * h, 0.06 * h, (0.05, 0.05, 0.05))
    return img


def render_frames(sample: ClipSample) -> np.ndarray:
    """``[T, H, W, 3] uint8``; frame ``i`` shows time ``i / fps``; the sync frame is all white."""
    bg = background(sample)
    p = sample.params
    t_all = np.arange(sample.n_frames) / sample.fps
    xs, ys = sample.position(t_all)
    frames = np.empty((sample.n_frames, sample.height, sample.width, 3), np.uint8)
    h = sample.height
    for i, t in enumerate(t_all):
        img = bg.copy()
        x, y = float(xs[i]), float(ys[i])
        if sample.kind == "ball":
            floor = p["floor"]
            shadow_r = p["radius"] * (1.0 - 0.5 * (floor - p["radius"] - y) / p["jump"])
            draw_ellipse(img, x, floor, shadow_r, 0.25 * shadow_r, (0.1, 0.1, 0.1))
            draw_disc(img, x, y, p["radius"], sc.PALETTE[p["color"]])
            draw_disc(
                img,
                x - 0.35 * p["radius"],
                y - 0.35 * p["radius"],
                0.3 * p["radius"],
                tuple(min(1.0, c + 0.35) for c in sc.PALETTE[p["color"]]),
            )
        elif sample.kind == "siren":
            red = bool(sample._siren_red(t))
            on, off = ((1.0, 0.1, 0.05), (0.1, 0.12, 0.35)) if red else ((0.25, 0.05, 0.05), (0.1, 0.3, 1.0))
            # glow around the lit lamp only
            draw_ellipse(img, x - 12 if red else x + 12, y, 22, 18, tuple(0.55 * c for c in (on if red else off)))
            draw_ellipse(img, x - 12, y, 11, 7, on)
            draw_ellipse(img, x + 12, y, 11, 7, off)
        elif sample.kind == "bird":
            s = p["size"]
            wing = float(sample.wing(t))
            tip_y = y - wing * 1.2 * s
            dark = (0.08, 0.08, 0.1)
            draw_segment(img, x, y, x - 1.4 * s, tip_y, 0.18 * s, dark)
            draw_segment(img, x, y, x + 1.4 * s, tip_y, 0.18 * s, dark)
            draw_ellipse(img, x, y, 0.7 * s, 0.3 * s, dark)
            draw_disc(img, x + 0.65 * s * np.sign(p["vx"]), y - 0.15 * s, 0.22 * s, dark)
        else:  # clock pendulum
            draw_segment(img, p["x"], p["y"], x, y, 1.5, (0.55, 0.45, 0.2))
            draw_disc(img, x, y, 0.06 * h, (0.8, 0.65, 0.2))
        frames[i] = (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
    ev = int(round(sample.event_time_s * sample.fps))
    if 0 <= ev < len(frames):
        frames[ev] = 255
    return frames


# --------------------------------------------------------------------------------------------
# sound


def render_audio(sample: ClipSample, sample_rate: int = 44100, channels: int = 2) -> np.ndarray:
    """``[C, N] float32`` soundtrack from the same event timeline the frames are drawn from."""
    rng = sc.sample_rng(sample.seed, sample.index, 100 * sc.SEED_SALT["audioset"] + 1)
    sr = sample_rate
    n = int(round(sample.duration * sr))
    t = np.arange(n) / sr
    mono = (0.003 * rng.standard_normal(n)).astype(np.float32)
    p = sample.params
    events = sample.sound_events()
    if sample.kind == "siren":
        red = sample._siren_red(t)
        freq = np.where(red, p["f_hi"], p["f_lo"])
        phase = 2 * math.pi * np.cumsum(freq) / sr
        tone = np.sin(phase) + 0.3 * np.sin(2 * phase) + 0.15 * np.sin(3 * phase)
        mono += (0.22 * tone).astype(np.float32)
    else:
        for label, te in events:
            k = int(round(te * sr))
            if sample.kind == "ball":
                m = int(0.09 * sr)
                j = np.arange(m) / sr
                snd = 0.35 * (
                    np.sin(2 * math.pi * 95 * j) * np.exp(-j / 0.025)
                    + 0.5 * rng.standard_normal(m) * np.exp(-j / 0.005)
                )
            elif sample.kind == "bird":
                m = int(0.07 * sr)
                j = np.arange(m) / sr
                f = 3200 + 2500 * j / j[-1]
                snd = 0.3 * np.sin(2 * math.pi * np.cumsum(f) / sr) * np.sin(math.pi * j / j[-1]) ** 2
            else:  # clock
                m = int(0.03 * sr)
                j = np.arange(m) / sr
                f0 = 2000 if label == "tick" else 1500
                snd = 0.3 * np.sin(2 * math.pi * f0 * j) * np.exp(-j / 0.004)
            # scene sounds peak at 0.4, so the sync click (0.95) stays the loudest sample
            snd = 0.4 * snd / max(float(np.abs(snd).max()), 1e-9)
            e = min(k + m, n)
            if k < n:
                mono[k:e] += snd[: e - k].astype(np.float32)
    clk = click(n, sr, sample.event_time_s, amplitude=0.95)
    if channels == 1:
        out = (mono + clk)[None]
    else:
        # the scene's sound follows its object (constant-power pan); the sync click is centred
        x, _ = sample.position(t)
        pan = np.clip(x / sample.width, 0, 1) * (math.pi / 2)
        out = np.stack([mono * np.cos(pan) * 1.2 + clk, mono * np.sin(pan) * 1.2 + clk])
    return np.clip(out, -1, 1).astype(np.float32)


# --------------------------------------------------------------------------------------------


def labels_csv(samples: list[ClipSample]) -> str:
    all_labels = {m for s in samples for m in s.labels}
    lines = [
        f"# Segments csv created {CSV_CREATED}",
        f"# num_ytids={len(samples)}, num_segs={len(samples)}, num_unique_labels={len(all_labels)}, "
        f"num_positive_labels={sum(len(s.labels) for s in samples)}",
        "# YTID, start_seconds, end_seconds, positive_labels",
    ]
    for s in samples:
        lines.append(f'{s.ytid}, {s.start_seconds:.3f}, {s.start_seconds + s.duration:.3f}, "{",".join(s.labels)}"')
    return "\n".join(lines) + "\n"


def class_labels_csv() -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["index", "mid", "display_name"])
    w.writerows(label_table())
    return buf.getvalue()


def write(root: Path, n: int, seed: int = 0, **options) -> list[str]:
    unknown = set(options) - set(DEFAULTS)
    if unknown:
        raise TypeError(f"unknown audioset options {sorted(unknown)}; valid: {sorted(DEFAULTS)}")
    o = {**DEFAULTS, **options}
    if int(o["channels"]) not in (1, 2):
        raise ValueError("channels must be 1 or 2")
    bad = set(o["classes"]) - set(CLASSES)
    if bad:
        raise ValueError(f"unknown audioset classes {sorted(bad)}; valid: {list(CLASSES)}")
    files: list[str] = []
    samples: list[ClipSample] = []
    used: set[str] = set()
    for i in range(n):
        s = make_sample(seed, i, **options)
        if s.ytid in used:  # astronomically unlikely; keep ids unique anyway
            s = ClipSample(**{**s.__dict__, "ytid": s.ytid[:-3] + f"{i % 1000:03d}"})
        used.add(s.ytid)
        samples.append(s)
        frames = render_frames(s)
        audio = render_audio(s, int(o["sample_rate"]), int(o["channels"])) if o["audio"] else None
        rel = f"videos/{s.ytid}.mp4"
        write_mp4(
            root / rel,
            frames,
            s.fps,
            audio,
            int(o["sample_rate"]),
            gop_size=int(o["gop_size"]),
            start_offset_s=float(o["start_offset_s"]),
        )
        files.append(rel)
    root.mkdir(parents=True, exist_ok=True)
    (root / "labels.csv").write_text(labels_csv(samples))
    (root / "class_labels_indices.csv").write_text(class_labels_csv())
    (root / "events.csv").write_text("id,event_time_s\n" + "".join(f"{s.ytid},{s.event_time_s:.6f}\n" for s in samples))
    ev_lines = ["id,label,time_s"]
    for s in samples:
        ev_lines += [f"{s.ytid},{label},{te:.6f}" for label, te in s.sound_events()]
    (root / "sound_events.csv").write_text("\n".join(ev_lines) + "\n")
    return files + ["labels.csv", "class_labels_indices.csv", "events.csv", "sound_events.csv"]
