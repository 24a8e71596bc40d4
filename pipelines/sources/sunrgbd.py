"""SUN RGB-D toolbox layout: ``<sensor>/.../<scene>/{image/*.jpg, depth/*.png, intrinsics.txt}``."""

from __future__ import annotations

import io
from pathlib import Path

import polars as pl

from pipelines.sources.base import Problem, ScanResult, Source
from preprocess.depth import SENSOR_BASELINE_M, SENSOR_FX, read_intrinsics


class SunRgbdSource(Source):
    layout = "sunrgbd"
    looks_for = "<scene>/image/*.jpg with <scene>/depth/*.png (and intrinsics.txt)"
    partners = ("image", "depth")

    def __init__(self, root, name=None, split=None, depth_dir: str = "depth", split_file: str = "splits.csv"):
        super().__init__(root, name, split)
        # ImageBind trained on the in-filled ``depth_bfx``; raw ``depth`` is the toolbox default.
        self.depth_dir = depth_dir
        self.split_file = split_file

    def scan(self) -> ScanResult:
        result = ScanResult()
        splits = self._read_splits()
        for image_dir in sorted(self.root.rglob("image")):
            if not image_dir.is_dir():
                continue
            scene = image_dir.parent
            scene_rel = self.rel(scene)
            images = sorted(image_dir.glob("*.jpg"))
            depths = sorted((scene / self.depth_dir).glob("*.png"))
            if not images:
                result.problems.append(Problem("missing", scene_rel, f"{scene_rel}: image/ holds no .jpg"))
                continue
            if not depths:
                result.problems.append(
                    Problem(
                        "unpaired", self.rel(images[0]), f"{scene_rel}: no {self.depth_dir}/*.png for {images[0].name}"
                    )
                )
                continue
            sensor = self._sensor(scene)
            fx = self._fx(scene, sensor, result)
            if fx is None:
                continue
            baseline = SENSOR_BASELINE_M.get(sensor or "", SENSOR_BASELINE_M["kv1"])
            split = splits.get(scene_rel) or self.default_split or "train"
            result.rows.append(
                self.row(
                    {"image": self.rel(images[0]), "depth": self.rel(depths[0])},
                    split,
                    sensor=sensor,
                    fx=fx,
                    baseline_m=baseline,
                    depth_encoding="sunrgbd",
                )
            )
        return result

    def _sensor(self, scene: Path) -> str | None:
        for part in scene.relative_to(self.root).parts:
            if part in SENSOR_BASELINE_M:
                return part
        return None

    def _fx(self, scene: Path, sensor: str | None, result: ScanResult) -> float | None:
        intrinsics = scene / "intrinsics.txt"
        if intrinsics.is_file():
            try:
                return float(read_intrinsics(intrinsics.read_text())[0, 0])
            except ValueError as exc:
                result.problems.append(Problem("unreadable", self.rel(intrinsics), str(exc)))
                return None
        if sensor in SENSOR_FX:
            return float(SENSOR_FX[sensor])
        result.problems.append(
            Problem(
                "missing", self.rel(scene), f"{self.rel(scene)}: no intrinsics.txt and no known sensor folder for fx"
            )
        )
        return None

    def _read_splits(self) -> dict[str, str]:
        path = self.root / self.split_file
        if not path.is_file():
            return {}
        table = pl.read_csv(io.BytesIO(path.read_bytes()))  # local or remote: a small file
        if "split" not in table.columns:
            raise ValueError(f"{path} needs a 'split' column, has {table.columns}")
        scene_col = next(c for c in table.columns if c != "split")
        return {str(Path(s).as_posix()).strip("/"): sp for s, sp in zip(table[scene_col], table["split"])}
