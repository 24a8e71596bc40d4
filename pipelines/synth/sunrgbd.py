"""SUN RGB-D toolbox layout: an RGB render of a procedural room and the depth of the same geometry.

Tree (relative to the root; ``<scene>`` = ``<sensor>/<collection>/<scene_id>``)::

    splits.csv                     scene,split  (~80 % train, 20 % test)
    <scene>/image/<name>.jpg       RGB, 8-bit, baseline JPEG q95, the sensor's cropped size
    <scene>/depth/<name>.png       uint16 millimetres, SUN bit-rotated:
                                   raw = (mm << 3) | (mm >> 13); mm = (raw >> 3) | (raw << 13)
    <scene>/intrinsics.txt         3x3 K, whitespace separated, fx at [0, 0]

e.g. ``kv1/NYUdata/NYU0001/image/NYU0001.jpg``, ``kv2/kinect2data/000002_kinect2/image/0000002.jpg``.
``sensor`` is one of kv1 / kv2 / realsense / xtion (the folder name is the only sensor record, as in
the real dataset). The depth is the z-depth of the very scene the
RGB shows, from the same camera, with the holes real sensors leave: zeros beyond the sensor's range,
at grazing angles, in a shadow band beside depth edges (structured light) or on edge pixels (ToF),
on dark surfaces, and a few random pixels; axial noise grows with z^2, and the triangulating sensors
(kv1, realsense, xtion) quantise disparity to 1/8 pixel, so their depth comes in steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from pipelines.synth import scene as sc
from pipelines.synth.media import save_jpeg


@dataclass(frozen=True)
class SensorSpec:
    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    max_range_m: float
    structured_light: bool  # kv2 is time-of-flight; the others triangulate a projected pattern
    collection: str
    baseline_m: float  # projector-camera baseline of the triangulating sensors (disparity steps)


# Cropped SUN RGB-D frame sizes and per-sensor intrinsics.
SENSORS: dict[str, SensorSpec] = {
    "kv1": SensorSpec(561, 427, 520.532, 520.7444, 277.9258, 215.115, 8.0, True, "NYUdata", 0.075),
    "kv2": SensorSpec(730, 530, 529.5, 529.5, 365.0, 265.0, 8.0, False, "kinect2data", 0.0),
    "realsense": SensorSpec(681, 531, 691.584229, 691.584229, 362.777557, 264.75, 5.0, True, "sh", 0.07),
    "xtion": SensorSpec(591, 441, 570.342205, 570.342205, 310.0, 225.0, 6.5, True, "xtion_align_data", 0.075),
}
JPEG_QUALITY = 95


def encode_depth(mm: np.ndarray) -> np.ndarray:
    """Millimetres -> the SUN RGB-D toolbox's bit-rotated uint16."""
    mm = np.asarray(mm, np.uint16)
    return ((mm << 3) | (mm >> 13)).astype(np.uint16)


def decode_depth(raw: np.ndarray) -> np.ndarray:
    """Bit-rotated uint16 -> millimetres (0 = missing)."""
    raw = np.asarray(raw, np.uint16)
    return ((raw >> 3) | (raw << 13)).astype(np.uint16)


@dataclass(frozen=True)
class SunSample:
    seed: int
    index: int
    sensor: str
    scene_id: str
    name: str  # file stem of image/<name>.jpg and depth/<name>.png
    split: str
    room: sc.Room
    camera: sc.Camera

    @property
    def scene_dir(self) -> str:
        return f"{self.sensor}/{SENSORS[self.sensor].collection}/{self.scene_id}"


@dataclass
class SunFrame:
    rgb: np.ndarray  # [H, W, 3] uint8
    depth_mm: np.ndarray  # [H, W] uint16, 0 = missing
    true_depth_m: np.ndarray  # [H, W] float32 z-depth of the geometry, no noise or holes
    labels: np.ndarray  # [H, W] int16 index into room.scene.things


def make_sample(seed: int, index: int) -> SunSample:
    rng = sc.sample_rng(seed, index, sc.SEED_SALT["sunrgbd"])
    sensor = list(SENSORS)[int(rng.choice(4, p=[0.3, 0.3, 0.15, 0.25]))]
    spec = SENSORS[sensor]
    split = "train" if rng.random() < 0.8 else "test"
    height_cam = float(rng.uniform(1.0, 1.6))
    pitch = -math.radians(float(rng.uniform(5, 25)))
    yaw = math.radians(float(rng.uniform(-8, 8)))
    roll = math.radians(float(rng.uniform(-2, 2)))
    depth = float(rng.uniform(3.2, min(7.5, spec.max_range_m + 1.0)))
    x_range = (-float(rng.uniform(1.6, 3.5)), float(rng.uniform(1.6, 3.5)))
    room_h = float(rng.uniform(2.5, 3.1))
    camera = sc.Camera(
        spec.width, spec.height, spec.fx, spec.fy, spec.cx, spec.cy, (0.0, 0.0, height_cam), yaw, pitch, roll
    )
    placements = sc.place_in_view(rng, int(rng.integers(2, 5)), camera, depth - 0.6, x_range)
    room = sc.make_room(rng, placements, x_range, (-1.0, depth), room_h)
    k = index + 1
    if sensor == "kv1":
        scene_id = name = f"NYU{k:04d}"
    elif sensor == "kv2":
        scene_id, name = f"{k:06d}_kinect2", f"{k:07d}"
    elif sensor == "realsense":
        scene_id, name = f"2014_10_21-{k:06d}", f"{k:07d}"
    else:
        scene_id, name = f"xtion_{k:06d}", f"{k:07d}"
    return SunSample(seed, index, sensor, scene_id, name, split, room, camera)


