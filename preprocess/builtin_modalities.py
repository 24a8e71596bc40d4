"""The seven modalities of ImageBind as registry entries (``preprocess.registry``).

Each entry only wires the pure functions of its own module (``preprocess.image``, ``.depth``...)
into the registry's roles. Modules that pull in torch or PyAV (audio, video, text) are imported
inside the functions, so reading the registry stays cheap.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from preprocess.registry import BuiltModality, ModalitySpec, Preview, SpatialFrame, StoredArray, register_modality

# -- image: the anchor ------------------------------------------------------------------------------


def _image_config():
    from preprocess.image import ImageConfig

    return ImageConfig()


def _image_decode(data: bytes, cfg, row: dict):
    from preprocess.image import decode_image_pil

    return decode_image_pil(data)  # stays a Pillow image: no full-frame copy


def _image_preprocess(rgb, cfg, row: dict, frame: SpatialFrame | None) -> BuiltModality:
    from preprocess.crops import center_crop_box
    from preprocess.image import crop_rgb

    box = center_crop_box(rgb.height, rgb.width, cfg.size)
    pixels = crop_rgb(rgb, box, cfg)
    fields = {
        "crop_y0": box.y0,
        "crop_x0": box.x0,
        "crop_y1": box.y1,
        "crop_x1": box.x1,
        "q_image_mean": float(pixels.mean() / 255.0),
    }
    return BuiltModality({"pixels": pixels}, fields, SpatialFrame(box, rgb.height, rgb.width))


def _image_ready(stored: Mapping[str, np.ndarray], cfg) -> dict[str, np.ndarray]:
    from preprocess.image import normalize_rgb

    return {"image": normalize_rgb(stored["image/pixels"], cfg)}


# -- depth -------------------------------------------------------------------------------------------


def _depth_config():
    from preprocess.depth import DepthConfig

    return DepthConfig()


def _depth_decode(data: bytes, cfg, row: dict):
    from preprocess.depth import decode_depth_png

    return decode_depth_png(data, row.get("depth_encoding") or "sunrgbd")


def _depth_preprocess(depth_m, cfg, row: dict, frame: SpatialFrame) -> BuiltModality:
    from preprocess.crops import check_same_aspect
    from preprocess.depth import crop_depth, depth_to_disparity

    check_same_aspect("depth", depth_m.shape[:2], (frame.height, frame.width))
    disparity, valid = depth_to_disparity(depth_m, row["fx"], row["baseline_m"], cfg)
    disp_crop, valid_crop = crop_depth(disparity, valid, frame.box, cfg)
    fraction = float(valid_crop.mean())
    if fraction == 0.0:
        raise ValueError("no valid depth pixel inside the crop")
    # float16 disparity: 11 bits of mantissa are finer than any consumer depth sensor's noise.
    arrays = {"disparity": disp_crop.astype(np.float16), "valid": valid_crop.astype(bool)}
    return BuiltModality(arrays, {"q_depth_valid_fraction": fraction})


def _depth_ready(stored: Mapping[str, np.ndarray], cfg) -> dict[str, np.ndarray]:
    from preprocess.depth import normalize_depth

    return {
        "depth": normalize_depth(stored["depth/disparity"], stored["depth/valid"], cfg),
        "depth_valid": np.asarray(stored["depth/valid"]).astype(bool),
    }


def _depth_preview(stored: Mapping[str, np.ndarray]) -> Preview:
    disparity = np.asarray(stored["depth/disparity"])[0].astype(np.float32)
    valid = np.asarray(stored["depth/valid"])[0].astype(bool)
    lo, hi = np.percentile(disparity[valid], [1, 99]) if valid.any() else (0.0, 1.0)
    return Preview(disparity, "turbo", float(lo), float(max(hi, lo + 1e-6)), valid, "disparity (px)")


# -- thermal -----------------------------------------------------------------------------------------


def _thermal_config():
    from preprocess.thermal import ThermalConfig

    return ThermalConfig()


def _thermal_decode(data: bytes, cfg, row: dict):
    from preprocess.thermal import decode_thermal

    return decode_thermal(data, cfg)


def _thermal_preprocess(t01, cfg, row: dict, frame: SpatialFrame) -> BuiltModality:
    from preprocess.crops import check_same_aspect
    from preprocess.thermal import crop_thermal

    check_same_aspect("thermal", t01.shape[:2], (frame.height, frame.width))
    crop = crop_thermal(t01, frame.box, cfg)
    lo, hi = np.percentile(crop, [1, 99])
    return BuiltModality({"intensity": crop.astype(np.float16)}, {"q_thermal_dynamic_range": float(hi - lo)})


def _thermal_ready(stored: Mapping[str, np.ndarray], cfg) -> dict[str, np.ndarray]:
    from preprocess.thermal import normalize_thermal

    return {"thermal": normalize_thermal(stored["thermal/intensity"], cfg)}


def _thermal_preview(stored: Mapping[str, np.ndarray]) -> Preview:
    return Preview(np.asarray(stored["thermal/intensity"])[0].astype(np.float32), "inferno", 0.0, 1.0, None, "[0,1]")


# -- text --------------------------------------------------------------------------------------------


def _text_config():
    from preprocess.text import TextConfig

    return TextConfig()


def _text_ready(stored: Mapping[str, np.ndarray], cfg) -> dict[str, np.ndarray]:
    return {"text": np.asarray(stored["text/tokens"]).astype(np.int64)}


# -- temporal: built together on one clock by pipelines.temporal -------------------------------------


def _video_config():
    from preprocess.video import VideoConfig

    return VideoConfig()


def _video_ready(stored: Mapping[str, np.ndarray], cfg) -> dict[str, np.ndarray]:
    mean = np.asarray(cfg.mean, np.float32).reshape(1, 3, 1, 1, 1)
    std = np.asarray(cfg.std, np.float32).reshape(1, 3, 1, 1, 1)
    pixels = np.asarray(stored["video/pixels"])  # [(batch,) clips*crops, 3, F, S, S] uint8
    # -> the reference's normalized clips (the constants broadcast from the right: batches too)
    return {"video": (pixels.astype(np.float32) / np.float32(255.0) - mean) / std}


def _audio_config():
    from preprocess.audio import AudioConfig

    return AudioConfig()


def _audio_ready(stored: Mapping[str, np.ndarray], cfg) -> dict[str, np.ndarray]:
    from preprocess.audio import normalize_log_mel

    return {"audio": normalize_log_mel(np.asarray(stored["audio/log_mel"]).astype(np.float32), cfg)}


def _imu_config():
    from preprocess.imu import ImuConfig

    return ImuConfig()


def _imu_ready(stored: Mapping[str, np.ndarray], cfg) -> dict[str, np.ndarray]:
    return {
        "imu": np.asarray(stored["imu/values"]).astype(np.float32),
        "imu_valid": np.asarray(stored["imu/valid"]).astype(bool),
    }


BUILTIN: tuple[ModalitySpec, ...] = (
    ModalitySpec(
        name="image",
        kind="spatial",
        stored=(StoredArray("pixels", "uint8", "[3,S,S]"),),
        config=_image_config,
        model_ready=_image_ready,
        decode=_image_decode,
        preprocess=_image_preprocess,
        anchor=True,
        crop_resample="bicubic",
        quality={"q_image_mean": "mean RGB intensity [0,1]"},
        missing_reason="no image",
    ),
    ModalitySpec(
        name="depth",
        kind="spatial",
        stored=(StoredArray("disparity", "float16", "[1,S,S]"), StoredArray("valid", "bool", "[1,S,S]")),
        config=_depth_config,
        model_ready=_depth_ready,
        decode=_depth_decode,
        preprocess=_depth_preprocess,
        mask="valid",
        crop_resample="nearest",
        quality={"q_depth_valid_fraction": "valid depth pixel fraction"},
        preview=_depth_preview,
        missing_reason="no depth map",
        temperature=0.2,
    ),
    ModalitySpec(
        name="thermal",
        kind="spatial",
        stored=(StoredArray("intensity", "float16", "[1,S,S]"),),
        config=_thermal_config,
        model_ready=_thermal_ready,
        decode=_thermal_decode,
        preprocess=_thermal_preprocess,
        crop_resample="bicubic",
        crop_clip=(0.0, 1.0),
        quality={"q_thermal_dynamic_range": "thermal p99 - p1 [0,1]"},
        preview=_thermal_preview,
        missing_reason="no thermal image",
        temperature=0.1,
    ),
    ModalitySpec(
        name="text",
        kind="text",
        stored=(StoredArray("tokens", "int32", "[77]"),),
        config=_text_config,
        model_ready=_text_ready,
        file_backed=False,
        missing_reason="no caption",
    ),
    ModalitySpec(
        name="video",
        kind="temporal",
        stored=(StoredArray("pixels", "uint8", "[clips*crops,3,F,S,S]"),),
        config=_video_config,
        model_ready=_video_ready,
        joint=True,
        quality={"q_clip_coverage": "clip coverage of the media"},
        missing_reason="no video stream",
    ),
    ModalitySpec(
        name="audio",
        kind="temporal",
        stored=(StoredArray("log_mel", "float16", "[clips,1,mel,frames]"),),
        config=_audio_config,
        model_ready=_audio_ready,
        joint=True,
        quality={"q_audio_silence_fraction": "silent audio fraction"},
        missing_reason="no audio stream",
        temperature=0.05,
    ),
    ModalitySpec(
        name="imu",
        kind="temporal",
        stored=(StoredArray("values", "float32", "[6,T]"), StoredArray("valid", "bool", "[T]")),
        config=_imu_config,
        model_ready=_imu_ready,
        joint=True,
        mask="valid",
        quality={
            "q_imu_gap_fraction": "IMU gap fraction",
            "q_imu_saturation_fraction": "IMU saturation fraction",
        },
        missing_reason="no IMU data",
        temperature=0.2,
    ),
)

for _spec in BUILTIN:
    register_modality(_spec)
