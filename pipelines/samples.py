"""One manifest row -> the compact arrays and index fields of one stored sample.

Each modality is one small function: read the file (inside its declared root), call the pure
preprocessing ops, and return arrays keyed ``<modality>/<name>`` plus index fields. Any failure is a
``SampleError`` carrying the stage and the input path, so the build records a reject and goes on.
"""

from __future__ import annotations

import contextvars
import errno
from typing import Any, Sequence

import numpy as np

from pipelines import faults
from pipelines.config import BuildConfig
from pipelines.sample_record import ProcessedSample, SampleError, _stage
from pipelines.sources.base import resolve_inside
from preprocess.crops import CropBox, center_crop_box, check_same_aspect
from preprocess.depth import crop_depth, decode_depth_png, depth_to_disparity
from preprocess.image import crop_rgb, decode_image_pil
from preprocess.text import tokenize
from preprocess.thermal import crop_thermal, decode_thermal

_PREFETCH: contextvars.ContextVar["InputPrefetch | None"] = contextvars.ContextVar("bindset_prefetch", default=None)


def _fetch(row: dict[str, Any], uri_column: str) -> bytes:
    faults.check_io("read", row[uri_column])
    return resolve_inside(row["root"], row[uri_column]).read_bytes()  # a local root or a URL prefix


# errnos of failures that may pass on another attempt (a flaky disk, NFS or network)
_TRANSIENT_ERRNOS = {
    errno.EIO,
    errno.EAGAIN,
    errno.ETIMEDOUT,
    errno.ECONNRESET,
    errno.ECONNREFUSED,
    errno.ECONNABORTED,
    errno.EHOSTUNREACH,
    errno.ENETUNREACH,
    errno.EINTR,
    errno.EBUSY,
    errno.ESTALE,
}


def is_transient(error: BaseException | str) -> bool:
    """Whether a reject's cause may pass on a retry (``bindset build --retry-rejects``): I/O errors,
    timeouts, connection and object-store errors. Missing files, paths outside the root, permission
    problems and everything a decoder or a check raises are permanent."""
    from storage.location import StoreError

    if not isinstance(error, BaseException):
        return False
    if isinstance(error, (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError, ValueError)):
        return False
    if isinstance(error, (TimeoutError, ConnectionError, InterruptedError, StoreError)):
        return True
    return isinstance(error, OSError) and error.errno in _TRANSIENT_ERRNOS


class InputPrefetch:
    """Reads the input files of the next ``ahead`` rows on a few threads while the current sample
    decodes. Only for sources on object stores, where each file is a request with tens of ms of
    latency that would otherwise sit on the decode path; a local read costs microseconds."""

    COLUMNS = ("uri_image", "uri_depth", "uri_thermal")

    def __init__(self, rows: Sequence[dict[str, Any]], ahead: int = 8, threads: int = 4):
        from concurrent.futures import ThreadPoolExecutor

        self.rows = list(rows)
        self.ahead = ahead
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="bindset-prefetch")
        self._futures: dict[tuple[str, str], Any] = {}
        self._next = 0

    def advance(self, position: int) -> None:
        """Row ``position`` is next: keep the ``ahead`` rows from it in flight."""
        while self._next < min(len(self.rows), position + self.ahead):
            row = self.rows[self._next]
            for column in self.COLUMNS:
                if row.get(column):
                    self._futures[(row["sample_id"], column)] = self._pool.submit(_fetch, row, column)
            self._next += 1

    def take(self, row: dict[str, Any], uri_column: str) -> bytes | None:
        future = self._futures.pop((row.get("sample_id"), uri_column), None)
        return None if future is None else future.result()  # re-raises the fetch's error here

    def __enter__(self) -> "InputPrefetch":
        self._token = _PREFETCH.set(self)
        return self

    def __exit__(self, *exc) -> None:
        _PREFETCH.reset(self._token)
        for future in self._futures.values():
            future.cancel()
        self._pool.shutdown(wait=True)


def read_input(row: dict[str, Any], uri_column: str) -> tuple[bytes, str]:
    """Bytes of a row's file, refusing paths outside the row's root; errors are stage "read"."""
    rel = row[uri_column]
    prefetch = _PREFETCH.get()
    try:
        data = prefetch.take(row, uri_column) if prefetch is not None else None
        if data is None:
            data = _fetch(row, uri_column)
    except (OSError, ValueError) as exc:
        raise SampleError("read", exc, rel) from exc
    if not data:
        raise SampleError("read", ValueError(f"{rel} is empty (0 bytes)"), rel)
    return data, rel


