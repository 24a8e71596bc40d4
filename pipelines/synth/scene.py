"""Procedural 3-D scenes and a vectorized numpy ray caster shared by the synthetic layouts.

One scene description feeds every modality of a synthetic sample: the RGB render, the depth map,
the thermal image, the caption, the camera path behind an IMU trace. Modalities are therefore
related by construction, which is what the alignment code downstream has to preserve.

Conventions (right-handed, metres, radians):

- world: ``x`` right, ``y`` forward, ``z`` up; the floor / ground is ``z = 0``.
- camera body frame: ``x`` right, ``y`` forward (the optical axis), ``z`` up. It coincides with the
  world frame at ``yaw = pitch = roll = 0``. ``R_world_from_body = Rz(yaw) @ Rx(pitch) @ Ry(roll)``:
  positive yaw turns left (counter-clockwise seen from above), positive pitch looks up, positive
  roll tilts the right side down.
- image: pixel ``(u, v)`` = (column, row) array index, ``u`` to the right and ``v`` down (the OpenCV
  convention, so ``X = (u - cx) z / fx`` back-projects a depth pixel); its pinhole ray has body
  direction ``((u - cx) / fx, 1, -(v - cy) / fy)``. The forward component is 1, so the ray parameter
  ``t`` of a hit *is* the z-depth (distance along the optical axis), as depth sensors report it.
- arrays: images ``[H, W, 3]``, float in ``[0, 1]`` until quantised; the ray caster works on
  channel-first vectors ``[3, H, W]`` (contiguous components are much faster in numpy);
  ``Hit.index`` is the thing index per pixel, ``-1`` where the ray hits nothing (sky).

Why one module of this size: the scene description and its ray caster are one model of the
world that every synthetic layout renders from; split, each half would only make sense with the
other open.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

EPS = 1e-4
SEED_SALT = {"sunrgbd": 1, "llvip": 2, "image-text": 3, "audioset": 4, "ego4d": 5}


def sample_rng(seed: int, index: int, salt: int = 0) -> np.random.Generator:
    """An independent generator per (seed, sample index): sample ``i`` is the same whatever ``n`` is."""
    return np.random.default_rng(np.random.SeedSequence(entropy=int(seed), spawn_key=(int(salt), int(index))))


# --------------------------------------------------------------------------------------------
# colours and materials

# Reflectances (display values in [0, 1]) with the word a caption uses for them.
PALETTE: dict[str, tuple[float, float, float]] = {
    "red": (0.82, 0.12, 0.10),
    "green": (0.15, 0.62, 0.20),
    "blue": (0.12, 0.28, 0.85),
    "yellow": (0.92, 0.82, 0.12),
    "orange": (0.95, 0.48, 0.08),
    "purple": (0.52, 0.18, 0.68),
    "pink": (0.95, 0.50, 0.70),
    "cyan": (0.10, 0.75, 0.80),
    "white": (0.90, 0.90, 0.88),
    "black": (0.07, 0.07, 0.08),
}
CHROMATIC = tuple(c for c in PALETTE if c not in ("white", "black"))


@dataclass(frozen=True)
class Material:
    color: tuple[float, float, float]
    color_name: str = ""
    texture: str | None = None  # "wood", "tiles", "carpet", "asphalt", "brick", "paint", None
    emissive: float = 0.0  # added radiance (lamps, lit windows)
    temperature: float = 0.3  # apparent thermal intensity in [0, 1] (LLVIP infrared)
    depth_dropout: float = 0.0  # fraction of depth pixels a structured-light sensor loses here


# --------------------------------------------------------------------------------------------
# shapes. Rays are stored channel-first: ``d`` is ``[3, N]`` float32 (contiguous components are
# several times faster in numpy than ``[N, 3]`` rows). ``intersect(o, d) -> t [N]`` for rays
# ``o + t * d`` (inf on a miss); ``normal_at(p, d) -> [3, N]`` unit normals facing against the ray.

_F = np.float32


def _nz(x: np.ndarray) -> np.ndarray:
    return np.where(np.abs(x) < 1e-12, _F(1e-12), x)


def _facing(n: np.ndarray, d: np.ndarray) -> np.ndarray:
    n = n / np.maximum(np.sqrt((n * n).sum(axis=0)), _F(1e-9))
    sign = np.where((n * d).sum(axis=0) > 0, _F(-1), _F(1))
    return (n * sign).astype(_F, copy=False)


def _sphere_t(ox: float, oy: float, oz: float, dx, dy, dz, r2: float) -> np.ndarray:
    a = dx * dx + dy * dy + dz * dz
    b = dx * ox + dy * oy + dz * oz
    cc = ox * ox + oy * oy + oz * oz - r2
    disc = b * b - a * cc
    sq = np.sqrt(np.maximum(disc, 0))
    t = (-b + sq) / a if cc < 0 else (-b - sq) / a  # from inside: the exit
    return np.where((disc >= 0) & (t > EPS), t, _F(np.inf)).astype(_F, copy=False)


@dataclass(frozen=True)
class Plane:
    """Infinite plane ``normal . x = offset`` (two-sided)."""

    normal: tuple[float, float, float]
    offset: float

    def bounds(self):
        return None

    def intersect(self, o, d):
        n = self.normal
        denom = sum(d[k] * _F(n[k]) for k in range(3) if n[k] != 0)
        num = _F(self.offset - (o[0] * n[0] + o[1] * n[1] + o[2] * n[2]))
        with np.errstate(divide="ignore", invalid="ignore"):
            t = num / denom
        return np.where(t > EPS, t, _F(np.inf)).astype(_F, copy=False)

    def normal_at(self, p, d):
        n = np.asarray(self.normal, _F)[:, None]
        return _facing(np.broadcast_to(n, d.shape), d)


@dataclass(frozen=True)
class Sphere:
    center: tuple[float, float, float]
    radius: float

    def bounds(self):
        return self.center, self.radius

    def intersect(self, o, d):
        c = self.center
        return _sphere_t(o[0] - c[0], o[1] - c[1], o[2] - c[2], d[0], d[1], d[2], self.radius**2)

    def normal_at(self, p, d):
        return _facing(p - np.asarray(self.center, _F)[:, None], d)


@dataclass(frozen=True)
class Ellipsoid:
    """Axis-aligned ellipsoid (pedestrian torsos)."""

    center: tuple[float, float, float]
    radii: tuple[float, float, float]

    def bounds(self):
        return self.center, max(self.radii)

    def intersect(self, o, d):
        c, r = self.center, self.radii
        return _sphere_t(
            (o[0] - c[0]) / r[0],
            (o[1] - c[1]) / r[1],
            (o[2] - c[2]) / r[2],
            d[0] / _F(r[0]),
            d[1] / _F(r[1]),
            d[2] / _F(r[2]),
            1.0,
        )

    def normal_at(self, p, d):
        r = np.asarray(self.radii, _F)[:, None]
        return _facing((p - np.asarray(self.center, _F)[:, None]) / (r * r), d)


@dataclass(frozen=True)
class Box:
    """Box with half-extents ``size / 2`` around ``center``, turned by ``yaw`` about the vertical."""

    center: tuple[float, float, float]
    size: tuple[float, float, float]
    yaw: float = 0.0

    def bounds(self):
        return self.center, 0.5 * float(np.linalg.norm(self.size))

    def _local(self, x, y, z):
        c, s = _F(math.cos(self.yaw)), _F(math.sin(self.yaw))
        return c * x + s * y, -s * x + c * y, z

    def intersect(self, o, d):
        ctr = self.center
        ol = self._local(o[0] - ctr[0], o[1] - ctr[1], o[2] - ctr[2])
        dl = self._local(d[0], d[1], d[2])
        tmin = tmax = None
        for k in range(3):
            h = 0.5 * self.size[k]
            inv = _F(1.0) / _nz(dl[k])
            t1 = (_F(-h - ol[k])) * inv
            t2 = (_F(h - ol[k])) * inv
            lo, hi = np.minimum(t1, t2), np.maximum(t1, t2)
            tmin = lo if tmin is None else np.maximum(tmin, lo)
            tmax = hi if tmax is None else np.minimum(tmax, hi)
        t = np.where(tmin > EPS, tmin, tmax)
        return np.where((tmax >= tmin) & (tmax > EPS), t, _F(np.inf)).astype(_F, copy=False)

    def normal_at(self, p, d):
        c = self.center
        pl = np.stack(self._local(p[0] - _F(c[0]), p[1] - _F(c[1]), p[2] - _F(c[2])))
        pl /= np.asarray(self.size, _F)[:, None] * _F(0.5)
        axis = np.abs(pl).argmax(axis=0)
        nl = np.where(np.arange(3)[:, None] == axis[None, :], np.sign(pl), _F(0))
        cs, sn = _F(math.cos(self.yaw)), _F(math.sin(self.yaw))
        n = np.stack([cs * nl[0] - sn * nl[1], sn * nl[0] + cs * nl[1], nl[2]])
        return _facing(n, d)


@dataclass(frozen=True)
class Cylinder:
    """Vertical cylinder standing on ``base`` (x, y, z0), with caps."""

    base: tuple[float, float, float]
    radius: float
    height: float

    def bounds(self):
        x, y, z = self.base
        return (x, y, z + self.height / 2), math.hypot(self.radius, self.height / 2)

    def intersect(self, o, d):
        bx, by, bz = self.base
        ox, oy, oz = float(o[0]) - bx, float(o[1]) - by, float(o[2])
        dx, dy, dz = d[0], d[1], d[2]
        r2 = self.radius**2
        a = _nz(dx * dx + dy * dy)
        b = ox * dx + oy * dy
        disc = b * b - a * _F(ox * ox + oy * oy - r2)
        ts = (-b - np.sqrt(np.maximum(disc, 0))) / a
        zs = oz + ts * dz
        t = np.where((disc >= 0) & (ts > EPS) & (zs >= bz) & (zs <= bz + self.height), ts, _F(np.inf))
        inv = _F(1.0) / _nz(dz)
        for zc in (bz + self.height, bz):
            tc = _F(zc - oz) * inv
            cx = ox + tc * dx
            cy = oy + tc * dy
            t = np.where((tc > EPS) & (cx * cx + cy * cy <= r2) & (tc < t), tc, t)
        return t.astype(_F, copy=False)

    def normal_at(self, p, d):
        bx, by, bz = self.base
        nx = p[0] - _F(bx)
        ny = p[1] - _F(by)
        rim = np.sqrt(nx * nx + ny * ny) / _F(self.radius)
        zrel = (p[2] - _F(bz)) / _F(self.height)
        cap = rim < 0.999
        top = cap & (zrel > 0.5)
        bottom = cap & (zrel <= 0.5)
        n = np.stack(
            [np.where(cap, _F(0), nx), np.where(cap, _F(0), ny), np.where(top, _F(1), np.where(bottom, _F(-1), _F(0)))]
        )
        return _facing(n, d)


Shape = Plane | Sphere | Ellipsoid | Box | Cylinder


@dataclass(frozen=True)
class Thing:
    shape: Shape
    material: Material
    kind: str  # "floor", "wall", "cube", "box", "sphere", "cylinder", "person", ...
    name: str = ""  # what a caption calls it, e.g. "red cube"
    group: int = -1  # things that form one object (a pedestrian's head, torso, legs) share a group


@dataclass(frozen=True)
class Light:
    position: tuple[float, float, float]
    color: tuple[float, float, float] = (1.0, 1.0, 1.0)
    intensity: float = 1.0
    radius: float = 3.0  # falloff: intensity / (1 + (dist / radius)^2)


@dataclass(frozen=True)
class Scene:
    things: tuple[Thing, ...]
    lights: tuple[Light, ...] = ()
    ambient: float = 0.3
    sky: tuple[float, float, float] = (0.0, 0.0, 0.0)
    sky_temperature: float = 0.05

    def index_of(self, kind: str) -> list[int]:
        return [i for i, t in enumerate(self.things) if t.kind == kind]


# --------------------------------------------------------------------------------------------
# camera


def rotation(yaw: float, pitch: float, roll: float = 0.0) -> np.ndarray:
    """``R_world_from_body = Rz(yaw) @ Rx(pitch) @ Ry(roll)``."""
    cy, sy = math.cos(yaw), math.sin(yaw)
    cp, sp = math.cos(pitch), math.sin(pitch)
    cr, sr = math.cos(roll), math.sin(roll)
    rz = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    ry = np.array([[cr, 0, sr], [0, 1, 0], [-sr, 0, cr]])
    return rz @ rx @ ry


@dataclass(frozen=True)
class Camera:
    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    position: tuple[float, float, float] = (0.0, 0.0, 1.5)
    yaw: float = 0.0
    pitch: float = 0.0
    roll: float = 0.0

    @property
    def K(self) -> np.ndarray:
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    def rotation(self) -> np.ndarray:
        return rotation(self.yaw, self.pitch, self.roll)

    def body_dirs(self) -> np.ndarray:
        """``[3, H, W]`` body-frame ray directions with unit forward component."""
        u = (np.arange(self.width, dtype=_F) - _F(self.cx)) / _F(self.fx)
        v = -(np.arange(self.height, dtype=_F) - _F(self.cy)) / _F(self.fy)
        dirs = np.empty((3, self.height, self.width), _F)
        dirs[0] = u[None, :]
        dirs[1] = 1.0
        dirs[2] = v[:, None]
        return dirs

    def world_dirs(self) -> np.ndarray:
        """``[3, H, W]`` world-frame ray directions (forward component 1 in the body frame)."""
        return rotate(self.rotation(), self.body_dirs())

    def to_body(self, points: np.ndarray) -> np.ndarray:
        return (np.asarray(points, np.float64) - np.asarray(self.position)) @ self.rotation()

    def project(self, points: np.ndarray) -> np.ndarray:
        """World points ``[N, 3]`` -> ``[N, 3]`` of (u, v, z-depth)."""
        b = self.to_body(np.atleast_2d(points))
        z = b[:, 1]
        with np.errstate(divide="ignore", invalid="ignore"):
            u = self.cx + self.fx * b[:, 0] / z
            v = self.cy - self.fy * b[:, 2] / z
        return np.stack([u, v, z], axis=1)

    def window(self, bounds) -> tuple[int, int, int, int] | None:
        """Conservative pixel window (v0, v1, u0, u1) of a bounding sphere; None = whole image."""
        if bounds is None:
            return None
        center, radius = bounds
        r = float(radius) * 1.05 + 0.02
        corners = np.array([[sx, sy, sz] for sx in (-r, r) for sy in (-r, r) for sz in (-r, r)]) + center
        uvz = self.project(corners)
        if (uvz[:, 2] <= 0.05).any():
            return None
        u0 = max(int(np.floor(uvz[:, 0].min())) - 1, 0)
        u1 = min(int(np.ceil(uvz[:, 0].max())) + 2, self.width)
        v0 = max(int(np.floor(uvz[:, 1].min())) - 1, 0)
        v1 = min(int(np.ceil(uvz[:, 1].max())) + 2, self.height)
        return (v0, v1, u0, u1) if (u1 > u0 and v1 > v0) else (0, 0, 0, 0)


# --------------------------------------------------------------------------------------------
# ray casting and shading


def rotate(r: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Apply a 3x3 rotation to channel-first vectors ``[3, ...]``."""
    r = np.asarray(r, _F)
    return np.stack([r[k, 0] * v[0] + r[k, 1] * v[1] + r[k, 2] * v[2] for k in range(3)])


