"""LLVIP layout: registered visible / infrared pairs of one night street scene.

Tree (relative to the root)::

    visible/{train,test}/<name>.jpg    1280x1024 RGB, a dark street lit by street lamps
    infrared/{train,test}/<name>.jpg   1280x1024, 8-bit grey stored as 3 identical channels

Names are 6 digits as in the released dataset: train 010001, 010002, ... and test 190001, ...
(about 78 % train). Both images are rendered from one scene through one camera (an elevated
surveillance view looking down on a road, a sidewalk, pedestrians, lamps, buildings, sometimes a
parked car), so they are registered pixel to pixel. The visible image is the lamps' light on the
scene; the infrared image is each surface's apparent temperature (people warm, heads warmest, the
road keeping some of the day's heat, a parked car's bonnet warm, foliage and sky cold), slightly
blurred like thermal optics. Scenes are rendered at ``1 / render_scale`` of the size and upscaled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from pipelines.synth import scene as sc
from pipelines.synth.media import save_jpeg

WIDTH, HEIGHT = 1280, 1024
JPEG_QUALITY = 95
TRAIN_FRACTION = 0.78
CLOTHES = (
    (0.10, 0.10, 0.12),
    (0.18, 0.20, 0.30),
    (0.35, 0.33, 0.30),
    (0.45, 0.08, 0.08),
    (0.70, 0.68, 0.62),
    (0.12, 0.25, 0.15),
    (0.25, 0.18, 0.12),
)
SKIN = (0.72, 0.55, 0.45)


@dataclass(frozen=True)
class LlvipSample:
    seed: int
    index: int
    split: str
    scene: sc.Scene
    camera: sc.Camera  # at render resolution
    render_scale: int
    n_people: int


@dataclass
class LlvipFrame:
    visible: np.ndarray  # [1024, 1280, 3] uint8
    infrared: np.ndarray  # [1024, 1280] uint8
    labels: np.ndarray  # [1024, 1280] int16 thing index (nearest-upscaled)
    person: np.ndarray  # [1024, 1280] bool, pixels showing a pedestrian


def _person(rng: np.random.Generator, x: float, y: float, group: int) -> list[sc.Thing]:
    s = float(rng.uniform(0.9, 1.1))  # body scale
    top = sc.Material(CLOTHES[int(rng.integers(len(CLOTHES)))], temperature=float(rng.uniform(0.78, 0.86)))
    legs = sc.Material(CLOTHES[int(rng.integers(len(CLOTHES)))], temperature=float(rng.uniform(0.72, 0.8)))
    skin = sc.Material(SKIN, temperature=float(rng.uniform(0.93, 1.0)))
    heading = float(rng.uniform(0, 2 * math.pi))
    stride = float(rng.uniform(-0.18, 0.18)) * s
    fx, fy = math.cos(heading), math.sin(heading)  # walking direction
    sx, sy = -fy, fx  # sideways
    things = []
    for side, step in ((-1, stride), (1, -stride)):
        lx = x + side * 0.09 * s * sx + step * fx
        ly = y + side * 0.09 * s * sy + step * fy
        things.append(sc.Thing(sc.Cylinder((lx, ly, 0.0), 0.075 * s, 0.88 * s), legs, "person", "person", group))
    things.append(
        sc.Thing(sc.Ellipsoid((x, y, 1.18 * s), (0.21 * s, 0.21 * s, 0.34 * s)), top, "person", "person", group)
    )
    for side in (-1, 1):
        ax, ay = x + side * 0.25 * s * sx, y + side * 0.25 * s * sy
        things.append(sc.Thing(sc.Cylinder((ax, ay, 0.82 * s), 0.055 * s, 0.6 * s), top, "person", "person", group))
    things.append(sc.Thing(sc.Sphere((x, y, 1.64 * s), 0.115 * s), skin, "person", "person", group))
    return things


def make_sample(seed: int, index: int, render_scale: int = 2) -> LlvipSample:
    rng = sc.sample_rng(seed, index, sc.SEED_SALT["llvip"])
    split = "train" if rng.random() < TRAIN_FRACTION else "test"
    w, h = WIDTH // render_scale, HEIGHT // render_scale
    f = (WIDTH / 2) / math.tan(math.radians(float(rng.uniform(24, 30)))) / render_scale
    cam_h = float(rng.uniform(4.0, 7.0))
    pitch = -math.radians(float(rng.uniform(18, 32)))
    yaw = math.radians(float(rng.uniform(-20, 20)))
    camera = sc.Camera(w, h, f, f, w / 2, h / 2, (0.0, 0.0, cam_h), yaw, pitch, 0.0)

    things: list[sc.Thing] = []
    ground = sc.Material((0.42, 0.40, 0.38), "grey", "tiles", temperature=0.33)
    things.append(sc.Thing(sc.Plane((0, 0, 1), 0.0), ground, "ground", "sidewalk"))
    # A road running away from the camera, slightly raised so it wins over the ground plane.
    road_x = float(rng.uniform(-6, 2))
    road = sc.Material((0.22, 0.22, 0.23), "", "stripes", temperature=float(rng.uniform(0.4, 0.46)))
    things.append(sc.Thing(sc.Box((road_x + 3.5, 60.0, -0.49), (7.0, 140.0, 1.0)), road, "road", "road"))
    # Buildings: a row at the far end and one on a side, with lit and dark windows.
    far = float(rng.uniform(28, 45))
    brick = sc.Material((0.45, 0.28, 0.22), "", "brick", temperature=0.3)
    concrete = sc.Material((0.5, 0.5, 0.48), "", "paint", temperature=0.28)
    buildings = [
        ((0.0, far + 6, 7.0), (80.0, 12.0, 14.0)),
        ((-22.0 if road_x > -2 else 20.0, far / 2, 5.0), (16.0, far, 10.0)),
    ]
    for k, (ctr, size) in enumerate(buildings):
        things.append(sc.Thing(sc.Box(ctr, size), brick if k == 0 else concrete, "building", "building"))
    for _ in range(int(rng.integers(6, 14))):
        wx = float(rng.uniform(-25, 25))
        wz = float(rng.choice([2.0, 5.0, 8.0, 11.0]))
        lit = rng.random() < 0.5
        mat = sc.Material(
            (1.0, 0.8, 0.45) if lit else (0.05, 0.06, 0.08),
            "",
            None,
            emissive=0.9 if lit else 0.0,
            temperature=0.42 if lit else 0.33,
        )
        things.append(sc.Thing(sc.Box((wx, far - 0.04, wz), (1.2, 0.1, 1.4)), mat, "window", "window"))
    # Street lamps along the road edge: a pole, an emissive head, and the light they cast.
    lights = []
    lamp_y = float(rng.uniform(6, 12))
    for _ in range(int(rng.integers(2, 4))):
        left = rng.random() < 0.5
        lx = road_x - 0.6 if left else road_x + 7.6
        arm = 1.3 if left else -1.3  # the head hangs over the road
        ly = lamp_y
        lamp_y += float(rng.uniform(9, 15))
        hgt = float(rng.uniform(5.0, 6.5))
        pole = sc.Material((0.3, 0.3, 0.32), "", None, temperature=0.27)
        head = sc.Material((1.0, 0.78, 0.45), "", None, emissive=1.6, temperature=0.7)
        things.append(sc.Thing(sc.Cylinder((lx, ly, 0.0), 0.08, hgt + 0.1), pole, "lamp", "lamp post"))
        things.append(
            sc.Thing(sc.Box((lx + arm / 2, ly, hgt + 0.05), (abs(arm), 0.08, 0.08)), pole, "lamp", "lamp post")
        )
        things.append(sc.Thing(sc.Sphere((lx + arm, ly, hgt - 0.1), 0.25), head, "lamp", "lamp"))
        lights.append(sc.Light((lx + arm, ly, hgt - 0.45), (1.0, 0.78, 0.48), float(rng.uniform(1.0, 1.6)), 6.0))
    # Trees: cold foliage, a warmer trunk.
    for _ in range(int(rng.integers(0, 3))):
        tx = float(rng.choice([road_x - 3.0, road_x + 10.0])) + float(rng.uniform(-1, 1))
        ty = float(rng.uniform(8, 30))
        trunk = sc.Material((0.25, 0.17, 0.1), "", None, temperature=0.32)
        leaves = sc.Material((0.1, 0.22, 0.1), "", "carpet", temperature=0.2)
        things.append(sc.Thing(sc.Cylinder((tx, ty, 0.0), 0.15, 3.0), trunk, "tree", "tree"))
        things.append(sc.Thing(sc.Sphere((tx, ty, 3.6), float(rng.uniform(1.3, 2.0))), leaves, "tree", "tree"))
    # Sometimes a parked car with a warm bonnet.
    if rng.random() < 0.5:
        cx = road_x + float(rng.uniform(1.2, 2.0))
        cy = float(rng.uniform(9, 22))
        body = sc.Material(sc.PALETTE[str(rng.choice(["red", "blue", "white", "black"]))], "", None, temperature=0.4)
        things.append(sc.Thing(sc.Box((cx, cy, 0.6), (1.8, 4.3, 0.85)), body, "car", "car"))
        things.append(sc.Thing(sc.Box((cx, cy + 0.2, 1.3), (1.6, 2.2, 0.6)), body, "car", "car"))
        bonnet = sc.Material(body.color, "", None, temperature=0.68)
        things.append(sc.Thing(sc.Box((cx, cy - 1.55, 1.03), (1.7, 1.1, 0.02)), bonnet, "car", "car"))
    # Pedestrians, spread over the visible ground.
    n_people = int(rng.integers(2, 7))
    half = math.atan(w / 2 / f)
    placed: list[tuple[float, float]] = []
    for _ in range(200):
        if len(placed) == n_people:
            break
        dist = float(rng.uniform(cam_h / math.tan(-pitch + 0.6 * math.atan(h / 2 / f)), 26.0))
        ang = yaw + float(rng.uniform(-0.8, 0.8)) * half
        px, py = -dist * math.sin(ang), dist * math.cos(ang)
        if all(math.hypot(px - a, py - b) > 1.0 for a, b in placed):
            placed.append((px, py))
    for g, (px, py) in enumerate(placed):
        things.extend(_person(rng, px, py, g))
    scene = sc.Scene(
        tuple(things),
        tuple(lights),
        ambient=float(rng.uniform(0.03, 0.06)),
        sky=(0.02, 0.025, 0.05),
        sky_temperature=0.05,
    )
    return LlvipSample(seed, index, split, scene, camera, render_scale, len(placed))


def render_sample(sample: LlvipSample) -> LlvipFrame:
    rng = sc.sample_rng(sample.seed, sample.index, 100 * sc.SEED_SALT["llvip"] + 1)
    scene = sample.scene
    hit = sc.render(scene, sample.camera)

    rgb = sc.shade(scene, hit)
    # Night exposure: a gain with a soft shoulder, plus a glow around the lamp heads.
    glow_src = np.where(sc.emission_mask(scene, hit), 1.0, 0.0).astype(np.float32)
    glow = np.asarray(
        Image.fromarray((glow_src * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(6)), np.float32
    )
    rgb = 1.0 - np.exp(-1.6 * rgb) + (glow / 255.0)[..., None] * np.float32([0.5, 0.38, 0.22])
    visible_small = sc.to_uint8(rgb, rng, noise=0.02)

    temp = np.full(hit.t.shape, scene.sky_temperature, np.float32)
    for i, thing in enumerate(scene.things):
        temp[hit.index == i] = thing.material.temperature
    # Emissivity falls at grazing angles; far ground reads a little cooler; texture for the road.
    cos = np.abs((hit.dirs * hit.normal).sum(axis=0)) / np.sqrt((hit.dirs * hit.dirs).sum(axis=0))
    surface = hit.index >= 0
    temp = np.where(surface, temp * (0.85 + 0.15 * cos), temp)
    dist = np.where(surface, hit.t, 0)
    temp -= np.where(surface, 0.004 * np.minimum(dist, 40), 0)
    vv, uu = np.mgrid[0 : temp.shape[0], 0 : temp.shape[1]].astype(np.float32)
    temp += 0.03 * (sc.value_noise(uu / 40, vv / 40, sample.index) - 0.5)
    ir = np.clip(temp + rng.normal(0, 0.01, temp.shape).astype(np.float32), 0, 1)
    ir_small = Image.fromarray((ir * 255 + 0.5).astype(np.uint8)).filter(ImageFilter.GaussianBlur(1.2))

    size = (WIDTH, HEIGHT)
    visible = np.asarray(Image.fromarray(visible_small).resize(size, Image.BICUBIC))
    infrared = np.asarray(ir_small.resize(size, Image.BICUBIC))
    labels = np.asarray(Image.fromarray(hit.index.astype(np.int32)).resize(size, Image.NEAREST)).astype(np.int16)
    people = np.array([t.kind == "person" for t in scene.things] + [False])  # index -1 -> False
    return LlvipFrame(visible, infrared, labels, people[labels])


def file_names(samples: list[LlvipSample]) -> list[str]:
    """``010001``, ... for train and ``190001``, ... for test, in sample order."""
    counters = {"train": 10000, "test": 190000}
    names = []
    for s in samples:
        counters[s.split] += 1
        names.append(f"{counters[s.split]:06d}")
    return names


def write(root: Path, n: int, seed: int = 0, render_scale: int = 2, jpeg_quality: int = JPEG_QUALITY) -> list[str]:
    if render_scale not in (1, 2, 4):
        raise ValueError(f"render_scale must be 1, 2 or 4, got {render_scale}")
    samples = [make_sample(seed, i, render_scale) for i in range(n)]
    files = []
    for sample, name in zip(samples, file_names(samples)):
        frame = render_sample(sample)
        vis = f"visible/{sample.split}/{name}.jpg"
        ir = f"infrared/{sample.split}/{name}.jpg"
        for rel in (vis, ir):
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
        save_jpeg(root / vis, frame.visible, jpeg_quality)
        save_jpeg(root / ir, np.repeat(frame.infrared[..., None], 3, axis=2), jpeg_quality)
        files += [vis, ir]
    return files