def _image(row, cfg: BuildConfig, out: ProcessedSample) -> tuple[CropBox, tuple[int, int]]:
    data, rel = read_input(row, "uri_image")
    rgb = _stage("decode", rel, decode_image_pil, data)  # stays a Pillow image: no full-frame copy
    box = center_crop_box(rgb.height, rgb.width, cfg.image.size)
    pixels = _stage("preprocess", rel, crop_rgb, rgb, box, cfg.image)
    out.add(
        "image",
        {"pixels": pixels},
        crop_y0=box.y0,
        crop_x0=box.x0,
        crop_y1=box.y1,
        crop_x1=box.x1,
        q_image_mean=float(pixels.mean() / 255.0),
    )
    return box, (rgb.height, rgb.width)


def _depth(row, cfg: BuildConfig, box: CropBox, rgb_hw, out: ProcessedSample) -> None:
    data, rel = read_input(row, "uri_depth")
    depth_m = _stage("decode", rel, decode_depth_png, data, row.get("depth_encoding") or "sunrgbd")
    _stage("preprocess", rel, check_same_aspect, "depth", depth_m.shape[:2], rgb_hw)
    disparity, valid = _stage("preprocess", rel, depth_to_disparity, depth_m, row["fx"], row["baseline_m"], cfg.depth)
    disp_crop, valid_crop = _stage("preprocess", rel, crop_depth, disparity, valid, box, cfg.depth)
    fraction = float(valid_crop.mean())
    if fraction == 0.0:
        raise SampleError("preprocess", ValueError(f"{rel}: no valid depth pixel inside the crop"), rel)
    out.add(
        "depth",
        # float16 disparity: 11 bits of mantissa are finer than any consumer depth sensor's noise.
        {"disparity": disp_crop.astype(np.float16), "valid": valid_crop.astype(bool)},
        q_depth_valid_fraction=fraction,
    )


def _thermal(row, cfg: BuildConfig, box: CropBox, rgb_hw, out: ProcessedSample) -> None:
    data, rel = read_input(row, "uri_thermal")
    t01 = _stage("decode", rel, decode_thermal, data, cfg.thermal)
    _stage("preprocess", rel, check_same_aspect, "thermal", t01.shape[:2], rgb_hw)
    crop = _stage("preprocess", rel, crop_thermal, t01, box, cfg.thermal)
    lo, hi = np.percentile(crop, [1, 99])
    out.add("thermal", {"intensity": crop.astype(np.float16)}, q_thermal_dynamic_range=float(hi - lo))


def _text(row, cfg: BuildConfig, out: ProcessedSample) -> None:
    tokens = _stage("preprocess", "", tokenize, [row["caption"]], cfg.text)
    out.add("text", {"tokens": tokens[0].astype(np.int32)})


def process_sample(row: dict[str, Any], cfg: BuildConfig) -> ProcessedSample:
    """All modalities of one manifest row; raises SampleError on the first bad input."""
    out = ProcessedSample()
    box = rgb_hw = None
    if row.get("uri_image"):
        box, rgb_hw = _image(row, cfg, out)
    for modality, fn in (("depth", _depth), ("thermal", _thermal)):
        if row.get(f"uri_{modality}"):
            if box is None:
                # Unpaired depth/thermal: crop it on its own frame.
                raise SampleError(
                    "preprocess", ValueError(f"{modality} without an RGB partner"), row[f"uri_{modality}"]
                )
            fn(row, cfg, box, rgb_hw, out)
    if row.get("caption") and row.get("layout") in ("image-text", "generic"):
        _text(row, cfg, out)
    if row.get("uri_video") or row.get("uri_audio") or row.get("uri_imu"):
        from pipelines.temporal import process_temporal  # imported lazily: PyAV only when needed

        process_temporal(row, cfg, out)
    if not out.modalities:
        raise SampleError("preprocess", ValueError("row has no modality to store"), "")
    missing = missing_partners(row.get("layout"), out.modalities)
    if missing and not cfg.keep_partial:
        rel = next((row[c] for c in ("uri_video", "uri_image", "uri_audio", "uri_imu") if row.get(c)), "")
        reason = "; ".join(_MISSING_REASON.get(m, f"no {m}") for m in missing)
        raise SampleError(
            "partner",
            MissingPartner(
                f"{reason} in {rel} (layout {row.get('layout')} pairs {' and '.join(_partners(row.get('layout')))})"
            ),
            rel,
        )
    return out


class MissingPartner(ValueError):
    """A source item lacks a modality its layout pairs (a video without an audio stream...)."""


_MISSING_REASON = {
    "audio": "no audio stream",
    "video": "no video stream",
    "imu": "no IMU data",
    "depth": "no depth map",
    "thermal": "no thermal image",
    "image": "no image",
    "text": "no caption",
}


def _partners(layout: str | None) -> tuple[str, ...]:
    from pipelines.sources import SOURCE_TYPES

    cls = SOURCE_TYPES.get(layout or "")
    return cls.partners if cls is not None else ()


def missing_partners(layout: str | None, modalities: list[str]) -> list[str]:
    """The partners of ``layout`` a processed sample lacks (none for layouts without partners)."""
    return [m for m in _partners(layout) if m not in modalities]
