"""``bindset preprocess``: the model-ready tensor of one file, exactly what an encoder would see."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipelines.config import BuildConfig


def _fx_and_baseline(sensor: str, fx: float | None, intrinsics: Path | None, baseline: float | None):
    from preprocess.depth import SENSOR_BASELINE_M, SENSOR_FX, read_intrinsics

    if sensor not in SENSOR_FX:
        raise ValueError(f"unknown sensor {sensor!r}; choose one of {sorted(SENSOR_FX)} or pass --fx and --baseline")
    if intrinsics is not None:
        fx = float(read_intrinsics(Path(intrinsics).read_text())[0, 0])
    return (
        fx if fx is not None else SENSOR_FX[sensor],
        baseline if baseline is not None else SENSOR_BASELINE_M[sensor],
    )


def model_input_for_file(
    path: Path,
    modality: str,
    config: BuildConfig | None = None,
    *,
    depth_encoding: str = "sunrgbd",
    sensor: str = "kv1",
    fx: float | None = None,
    intrinsics: Path | None = None,
    baseline: float | None = None,
    rgb_size: tuple[int, int] | None = None,
    anchor_s: float | None = None,
    imu_preset: str = "imagebind",
) -> np.ndarray:
    config = config or BuildConfig()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    if modality == "image":
        from preprocess.image import image_model_input

        return image_model_input(path.read_bytes(), config.image)
    if modality == "depth":
        from preprocess.depth import depth_model_input

        fx_, baseline_ = _fx_and_baseline(sensor, fx, intrinsics, baseline)
        return depth_model_input(path.read_bytes(), depth_encoding, fx_, baseline_, config.depth, rgb_size=rgb_size)
    if modality == "thermal":
        from preprocess.thermal import thermal_model_input

        return thermal_model_input(path.read_bytes(), config.thermal, rgb_size=rgb_size)
    if modality == "audio":
        from preprocess.audio import audio_model_input

        return audio_model_input(path, config.audio)[0]
    if modality == "video":
        from preprocess.video import video_model_input

        return video_model_input(path, config.video)[0]
    if modality == "imu":
        from preprocess.imu import ImuConfig, imu_window, parse_ego4d_imu_csv

        cfg = ImuConfig.imu2clip() if imu_preset == "imu2clip" else ImuConfig.imagebind()
        series = parse_ego4d_imu_csv(path)
        anchor = anchor_s if anchor_s is not None else float((series.times_s[0] + series.times_s[-1]) / 2)
        return imu_window(series, anchor, cfg)[0]
    return _registered_model_input(path, modality, config)


def _registered_model_input(path: Path, modality: str, config: BuildConfig) -> np.ndarray:
    """A modality registered outside the package: its own decode and preprocess, a spatial one
    centre-cropped on its own frame (there is no RGB partner here), then its ``model_ready``."""
    from preprocess.crops import center_crop_box
    from preprocess.registry import SpatialFrame, get_modality

    spec = get_modality(modality)
    if spec.kind != "spatial" or spec.joint:
        raise ValueError(f"bindset preprocess handles registered spatial modalities only, not {modality!r}")
    cfg = config.section(modality)
    decoded = spec.decode(path.read_bytes(), cfg, {})
    height, width = (decoded.height, decoded.width) if hasattr(decoded, "height") else np.shape(decoded)[:2]
    box = center_crop_box(height, width, getattr(cfg, "size", 224))
    built = spec.preprocess(decoded, cfg, {}, SpatialFrame(box, height, width))
    stored = {f"{modality}/{k}": v for k, v in built.arrays.items()}
    return spec.model_ready(stored, cfg)[modality]