@dataclass
class Hit:
    """Cast result. Vectors are channel-first: ``normal``, ``point``, ``dirs`` are ``[3, *shape]``."""

    t: np.ndarray  # [*shape] float32 ray parameter (z-depth for pinhole rays); inf = miss
    index: np.ndarray  # [*shape] int16 thing index; -1 = miss
    normal: np.ndarray  # [3, *shape] unit normal facing the ray (0 where missed)
    point: np.ndarray  # [3, *shape] world point (the origin where missed)
    dirs: np.ndarray  # [3, *shape] the rays cast


def cast(scene: Scene, origin, dirs: np.ndarray, camera: Camera | None = None) -> Hit:
    """Nearest hit for rays ``[3, *shape]`` from one origin.

    With ``camera`` (and ``shape == (H, W)``) a thing with finite bounds is only tested inside its
    projected pixel window, which makes small objects nearly free.
    """
    o = tuple(float(v) for v in origin)
    dirs = np.ascontiguousarray(dirs, _F)
    shape = dirs.shape[1:]
    tbuf = np.full(shape, np.inf, _F)
    ibuf = np.full(shape, -1, np.int16)
    windows = []
    for i, thing in enumerate(scene.things):
        win = camera.window(thing.shape.bounds()) if camera is not None else None
        windows.append(win)
        if win is None:
            t = thing.shape.intersect(o, dirs.reshape(3, -1)).reshape(shape)
            ibuf = np.where(t < tbuf, np.int16(i), ibuf)
            tbuf = np.minimum(t, tbuf)
            continue
        v0, v1, u0, u1 = win
        if v1 <= v0 or u1 <= u0:
            continue
        sub = dirs[:, v0:v1, u0:u1]
        t = thing.shape.intersect(o, sub.reshape(3, -1)).reshape(sub.shape[1:])
        tw = tbuf[v0:v1, u0:u1]
        ibuf[v0:v1, u0:u1] = np.where(t < tw, np.int16(i), ibuf[v0:v1, u0:u1])
        tbuf[v0:v1, u0:u1] = np.minimum(t, tw)
    finite = np.isfinite(tbuf)
    tz = np.where(finite, tbuf, _F(0))
    point = np.stack([_F(o[k]) + tz * dirs[k] for k in range(3)])
    normal = np.zeros_like(dirs)
    for i, thing in enumerate(scene.things):
        win = windows[i]
        if win is None:
            m = ibuf == i
            if m.any():
                n = thing.shape.normal_at(point.reshape(3, -1), dirs.reshape(3, -1)).reshape(dirs.shape)
                normal = np.where(m[None], n, normal)
            continue
        v0, v1, u0, u1 = win
        m = ibuf[v0:v1, u0:u1] == i
        if v1 <= v0 or u1 <= u0 or not m.any():
            continue
        p = point[:, v0:v1, u0:u1]
        n = thing.shape.normal_at(p.reshape(3, -1), dirs[:, v0:v1, u0:u1].reshape(3, -1)).reshape(p.shape)
        normal[:, v0:v1, u0:u1] = np.where(m[None], n, normal[:, v0:v1, u0:u1])
    return Hit(tbuf, ibuf, normal, point, dirs)


