"""Synthetic image layouts (SUN RGB-D, LLVIP, image-text): formats as the real datasets, modalities
that agree with the one scene they were rendered from, byte-identical output per seed, and the
ray caster's geometry itself."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image

from pipelines.synth import image_text, llvip, sunrgbd
from pipelines.synth import scene as sc

SEED = 7


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def sun_root(tmp_path_factory) -> tuple[Path, list[str]]:
    root = tmp_path_factory.mktemp("sun")
    return root, sunrgbd.write(root, 4, SEED)


@pytest.fixture(scope="module")
def llvip_root(tmp_path_factory) -> tuple[Path, list[str]]:
    root = tmp_path_factory.mktemp("llvip")
    return root, llvip.write(root, 2, SEED)


@pytest.fixture(scope="module")
def caption_root(tmp_path_factory) -> tuple[Path, list[str]]:
    root = tmp_path_factory.mktemp("imtext")
    return root, image_text.write(root, 8, SEED)


# ------------------------------------------------------------------------------------------ ray caster


def test_floor_and_sphere_depth_match_closed_form():
    cam = sc.Camera(64, 48, 40.0, 40.0, 32.0, 24.0, (0.0, 0.0, 1.5))
    scene = sc.Scene(
        (
            sc.Thing(sc.Plane((0, 0, 1), 0.0), sc.Material((0.5, 0.5, 0.5)), "floor"),
            sc.Thing(sc.Sphere((0.0, 4.0, 1.5), 0.5), sc.Material((1, 0, 0)), "sphere"),
        )
    )
    hit = sc.render(scene, cam)
    # OpenCV convention: row v looks (v - cy) / fy below the axis; the floor is at z-depth h / that
    for v in (30, 40, 47):
        assert hit.index[v, 5] == 0
        assert hit.t[v, 5] == pytest.approx(1.5 * 40.0 / (v - 24.0), rel=1e-4)
    assert hit.index[24, 32] == 1
    assert hit.t[24, 32] == pytest.approx(3.5, abs=1e-4)  # the optical axis meets the sphere's front
    assert (hit.index[:10] == -1).all()  # above the horizon and off the sphere: sky


def test_projection_inverts_the_rays():
    sample = sunrgbd.make_sample(SEED, 1)
    cam = sample.camera
    hit = sc.render(sample.room.scene, cam)
    vv, uu = np.mgrid[0 : cam.height : 37, 0 : cam.width : 41]
    uvz = cam.project(hit.point[:, vv, uu].reshape(3, -1).T)
    np.testing.assert_allclose(uvz[:, 0], uu.ravel(), atol=0.02)
    np.testing.assert_allclose(uvz[:, 1], vv.ravel(), atol=0.02)
    np.testing.assert_allclose(uvz[:, 2], hit.t[vv, uu].ravel(), rtol=1e-4)


def test_window_culling_changes_nothing():
    sample = sunrgbd.make_sample(SEED, 0)
    cam = sample.camera
    culled = sc.render(sample.room.scene, cam)
    full = sc.cast(sample.room.scene, cam.position, cam.world_dirs())
    np.testing.assert_array_equal(culled.index, full.index)
    np.testing.assert_allclose(culled.t, full.t, rtol=1e-6)
    np.testing.assert_allclose(culled.normal, full.normal, atol=1e-5)


def test_box_and_cylinder_normals_face_the_camera():
    cam = sc.Camera(80, 60, 60.0, 60.0, 40.0, 30.0, (0.0, 0.0, 1.0))
    scene = sc.Scene(
        (
            sc.Thing(sc.Box((-0.6, 3.0, 1.0), (0.6, 0.6, 0.6), 0.3), sc.Material((1, 1, 1)), "cube"),
            sc.Thing(sc.Cylinder((0.6, 3.0, 0.5), 0.25, 1.0), sc.Material((1, 1, 1)), "cylinder"),
        )
    )
    hit = sc.render(scene, cam)
    for i in (0, 1):
        m = hit.index == i
        assert m.sum() > 100
        facing = (hit.normal[:, m] * hit.dirs[:, m]).sum(axis=0)
        assert (facing < 0).all()
        assert np.allclose(np.linalg.norm(hit.normal[:, m], axis=0), 1, atol=1e-4)


# ------------------------------------------------------------------------------------------ SUN RGB-D


def test_sunrgbd_tree_and_formats(sun_root):
    root, files = sun_root
    splits = pl.read_csv(root / "splits.csv")
    assert splits.columns == ["scene", "split"]
    assert set(splits["split"]) <= {"train", "test"}
    assert len(splits) == 4 and all((root / s).is_dir() for s in splits["scene"])
    for scene_rel in splits["scene"]:
        sensor, collection, scene_id = scene_rel.split("/")
        spec = sunrgbd.SENSORS[sensor]
        assert collection == spec.collection
        scene = root / scene_rel
        (jpg,) = (scene / "image").glob("*.jpg")
        (png,) = (scene / "depth").glob("*.png")
        assert jpg.stem == png.stem
        with Image.open(jpg) as im:
            assert (im.format, im.mode, im.size) == ("JPEG", "RGB", (spec.width, spec.height))
        with Image.open(png) as im:
            assert im.mode == "I;16" and im.size == (spec.width, spec.height)
            raw = np.asarray(im).astype(np.uint16)
        mm = sunrgbd.decode_depth(raw)
        valid = mm > 0
        assert 0.5 < valid.mean() < 1.0  # raw depth: holes, but mostly valid
        assert (raw[valid] % 8 == 0).all()  # < 8.192 m: the rotation is a plain << 3
        assert 300 < np.median(mm[valid]) < 8000 and mm.max() <= spec.max_range_m * 1000
        k = np.loadtxt(scene / "intrinsics.txt")
        assert k.shape == (3, 3) and k[0, 0] == pytest.approx(spec.fx) and k[2].tolist() == [0, 0, 1]
    assert sorted(files) == sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_sunrgbd_depth_is_the_geometry_of_the_rgb(sun_root):
    root, _ = sun_root
    checked_objects = 0
    for i in range(4):
        sample = sunrgbd.make_sample(SEED, i)
        frame = sunrgbd.render_sample(sample)
        name = sample.name
        with Image.open(root / sample.scene_dir / "depth" / f"{name}.png") as im:
            mm = sunrgbd.decode_depth(np.asarray(im).astype(np.uint16)).astype(np.float64)
        with Image.open(root / sample.scene_dir / "image" / f"{name}.jpg") as im:
            rgb = np.asarray(im).astype(np.float64)
        assert np.abs(rgb - frame.rgb).mean() < 3  # the file is the render
        np.testing.assert_array_equal(mm, frame.depth_mm)  # PNG is lossless
        valid = mm > 0
        z = frame.true_depth_m * 1000
        # valid depth is the scene's z-depth up to sensor noise (grows with z^2)
        err = np.abs(mm[valid] - z[valid])
        assert np.quantile(err / (2 + 0.006 * (z[valid] / 1000) ** 2 * 1000), 0.99) < 1.0
        # beyond the sensor's range nothing is returned
        assert (mm[z > sunrgbd.SENSORS[sample.sensor].max_range_m * 1000 + 50] == 0).all()

        scene = sample.room.scene
        labels = frame.labels
        # the floor recedes towards the horizon: its depth grows as rows go up
        floor = labels == scene.index_of("floor")[0]
        rows = [v for v in range(labels.shape[0]) if (floor[v] & valid[v]).sum() > 30]
        med = np.array([np.median(mm[v][floor[v] & valid[v]]) for v in rows])
        assert len(rows) > 50 and np.corrcoef(rows, med)[0, 1] < -0.9

        # each object is nearer than the back wall behind it, and shows its own colour in the RGB
        back = next(t for t in scene.things if t.name == "back wall")
        cam = sample.camera
        wall_z = sc.cast(sc.Scene((back,)), cam.position, cam.world_dirs()).t * 1000
        for k, obj in zip(sample.room.object_indices, sample.room.objects):
            m = (labels == k) & valid
            if m.sum() < 200:
                continue
            checked_objects += 1
            assert (mm[m] < wall_z[m]).all()
            assert np.median(mm[m]) < np.median(wall_z[m]) - 300
            mean = rgb[labels == k].mean(axis=0)
            if obj.color in sc.CHROMATIC:
                chroma = {c: np.asarray(sc.PALETTE[c]) / sum(sc.PALETTE[c]) for c in sc.CHROMATIC}
                nearest = min(chroma, key=lambda c: np.abs(chroma[c] - mean / mean.sum()).sum())
                assert nearest == obj.color
            elif obj.color == "black":
                assert mean.max() < 50
        assert (mm == 0).any()  # realistic holes
    assert checked_objects >= 4


def test_sunrgbd_bit_rotation_round_trips():
    mm = np.array([0, 1, 500, 8191, 8192, 20000, 65535], np.uint16)
    raw = sunrgbd.encode_depth(mm)
    assert raw[2] == 4000 and raw[4] == 1  # 8192 << 3 overflows; its top bit comes back at bit 0
    np.testing.assert_array_equal(sunrgbd.decode_depth(raw), mm)


def test_sunrgbd_scans_as_a_source(sun_root):
    from pipelines.sources import create_source

    root, _ = sun_root
    result = create_source("sunrgbd", root).scan()
    assert not result.problems and len(result.rows) == 4
    fx = {r["sensor"]: r["fx"] for r in result.rows}
    for sensor, value in fx.items():
        assert value == pytest.approx(sunrgbd.SENSORS[sensor].fx)


# ------------------------------------------------------------------------------------------ LLVIP


def test_llvip_pairs_and_formats(llvip_root):
    root, files = llvip_root
    vis = sorted(str(p.relative_to(root / "visible")) for p in (root / "visible").rglob("*.jpg"))
    ir = sorted(str(p.relative_to(root / "infrared")) for p in (root / "infrared").rglob("*.jpg"))
    assert vis == ir and len(vis) == 2 and len(files) == 4
    for rel in vis:
        split, name = rel.split("/")
        assert len(name) == 10 and name[:2] == ("19" if split == "test" else "01")
        with Image.open(root / "visible" / rel) as im:
            assert (im.format, im.mode, im.size) == ("JPEG", "RGB", (1280, 1024))
            v = np.asarray(im)
        with Image.open(root / "infrared" / rel) as im:
            assert (im.mode, im.size) == ("RGB", (1280, 1024))
            t = np.asarray(im).astype(np.int16)
        assert np.abs(t[..., 0] - t[..., 1]).max() <= 2 and np.abs(t[..., 0] - t[..., 2]).max() <= 2
        assert v.mean() < 80  # night


def test_llvip_people_are_warm_and_registered(llvip_root):
    root, _ = llvip_root
    samples = [llvip.make_sample(SEED, i) for i in range(2)]
    for sample, name in zip(samples, llvip.file_names(samples)):
        frame = llvip.render_sample(sample)
        with Image.open(root / "infrared" / sample.split / f"{name}.jpg") as im:
            ir = np.asarray(im.convert("L")).astype(np.float64)
        assert np.abs(ir - frame.infrared).mean() < 3
        person = frame.person
        assert person.sum() > 500
        assert ir[person].mean() > ir[~person].mean() + 40
        # registered: the heat sits on the person pixels, not beside them
        ring = np.zeros_like(person)
        for dv, du in ((0, 12), (0, -12), (12, 0), (-12, 0)):
            ring |= np.roll(person, (dv, du), axis=(0, 1))
        ring &= ~person
        assert ir[person].mean() > ir[ring].mean() + 25


# ------------------------------------------------------------------------------------------ image-text


def test_captions_describe_what_is_drawn(caption_root):
    root, files = caption_root
    table = pl.read_parquet(root / "captions.parquet")
    assert table.columns == ["path", "caption"] and len(table) == 8
    assert "captions.parquet" in files
    for i, (path, text) in enumerate(table.iter_rows()):
        with Image.open(root / path) as im:
            assert im.format == "JPEG" and im.mode == "RGB"
        sample = image_text.make_sample(SEED, i)
        assert path == sample.path
        _, hit = image_text.render_sample(sample)
        seen = image_text.visible_objects(sample, hit)
        assert seen, "every sample shows at least one object"
        for s in seen:
            assert f"{s.obj.color} {s.obj.kind}" in text
        hidden = {f"{o.color} {o.kind}" for o in sample.room.objects} - {f"{s.obj.color} {s.obj.kind}" for s in seen}
        assert not any(h in text for h in hidden)
        if len(seen) == 2 and "to the left of" in text:
            left, right = (f"{s.obj.color} {s.obj.kind}" for s in seen)
            assert text.index(left) < text.index(right)


def test_image_text_scans_as_a_source(caption_root):
    from pipelines.sources import create_source

    root, _ = caption_root
    result = create_source("image-text", root).scan()
    assert not result.problems and len(result.rows) == 8


# ------------------------------------------------------------------------------------------ determinism


@pytest.mark.parametrize(
    "module, n, fixture",
    [(sunrgbd, 4, "sun_root"), (llvip, 2, "llvip_root"), (image_text, 8, "caption_root")],
)
def test_same_seed_same_bytes(module, n, fixture, request, tmp_path):
    root, _ = request.getfixturevalue(fixture)
    module.write(tmp_path, n, SEED)
    assert _digest(tmp_path) == _digest(root)


def test_other_seed_other_content(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    image_text.write(a, 2, 0)
    image_text.write(b, 2, 1)
    assert _digest(a)["images/000000000001.jpg"] != _digest(b)["images/000000000001.jpg"]


def test_sample_does_not_depend_on_n():
    assert sunrgbd.make_sample(3, 2) == sunrgbd.make_sample(3, 2)
    assert image_text.make_sample(3, 5).room == image_text.make_sample(3, 5).room
    x = math.fsum(sunrgbd.render_sample(sunrgbd.make_sample(3, 1)).true_depth_m.ravel()[:1000])
    assert math.isfinite(x)
