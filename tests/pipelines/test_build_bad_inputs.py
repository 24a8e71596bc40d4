"""Bad inputs end in rejects (or manifest problems) with their reason; every good sample is stored."""

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image

import storage
from pipelines.build import build_dataset
from pipelines.config import BuildConfig
from pipelines.sources import create_source


def _jpeg(path: Path, h: int, w: int, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path, quality=90)


def _sun_png(path: Path, mm: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    mm = mm.astype(np.uint16)
    Image.fromarray(((mm << 3) | (mm >> 13)).astype(np.uint16)).save(path)


def _sun_scene(root: Path, name: str, depth_hw=(120, 160), mm_value=2000, rgb_hw=(120, 160)) -> Path:
    scene = root / "kv1" / "NYUdata" / name
    _jpeg(scene / "image" / f"{name}.jpg", *rgb_hw, seed=hash(name) % 1000)
    _sun_png(scene / "depth" / f"{name}.png", np.full(depth_hw, mm_value))
    (scene / "intrinsics.txt").write_text("520.5 0 80\n0 520.5 60\n0 0 1\n")
    return scene


def test_sunrgbd_bad_inputs_are_rejected_with_reasons(tmp_path):
    src = tmp_path / "sun"
    good = [_sun_scene(src, f"GOOD{i}") for i in range(3)]
    corrupt = _sun_scene(src, "CORRUPT")
    jpg = corrupt / "image" / "CORRUPT.jpg"
    jpg.write_bytes(jpg.read_bytes()[:200])  # truncated JPEG
    empty = _sun_scene(src, "EMPTYPNG")
    (empty / "depth" / "EMPTYPNG.png").write_bytes(b"")
    _sun_scene(src, "WRONGSIZE", depth_hw=(40, 160))  # aspect differs from the RGB
    _sun_scene(src, "ALLZERO", mm_value=0)
    unpaired = src / "kv1" / "NYUdata" / "NODEPTH"
    _jpeg(unpaired / "image" / "NODEPTH.jpg", 120, 160, 5)
    (unpaired / "intrinsics.txt").write_text("520.5 0 80\n0 520.5 60\n0 0 1\n")

    report = build_dataset([create_source("sunrgbd", src)], tmp_path / "ds", BuildConfig(shard_size=3), progress=False)

    index = storage.scan_index(tmp_path / "ds").collect()
    stored_ids = set(index["uri_image"].to_list())
    assert stored_ids == {f"kv1/NYUdata/{g.name}/image/{g.name}.jpg" for g in good}
    rejects = storage.scan_rejects(tmp_path / "ds").collect()
    by_path = {p: (s, m) for p, s, m in zip(rejects["input_path"], rejects["stage"], rejects["message"])}
    assert by_path["kv1/NYUdata/CORRUPT/image/CORRUPT.jpg"][0] == "decode"
    assert "empty" in by_path["kv1/NYUdata/EMPTYPNG/depth/EMPTYPNG.png"][1]
    assert "aspect" in by_path["kv1/NYUdata/WRONGSIZE/depth/WRONGSIZE.png"][1]
    assert "no valid pixel" in by_path["kv1/NYUdata/ALLZERO/depth/ALLZERO.png"][1]
    assert by_path["kv1/NYUdata/NODEPTH/image/NODEPTH.jpg"][0] == "manifest"
    assert report.stored == 3 and report.rejected == 5


def test_llvip_missing_partner_reported_and_good_pairs_kept(tmp_path):
    src = tmp_path / "llvip"
    for name in ("010001", "010002"):
        _jpeg(src / "visible" / "train" / f"{name}.jpg", 128, 160, 1)
        _jpeg(src / "infrared" / "train" / f"{name}.jpg", 128, 160, 2)
    _jpeg(src / "visible" / "test" / "190001.jpg", 128, 160, 3)  # no infrared partner
    source = create_source("llvip", src)
    report = build_dataset([source], tmp_path / "ds", BuildConfig(shard_size=4), progress=False)
    assert report.stored == 2
    assert any("190001.jpg" in line and "1 unpaired" in line for line in report.manifest_problems)
    rejects = storage.scan_rejects(tmp_path / "ds").collect()
    assert rejects.filter(pl.col("stage") == "manifest")["input_path"].to_list() == ["visible/test/190001.jpg"]
    index = storage.scan_index(tmp_path / "ds").collect()
    assert sorted(index["modalities"].to_list()) == [["image", "thermal"]] * 2


def test_generic_table_refuses_paths_outside_root(tmp_path):
    root = tmp_path / "mine"
    _jpeg(root / "a.jpg", 64, 64, 1)
    _jpeg(tmp_path / "secret.jpg", 64, 64, 2)
    pl.DataFrame({"image": ["a.jpg", "../secret.jpg", "/etc/passwd"], "caption": ["a", "b", "c"]}).write_csv(
        root / "pairs.csv"
    )
    source = create_source("generic", root / "pairs.csv")
    report = build_dataset([source], tmp_path / "ds", BuildConfig(shard_size=4), progress=False)
    assert report.stored == 1
    rejects = storage.scan_rejects(tmp_path / "ds").collect()
    outside = rejects.filter(pl.col("error_type") == "outside_root")
    assert sorted(outside["input_path"].to_list()) == ["../secret.jpg", "/etc/passwd"]
    assert all("outside the declared root" in m for m in outside["message"])


def test_manifest_row_escaping_root_is_refused_at_read(tmp_path):
    from pipelines.samples import SampleError, read_input

    (tmp_path / "root").mkdir()
    (tmp_path / "outside.jpg").write_bytes(b"x")
    with pytest.raises(SampleError, match="outside the declared root"):
        read_input({"root": str(tmp_path / "root"), "uri_image": "../outside.jpg"}, "uri_image")