def render(scene: Scene, camera: Camera) -> Hit:
    return cast(scene, camera.position, camera.world_dirs(), camera)


def _hash2(ix: np.ndarray, iy: np.ndarray, seed: int) -> np.ndarray:
    """Integer lattice hash -> uniform [0, 1) (deterministic, no RNG state)."""
    h = (ix.astype(np.int64) * 73856093) ^ (iy.astype(np.int64) * 19349663) ^ (seed * 83492791)
    h = (h ^ (h >> 13)) * 1274126177
    h = h ^ (h >> 16)
    return ((h & 0xFFFFFF).astype(np.float32)) / float(0x1000000)


def value_noise(x: np.ndarray, y: np.ndarray, seed: int = 0) -> np.ndarray:
    """Smooth lattice noise in [0, 1): hash at integer points, smoothstep-interpolated."""
    x0 = np.floor(x)
    y0 = np.floor(y)
    fx = x - x0
    fy = y - y0
    fx = fx * fx * (3 - 2 * fx)
    fy = fy * fy * (3 - 2 * fy)
    ix, iy = x0.astype(np.int64), y0.astype(np.int64)
    a = _hash2(ix, iy, seed)
    b = _hash2(ix + 1, iy, seed)
    c = _hash2(ix, iy + 1, seed)
    d = _hash2(ix + 1, iy + 1, seed)
    return (a + (b - a) * fx) * (1 - fy) + (c + (d - c) * fx) * fy