def render_sample(sample: SunSample) -> SunFrame:
    """Render RGB and sensor-like depth (noise from a generator of its own, apart from the layout's)."""
    rng = sc.sample_rng(sample.seed, sample.index, 100 * sc.SEED_SALT["sunrgbd"] + 1)
    spec = SENSORS[sample.sensor]
    scene = sample.room.scene
    hit = sc.render(scene, sample.camera)
    rgb = sc.to_uint8(sc.shade(scene, hit), rng, noise=0.012)

    z = hit.t.astype(np.float32)  # pinhole rays: ray parameter == z-depth
    true_z = z.copy()
    valid = np.isfinite(z)
    z = np.where(valid, z, 0)
    # Axial noise grows with the square of the distance (structured light and ToF alike).
    z = z + rng.normal(0, 1, z.shape).astype(np.float32) * (0.0012 * z * z + 0.001)
    if spec.structured_light:
        # Triangulating sensors measure disparity in 1/8 pixel steps: depth comes in steps that
        # grow with z^2 (about 5 cm at 4 m for a Kinect v1).
        fb = spec.fx * spec.baseline_m
        with np.errstate(divide="ignore"):
            disparity = np.round(np.where(z > 0, fb / np.maximum(z, 1e-3), 0) * 8) / 8
            z = np.where(disparity > 0, fb / np.maximum(disparity, 1e-6), 0).astype(np.float32)
    valid &= z < spec.max_range_m
    # Grazing surfaces return nothing.
    cos = np.abs((hit.dirs * hit.normal).sum(axis=0)) / np.sqrt((hit.dirs * hit.dirs).sum(axis=0))
    valid &= cos > 0.12
    # Depth edges: a projector shadow on the far side (structured light) or flying pixels (ToF).
    zc = np.where(np.isfinite(true_z), true_z, 1e3)
    jump = np.zeros_like(valid)
    jump[:, 1:] = (zc[:, 1:] - zc[:, :-1]) > 0.06 * zc[:, :-1]
    if spec.structured_light:
        band = jump.copy()
        for k in range(1, 5):
            band[:, k:] |= jump[:, :-k]
        valid &= ~band
    else:
        back = np.zeros_like(valid)
        back[:, 1:] = (zc[:, :-1] - zc[:, 1:]) > 0.06 * zc[:, 1:]
        edge = jump | back
        edge[:, :-1] |= jump[:, 1:]
        valid &= ~edge
    # Dark / glossy materials drop out in blotches.
    hh, ww = z.shape
    vv, uu = np.mgrid[0:hh, 0:ww].astype(np.float32)
    blotch = sc.value_noise(uu / 9.0, vv / 9.0, seed=sample.index)
    for i, thing in enumerate(scene.things):
        p = thing.material.depth_dropout
        if p > 0:
            valid &= ~((hit.index == i) & (blotch < p))
    valid &= rng.random(z.shape) > 0.003
    mm = np.where(valid, np.round(z * 1000.0), 0).clip(0, 65535).astype(np.uint16)
    return SunFrame(rgb, mm, true_z, hit.index)


def intrinsics_text(camera: sc.Camera) -> str:
    return "".join(" ".join(f"{v:.6f}" for v in row) + "\n" for row in camera.K)


def write(root: Path, n: int, seed: int = 0, jpeg_quality: int = JPEG_QUALITY) -> list[str]:
    files: list[str] = []
    split_rows = ["scene,split"]
    for i in range(n):
        sample = make_sample(seed, i)
        frame = render_sample(sample)
        base = root / sample.scene_dir
        (base / "image").mkdir(parents=True, exist_ok=True)
        (base / "depth").mkdir(parents=True, exist_ok=True)
        img_rel = f"{sample.scene_dir}/image/{sample.name}.jpg"
        depth_rel = f"{sample.scene_dir}/depth/{sample.name}.png"
        k_rel = f"{sample.scene_dir}/intrinsics.txt"
        save_jpeg(root / img_rel, frame.rgb, jpeg_quality)
        # zlib level 1: 10x faster than the default on noisy 16-bit depth, same pixels
        Image.fromarray(encode_depth(frame.depth_mm)).save(root / depth_rel, "PNG", compress_level=1)
        (root / k_rel).write_text(intrinsics_text(sample.camera))
        files += [img_rel, depth_rel, k_rel]
        split_rows.append(f"{sample.scene_dir},{sample.split}")
    (root / "splits.csv").write_text("\n".join(split_rows) + "\n")
    files.append("splits.csv")
    return files
