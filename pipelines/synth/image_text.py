"""Image + caption layout: renders of procedural rooms with captions written from the same scene.

Tree (relative to the root)::

    images/<12-digit id>.jpg    RGB, baseline JPEG q95; sizes vary (landscape, portrait, square, wide)
    captions.parquet            columns (path, caption); path relative to the root ("images/...jpg")

A caption names every object that is actually visible in its image (colour + shape), in left-to-right
order as drawn, and the floor, e.g. "a red sphere to the left of a blue cube on a wooden floor".
Visibility is measured on the rendered label map, so an object hidden behind another is not named.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from pipelines.synth import scene as sc
from pipelines.synth.media import save_jpeg

SIZES = ((480, 360), (360, 480), (400, 400), (512, 288))  # (W, H)
JPEG_QUALITY = 95
MIN_VISIBLE_FRACTION = 0.004


@dataclass(frozen=True)
class CaptionSample:
    seed: int
    index: int
    image_id: str
    room: sc.Room
    camera: sc.Camera

    @property
    def path(self) -> str:
        return f"images/{self.image_id}.jpg"


@dataclass(frozen=True)
class Seen:
    """An object as it appears in the image."""

    obj: sc.RoomObject
    pixels: int
    u: float  # centroid column
    depth_m: float  # median z-depth over its pixels


def make_sample(seed: int, index: int) -> CaptionSample:
    rng = sc.sample_rng(seed, index, sc.SEED_SALT["image-text"])
    width, height = SIZES[int(rng.integers(len(SIZES)))]
    hfov = math.radians(float(rng.uniform(55, 70)))
    f = (max(width, height) / 2) / math.tan(hfov / 2)
    camera = sc.Camera(
        width,
        height,
        f,
        f,
        width / 2,
        height / 2,
        (0.0, 0.0, float(rng.uniform(1.0, 1.5))),
        math.radians(float(rng.uniform(-6, 6))),
        -math.radians(float(rng.uniform(10, 25))),
        math.radians(float(rng.uniform(-1.5, 1.5))),
    )
    depth = float(rng.uniform(4.0, 7.0))
    x_range = (-float(rng.uniform(2.0, 3.5)), float(rng.uniform(2.0, 3.5)))
    placements = sc.place_in_view(rng, int(rng.integers(1, 4)), camera, depth - 0.8, x_range, min_gap=1.0)
    room = sc.make_room(rng, placements, x_range, (-1.0, depth), float(rng.uniform(2.5, 3.0)))
    return CaptionSample(seed, index, f"{index + 1:012d}", room, camera)


def render_sample(sample: CaptionSample) -> tuple[np.ndarray, sc.Hit]:
    """``([H, W, 3] uint8 RGB, the hit record with per-pixel thing labels and depth)``."""
    rng = sc.sample_rng(sample.seed, sample.index, 100 * sc.SEED_SALT["image-text"] + 1)
    hit = sc.render(sample.room.scene, sample.camera)
    return sc.to_uint8(sc.shade(sample.room.scene, hit), rng, noise=0.01), hit


def visible_objects(sample: CaptionSample, hit: sc.Hit) -> list[Seen]:
    """Objects covering at least ``MIN_VISIBLE_FRACTION`` of the image, left to right."""
    first = len(sample.room.scene.things) - len(sample.room.objects)
    min_pixels = max(150, int(MIN_VISIBLE_FRACTION * hit.index.size))
    seen = []
    for k, obj in enumerate(sample.room.objects):
        m = hit.index == first + k
        count = int(m.sum())
        if count < min_pixels:
            continue
        cols = np.nonzero(m)[1]
        seen.append(Seen(obj, count, float(cols.mean()), float(np.median(hit.t[m]))))
    return sorted(seen, key=lambda s: s.u)


def _a(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def caption(sample: CaptionSample, seen: list[Seen]) -> str:
    rng = sc.sample_rng(sample.seed, sample.index, 100 * sc.SEED_SALT["image-text"] + 2)
    room = sample.room
    floor = f"{room.floor} floor"
    names = [f"{s.obj.color} {s.obj.kind}" for s in seen]
    if not seen:
        return f"an empty room with {_a(floor)} and {room.wall} walls"
    if len(seen) == 1:
        options = [
            f"{_a(names[0])} on {_a(floor)}",
            f"{_a(names[0])} in front of {_a(room.wall)} wall",
            f"a photo of {_a(names[0])} standing on {_a(floor)} in a room with {room.wall} walls",
        ]
    elif len(seen) == 2:
        left, right = names
        options = [
            f"{_a(left)} to the left of {_a(right)} on {_a(floor)}",
            f"{_a(right)} to the right of {_a(left)} on {_a(floor)}",
            f"{_a(left)} and {_a(right)}, side by side on {_a(floor)}",
        ]
        near, far = sorted(seen, key=lambda s: s.depth_m)
        if near.depth_m < 0.7 * far.depth_m:
            options.append(
                f"{_a(near.obj.color + ' ' + near.obj.kind)} in front of {_a(far.obj.color + ' ' + far.obj.kind)}"
                f" on {_a(floor)}"
            )
    else:
        listed = ", ".join(_a(n) for n in names[:-1]) + f" and {_a(names[-1])}"
        options = [
            f"{listed} from left to right on {_a(floor)}",
            f"{listed} on {_a(floor)} in a room with {room.wall} walls",
        ]
    return options[int(rng.integers(len(options)))]


def write(root: Path, n: int, seed: int = 0, jpeg_quality: int = JPEG_QUALITY) -> list[str]:
    (root / "images").mkdir(parents=True, exist_ok=True)
    paths, captions = [], []
    for i in range(n):
        sample = make_sample(seed, i)
        rgb, hit = render_sample(sample)
        save_jpeg(root / sample.path, rgb, jpeg_quality)
        paths.append(sample.path)
        captions.append(caption(sample, visible_objects(sample, hit)))
    pl.DataFrame({"path": paths, "caption": captions}, schema={"path": pl.Utf8, "caption": pl.Utf8}).write_parquet(
        root / "captions.parquet", statistics=False
    )
    return paths + ["captions.parquet"]