def _surface_coords(point: np.ndarray, normal: np.ndarray):
    """Two in-surface coordinates for axis-dominant surfaces (floor: x, y; walls: the other two)."""
    ax = np.abs(normal).argmax(axis=0)
    u = np.where(ax == 0, point[1], point[0])
    v = np.where(ax == 2, point[1], point[2])
    return u, v


def texture_factor(texture: str, u: np.ndarray, v: np.ndarray, seed: int) -> np.ndarray:
    """Brightness multiplier of a procedural texture at surface coordinates (metres)."""
    if texture == "wood":
        plank = np.floor(u / 0.14)
        shade = 0.8 + 0.35 * _hash2(plank, np.floor(v / 1.2 + plank * 0.37), seed)
        grain = 0.92 + 0.08 * np.sin(v * 40.0 + 6.0 * value_noise(u * 6, v * 0.8, seed + 7) + plank * 2.1)
        seam = np.where(np.abs(u / 0.14 - np.round(u / 0.14)) < 0.04, 0.55, 1.0)
        return shade * grain * seam
    if texture == "tiles":
        grout = (np.abs(u / 0.5 - np.round(u / 0.5)) < 0.03) | (np.abs(v / 0.5 - np.round(v / 0.5)) < 0.03)
        return np.where(grout, 0.6, 0.95 + 0.08 * _hash2(np.floor(u / 0.5), np.floor(v / 0.5), seed))
    if texture == "carpet":
        return 0.85 + 0.25 * value_noise(u * 30, v * 30, seed) * value_noise(u * 3, v * 3, seed + 3)
    if texture == "asphalt":
        return 0.75 + 0.35 * value_noise(u * 25, v * 25, seed) + 0.15 * value_noise(u * 0.7, v * 0.7, seed + 1)
    if texture == "brick":
        row = np.floor(v / 0.075)
        w = u / 0.22 + 0.5 * (row % 2)
        mortar = (np.abs(v / 0.075 - np.round(v / 0.075)) < 0.1) | (np.abs(w - np.round(w)) < 0.04)
        return np.where(mortar, 1.5, 0.85 + 0.3 * _hash2(np.floor(w), row, seed))
    if texture == "stripes":  # road markings: dashed bright bands along y
        lane = np.abs(u - np.round(u / 3.5) * 3.5) < 0.08
        dash = (v % 6.0) < 3.0
        return np.where(lane & dash, 4.0, 1.0)
    # "paint": faint large-scale unevenness
    return 0.95 + 0.08 * value_noise(u * 1.5, v * 1.5, seed)


