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
from preprocess.registry import ModalitySpec, SpatialFrame, get_modality, modalities, uri_columns
from preprocess.text import tokenize

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
    from storage.object_store import StoreError

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

    def __init__(self, rows: Sequence[dict[str, Any]], ahead: int = 8, threads: int = 4):
        from concurrent.futures import ThreadPoolExecutor

        self.rows = list(rows)
        self.ahead = ahead
        # Spatial inputs are small files read whole; temporal media are fetched once per worker
        # (pipelines.temporal), seeked in place.
        self.columns = tuple(s.uri_column for s in modalities("spatial") if s.uri_column)
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="bindset-prefetch")
        self._futures: dict[tuple[str, str], Any] = {}
        self._next = 0

    def advance(self, position: int) -> None:
        """Row ``position`` is next: keep the ``ahead`` rows from it in flight."""
        while self._next < min(len(self.rows), position + self.ahead):
            row = self.rows[self._next]
            for column in self.columns:
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


def _spatial(row, cfg: BuildConfig, spec: ModalitySpec, frame: SpatialFrame | None, out: ProcessedSample):
    """One file-backed spatial modality: read, decode, preprocess (cropped with the anchor's frame)."""
    data, rel = read_input(row, spec.uri_column)
    config = cfg.section(spec.name)
    decoded = _stage("decode", rel, spec.decode, data, config, row)
    built = _stage("preprocess", rel, spec.preprocess, decoded, config, row, frame)
    out.add(spec.name, built.arrays, **built.fields)
    return built.frame


def _text(row, cfg: BuildConfig, out: ProcessedSample) -> None:
    tokens = _stage("preprocess", "", tokenize, [row["caption"]], cfg.text)
    out.add("text", {"tokens": tokens[0].astype(np.int32)})


# The temporal modalities pipelines.temporal builds on one clock; file-backed spatial ones are
# built by the registry's decode/preprocess, text from the row's caption.
TEMPORAL_BUILT = ("video", "audio", "imu")


def _has_build_step(spec: ModalitySpec) -> bool:
    return (spec.kind == "spatial" and not spec.joint) or spec.name in TEMPORAL_BUILT


def process_sample(row: dict[str, Any], cfg: BuildConfig) -> ProcessedSample:
    """All modalities of one manifest row; raises SampleError on the first bad input."""
    for spec in modalities():
        # A registered modality nothing here builds (a temporal or file-backed text plugin) would
        # otherwise be dropped from the sample without a word.
        if spec.uri_column and row.get(spec.uri_column) and not _has_build_step(spec):
            message = f"modality {spec.name!r} ({spec.kind}) has no build step: bindset builds spatial modalities "
            message += f"through the registry and the temporal ones {', '.join(TEMPORAL_BUILT)} on one clock"
            raise SampleError("preprocess", ValueError(message), row[spec.uri_column])
    out = ProcessedSample()
    frame: SpatialFrame | None = None
    spatial = [s for s in modalities("spatial") if s.uri_column and row.get(s.uri_column)]
    # The anchor (the image) first: its crop box is every spatial partner's.
    for spec in sorted(spatial, key=lambda s: not s.anchor):
        if not spec.anchor and frame is None:
            # Unpaired depth/thermal/...: there is no frame to crop it on.
            raise SampleError("preprocess", ValueError(f"{spec.name} without an RGB partner"), row[spec.uri_column])
        frame = _spatial(row, cfg, spec, frame, out) or frame
    if row.get("caption") and row.get("layout") in ("image-text", "generic"):
        _text(row, cfg, out)
    if any(row.get(s.uri_column) for s in modalities("temporal") if s.uri_column):
        from pipelines.temporal import process_temporal  # imported lazily: PyAV only when needed

        process_temporal(row, cfg, out)
    if not out.modalities:
        raise SampleError("preprocess", ValueError("row has no modality to store"), "")
    missing = missing_partners(row.get("layout"), out.modalities)
    if missing and not cfg.keep_partial:
        rel = next((row[c] for c in ("uri_video", *uri_columns().values()) if row.get(c)), "")
        reason = "; ".join(get_modality(m).missing_reason or f"no {m}" for m in missing)
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


def _partners(layout: str | None) -> tuple[str, ...]:
    from pipelines.sources import SOURCE_TYPES

    cls = SOURCE_TYPES.get(layout or "")
    return cls.partners if cls is not None else ()


def missing_partners(layout: str | None, modalities: list[str]) -> list[str]:
    """The partners of ``layout`` a processed sample lacks (none for layouts without partners)."""
    return [m for m in _partners(layout) if m not in modalities]