def albedo(scene: Scene, hit: Hit) -> np.ndarray:
    """``[3, *shape]`` reflectance with procedural textures."""
    out = np.zeros(hit.dirs.shape, _F)
    for i, thing in enumerate(scene.things):
        m = hit.index == i
        if not m.any():
            continue
        mat = thing.material
        base = np.asarray(mat.color, _F)
        if mat.texture is None:
            out = np.where(m[None], base.reshape((3,) + (1,) * m.ndim), out)
            continue
        p = hit.point[:, m]
        u, v = _surface_coords(p, hit.normal[:, m])
        f = texture_factor(mat.texture, u, v, i).astype(_F)
        out[:, m] = np.clip(base[:, None] * f[None, :], 0, 1)
    return out


def irradiance(scene: Scene, hit: Hit) -> np.ndarray:
    """``[3, *shape]`` light arriving at each hit: ambient + Lambert point lights (no shadows)."""
    # hemisphere term: surfaces facing up get a bit more of the ambient
    amb = _F(scene.ambient) * (_F(0.85) + _F(0.15) * hit.normal[2])
    light = np.stack([amb, amb, amb])
    for lamp in scene.lights:
        to = np.asarray(lamp.position, _F).reshape((3,) + (1,) * hit.t.ndim) - hit.point
        dist = np.sqrt((to * to).sum(axis=0))
        cos = (hit.normal * to).sum(axis=0) / np.maximum(dist, _F(1e-6))
        fall = np.maximum(cos, 0) * (_F(lamp.intensity) / (1 + (dist / _F(lamp.radius)) ** 2))
        light += fall[None] * np.asarray(lamp.color, _F).reshape((3,) + (1,) * hit.t.ndim)
    return light


def shade(scene: Scene, hit: Hit) -> np.ndarray:
    """``[H, W, 3]`` float radiance: albedo x irradiance + emission; the sky colour where nothing is hit."""
    rgb = albedo(scene, hit) * irradiance(scene, hit)
    for i, thing in enumerate(scene.things):
        if thing.material.emissive:
            m = hit.index == i
            rgb[:, m] += _F(thing.material.emissive) * np.asarray(thing.material.color, _F)[:, None]
    miss = hit.index < 0
    rgb[:, miss] = np.asarray(scene.sky, _F)[:, None]
    return np.moveaxis(rgb, 0, -1)


def emission_mask(scene: Scene, hit: Hit) -> np.ndarray:
    """Pixels that see an emitter (lamp heads, lit windows)."""
    ids = [i for i, t in enumerate(scene.things) if t.material.emissive]
    return np.isin(hit.index, ids)


def to_uint8(rgb: np.ndarray, rng: np.random.Generator | None = None, noise: float = 0.0) -> np.ndarray:
    """Float radiance -> uint8 with optional sensor noise (from the sample's generator)."""
    x = rgb
    if rng is not None and noise > 0:
        x = x + rng.normal(0.0, noise, size=x.shape).astype(np.float32)
    return (np.clip(x, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


# --------------------------------------------------------------------------------------------
# a procedural room (SUN RGB-D, image-text, Ego4D)

OBJECT_KINDS = ("cube", "box", "sphere", "cylinder")
FLOORS = {
    "wooden": Material((0.55, 0.36, 0.20), "wooden", "wood"),
    "tiled": Material((0.80, 0.78, 0.74), "tiled", "tiles"),
    "grey carpeted": Material((0.45, 0.45, 0.48), "grey", "carpet", depth_dropout=0.0),
}
WALLS = {
    "white": (0.86, 0.85, 0.82),
    "beige": (0.82, 0.74, 0.60),
    "light blue": (0.62, 0.74, 0.84),
    "light green": (0.66, 0.80, 0.64),
}


@dataclass(frozen=True)
class RoomObject:
    kind: str  # one of OBJECT_KINDS
    color: str  # a PALETTE key
    center: tuple[float, float, float]  # of its bounding volume
    footprint: float  # radius on the floor
    thing: Thing


def make_object(rng: np.random.Generator, kind: str, color: str, x: float, y: float, scale: float = 1.0) -> RoomObject:
    rgb = PALETTE[color]
    # Dark and glossy things lose structured-light depth; make black objects do so.
    mat = Material(rgb, color, None, depth_dropout=0.5 if color == "black" else 0.0)
    if kind == "cube":
        s = float(rng.uniform(0.35, 0.7)) * scale
        shape = Box((x, y, s / 2), (s, s, s), float(rng.uniform(0, math.pi / 2)))
        center, fp = (x, y, s / 2), s * 0.71
    elif kind == "box":
        sx, sy, sz = (float(v) * scale for v in rng.uniform((0.5, 0.3, 0.25), (1.0, 0.6, 0.9)))
        shape = Box((x, y, sz / 2), (sx, sy, sz), float(rng.uniform(-0.5, 0.5)))
        center, fp = (x, y, sz / 2), 0.5 * math.hypot(sx, sy)
    elif kind == "sphere":
        r = float(rng.uniform(0.18, 0.4)) * scale
        shape = Sphere((x, y, r), r)
        center, fp = (x, y, r), r
    elif kind == "cylinder":
        r = float(rng.uniform(0.12, 0.28)) * scale
        h = float(rng.uniform(0.4, 1.1)) * scale
        shape = Cylinder((x, y, 0.0), r, h)
        center, fp = (x, y, h / 2), r
    else:
        raise ValueError(f"unknown object kind {kind!r}")
    return RoomObject(kind, color, center, fp, Thing(shape, mat, kind, f"{color} {kind}"))


@dataclass(frozen=True)
class Room:
    scene: Scene
    objects: tuple[RoomObject, ...]
    floor: str
    wall: str
    bounds: tuple[float, float, float, float, float]  # x_min, x_max, y_min, y_max, height

    @property
    def object_indices(self) -> list[int]:
        return list(range(len(self.scene.things) - len(self.objects), len(self.scene.things)))


def make_room(
    rng: np.random.Generator,
    placements: list[tuple[float, float]],
    x_range: tuple[float, float],
    y_range: tuple[float, float],
    height: float,
    kinds=None,
    colors=None,
) -> Room:
    """A box-shaped room (floor, ceiling, four walls) with one object per (x, y) placement."""
    floor_name = list(FLOORS)[int(rng.integers(len(FLOORS)))]
    wall_name = list(WALLS)[int(rng.integers(len(WALLS)))]
    wall_mat = Material(WALLS[wall_name], wall_name, "paint", temperature=0.4)
    x0, x1 = x_range
    y0, y1 = y_range
    things = [
        Thing(Plane((0, 0, 1), 0.0), FLOORS[floor_name], "floor", f"{floor_name} floor"),
        Thing(Plane((0, 0, 1), height), Material((0.92, 0.92, 0.9), "white", "paint"), "ceiling", "ceiling"),
        Thing(Plane((0, 1, 0), y1), wall_mat, "wall", "back wall"),
        Thing(Plane((0, 1, 0), y0), wall_mat, "wall", "rear wall"),
        Thing(Plane((1, 0, 0), x0), wall_mat, "wall", "left wall"),
        Thing(Plane((1, 0, 0), x1), wall_mat, "wall", "right wall"),
    ]
    kinds = kinds or [OBJECT_KINDS[int(rng.integers(len(OBJECT_KINDS)))] for _ in placements]
    if colors is None:
        order = rng.permutation(len(PALETTE))
        colors = [list(PALETTE)[int(k)] for k in order[: len(placements)]]
    objects = tuple(make_object(rng, k, c, x, y) for (x, y), k, c in zip(placements, kinds, colors))
    things.extend(o.thing for o in objects)
    lx = float(rng.uniform(x0 + 0.5, x1 - 0.5))
    ly = float(rng.uniform(y0 + 0.5, y1 - 0.5))
    lights = (Light((lx, ly, height - 0.2), (1.0, 0.97, 0.9), float(rng.uniform(0.6, 0.9)), 3.0),)
    scene = Scene(tuple(things), lights, ambient=float(rng.uniform(0.35, 0.5)), sky=(0.0, 0.0, 0.0))
    return Room(scene, objects, floor_name, wall_name, (x0, x1, y0, y1, height))


def place_in_view(
    rng: np.random.Generator,
    n: int,
    camera: Camera,
    y_max: float,
    x_range: tuple[float, float],
    min_gap: float = 0.9,
    wall_margin: float = 0.5,
) -> list[tuple[float, float]]:
    """Up to ``n`` floor positions (x, y) that a level-ish camera at the origin sees whole-ish:
    beyond the floor line at the bottom of the image, inside the horizontal field of view, apart."""
    h = camera.position[2]
    half_w = math.atan(camera.width / 2 / camera.fx)
    low = math.atan(camera.height / 2 / camera.fy) - camera.pitch  # lowest ray below the horizon
    y_min = h / math.tan(low) + 0.5 if low > 0.05 else 0.5 * y_max
    y_min = min(max(y_min, 1.2), y_max - 0.4)
    out: list[tuple[float, float]] = []
    for _ in range(300):
        if len(out) == n:
            break
        y = float(rng.uniform(y_min, y_max))
        lim = min(0.75 * y * math.tan(half_w), -x_range[0] - wall_margin, x_range[1] - wall_margin)
        x = float(rng.uniform(-lim, lim)) + camera.position[0]
        if all(math.hypot(x - px, y - py) > min_gap for px, py in out):
            out.append((x, y))
    return out
