"""Shard writer: HDF5 tensors + Parquet index + Parquet rejects of one shard (see ``storage.shard``).

The writer follows an explicit lifecycle (``open`` -> ``write``/``reject`` -> ``commit`` or ``abort``),
like Ray Data's Datasink. Everything is written to a staging directory first (``_tmp/`` inside a local
dataset, a worker-private temp directory for a dataset on an object store); ``commit`` publishes the
HDF5 file, then the rejects, and the index last: a shard is committed exactly when its index exists.
On disk publishing is fsync + atomic rename; on an object store it is one upload per object, each
atomic (a multipart upload stays invisible until complete). A crash at any point leaves either no
index, so nothing a reader or a resume counts as data (at most a complete but uncommitted shard
object the rerun overwrites with the same bytes), or a complete shard. The index carries the shard
file's size and sha256 in its Parquet metadata, so a reader or a resuming driver can check a shard
without downloading it first.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import polars as pl

from storage import format as fmt
from storage.atomic import sha256_file
from storage.location import Location, as_location, is_remote, publish_file
from storage.schema import index_frame, reject_frame
from storage.shard_meta import (
    shard_file_metadata,
)


@dataclass(frozen=True)
class ShardSummary:
    """What a shard build returns to the driver: small, never pixels."""

    shard_id: int
    stored: int
    rejected: int
    reject_reasons: dict[str, int]
    shard_sha256: str
    index_sha256: str
    bytes_written: int
    node_id: str = ""
    seconds: float = 0.0
    partial: int = 0  # stored samples missing a partner of their layout (kept by keep_partial)

    def to_dict(self) -> dict[str, Any]:
        return {
            "shard_id": self.shard_id,
            "stored": self.stored,
            "rejected": self.rejected,
            "reject_reasons": dict(self.reject_reasons),
            "shard_sha256": self.shard_sha256,
            "index_sha256": self.index_sha256,
            "bytes_written": self.bytes_written,
            "node_id": self.node_id,
            "seconds": self.seconds,
            "partial": self.partial,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ShardSummary":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


class ShardWriter:
    """Writes one shard. Arrays are keyed ``"<group>/<name>"`` (e.g. ``"image/pixels"``).

    Datasets are created on first use with the shape and dtype of that first array, preallocated to
    ``capacity`` rows, chunked one sample per chunk (random access by the loader reads one chunk),
    and trimmed to the rows written at commit. A row missing a key keeps zeros there; the index's
    ``modalities`` column says what each row really holds.
    """

    def __init__(self, root: str | Path | Location, shard_id: int, capacity: int):
        if capacity <= 0:
            raise ValueError(f"shard capacity must be positive, got {capacity}")
        self.root = as_location(root)
        self.shard_id = shard_id
        self.capacity = capacity
        self._tmp_dir: Path | None = None
        self._h5: h5py.File | None = None
        self._rows: list[dict[str, Any]] = []
        self._rejects: list[dict[str, Any]] = []
        self._dsets: dict[str, h5py.Dataset] = {}  # kept open: see commit()
        self._guard: _WriteGuard | None = None

    # -- lifecycle -------------------------------------------------------------------------------
    def open(self) -> "ShardWriter":
        name = fmt.shard_name(self.shard_id)
        if is_remote(self.root):
            # Object stores have no rename: stage on the worker's disk, upload at commit.
            self._tmp_dir = Path(tempfile.mkdtemp(prefix=f"bindset-shard-{name}-"))
        else:
            self._tmp_dir = self.root / fmt.TMP_DIR / f"{name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            self._tmp_dir.mkdir(parents=True)
        # track_order off and no timestamps: same inputs must give byte-identical files.
        with self._writing(self._h5_path()):
            self._guard = _WriteGuard(self._h5_path())
            self._h5 = _new_h5(self._guard)
            self._h5.attrs["format_version"] = fmt.FORMAT_VERSION
            self._h5.attrs["shard_id"] = self.shard_id
        return self

    def __enter__(self) -> "ShardWriter":
        return self.open() if self._h5 is None else self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()

    def write(self, arrays: dict[str, np.ndarray], index_row: dict[str, Any]) -> int:
        """Store one sample; returns its row number in the shard."""
        h5 = self._require_open()
        row = len(self._rows)
        if row >= self.capacity:
            raise ValueError(f"shard {self.shard_id} is full ({self.capacity} rows)")
        for key, value in arrays.items():
            value = np.asarray(value)
            dset = self._dsets.get(key)
            if dset is None:
                with self._writing(self._h5_path()):
                    dset = self._dsets[key] = _create_chunked(h5, key, (self.capacity, *value.shape), value.dtype)
            if dset.shape[1:] != value.shape or dset.dtype != value.dtype:
                raise ValueError(
                    f"sample {index_row.get('sample_id')!r}: {key} has shape {value.shape} {value.dtype}, "
                    f"shard expects {dset.shape[1:]} {dset.dtype}"
                )
            with self._writing(self._h5_path()):
                dset[row] = value
        self._rows.append({**index_row, "shard": self.shard_id, "row": row})
        return row

    def _h5_path(self) -> Path:
        assert self._tmp_dir is not None
        return self._tmp_dir / f"{fmt.shard_name(self.shard_id)}.h5"

    @contextlib.contextmanager
    def _writing(self, path: Path | Location):
        """Any failure to write (no space, file too large, I/O or object-store error) becomes one
        ShardWriteError naming the shard, the file and the OS reason."""
        try:
            yield
        except ShardWriteError:
            raise
        except (OSError, RuntimeError, pl.exceptions.PolarsError) as exc:
            cause = self._guard.error if self._guard is not None and self._guard.error else exc
            raise ShardWriteError(self.shard_id, path, cause) from exc
        if self._guard is not None and self._guard.error is not None:
            raise ShardWriteError(self.shard_id, path, self._guard.error)

    def reject(
        self, sample_id: str, stage: str, error: BaseException | str, input_path: str = "", transient: bool = False
    ) -> None:
        error_type = type(error).__name__ if isinstance(error, BaseException) else "Rejected"
        self._rejects.append(
            {
                "sample_id": sample_id,
                "shard": self.shard_id,
                "stage": stage,
                "error_type": error_type,
                "message": str(error),
                "input_path": input_path,
                "transient": transient,
            }
        )

    def commit(self) -> ShardSummary:
        h5 = self._require_open()
        n = len(self._rows)
        h5_path = self._h5_path()
        with self._writing(h5_path):
            # HDF5 writes chunks back lazily; a failed write-back during close or garbage collection is
            # only printed ("Exception ignored"). Flushing while every handle is alive raises it here.
            h5.flush()
            self._dsets.clear()
            self._h5 = None
            h5.close()
            self._guard.close()
        tmp = self._tmp_dir
        assert tmp is not None
        name = fmt.shard_name(self.shard_id)
        h5_tmp = h5_path
        if n < self.capacity:
            with self._writing(h5_tmp):
                h5_tmp = _trim_h5(h5_tmp, n)
        shard_sha256, shard_bytes = sha256_file(h5_tmp), h5_tmp.stat().st_size
        index_tmp = tmp / f"{name}.index.parquet"
        with self._writing(index_tmp):
            index_frame(self._rows).write_parquet(
                index_tmp, statistics=True, metadata=shard_file_metadata(shard_sha256, shard_bytes)
            )
        rejects_tmp = tmp / f"{name}.rejects.parquet"
        with self._writing(rejects_tmp):
            reject_frame(self._rejects).write_parquet(rejects_tmp)

        summary = ShardSummary(
            shard_id=self.shard_id,
            stored=n,
            rejected=len(self._rejects),
            reject_reasons=_count_reasons(self._rejects),
            shard_sha256=shard_sha256,
            index_sha256=sha256_file(index_tmp),
            bytes_written=shard_bytes,
        )
        for local, final in (
            (h5_tmp, fmt.shard_path(self.root, self.shard_id)),
            (rejects_tmp, fmt.rejects_path(self.root, self.shard_id)),
            (index_tmp, fmt.index_path(self.root, self.shard_id)),
        ):  # the index last: the commit point
            with self._writing(final):
                publish_file(local, final)
        shutil.rmtree(tmp, ignore_errors=True)
        self._tmp_dir = None
        return summary

    def abort(self) -> None:
        """Discard the attempt: nothing of it becomes visible. Never raises (it runs while another
        error is on its way up), and closes HDF5 handles before their garbage collection could."""
        self._dsets.clear()
        if self._h5 is not None:
            try:
                self._h5.close()
            except Exception:  # noqa: BLE001 - the write error that brought us here is the one to report
                pass
            finally:
                self._h5 = None
        if self._guard is not None:
            self._guard.close()
        if self._tmp_dir is not None:
            shutil.rmtree(self._tmp_dir, ignore_errors=True)
            self._tmp_dir = None

    def _require_open(self) -> h5py.File:
        if self._h5 is None:
            raise RuntimeError("ShardWriter is not open (call open() or use it as a context manager)")
        return self._h5


class ShardWriteError(OSError):
    """Writing a shard attempt failed; the attempt is discarded and nothing of it is committed."""

    def __init__(self, shard_id: int, path: object, cause: BaseException):
        self.shard_id = shard_id
        self.path = str(path)
        self.reason = os_reason(cause)
        super().__init__(f"shard {fmt.shard_name(shard_id)}: cannot write {self.path}: {self.reason}")

    def __reduce__(self):  # crosses process boundaries (Ray) with its message intact
        return (_rebuild_write_error, (self.shard_id, self.path, self.reason))


def _rebuild_write_error(shard_id: int, path: str, reason: str) -> "ShardWriteError":
    return ShardWriteError(shard_id, path, OSError(reason))


def os_reason(exc: BaseException) -> str:
    """The operating system's words for a failed write ('No space left on device'), from an OSError or
    from HDF5's and Parquet writers' longer messages; else the first line of the message."""
    import errno as errno_module
    import re

    code = getattr(exc, "errno", None)
    if not isinstance(code, int):
        match = re.search(r"errno\s*=\s*(\d+)", str(exc))
        code = int(match.group(1)) if match else None
    if isinstance(code, int) and code in errno_module.errorcode:
        return f"{os.strerror(code)} (errno {code}: {errno_module.errorcode[code]})"
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _dataset_keys(h5: h5py.File) -> list[str]:
    keys: list[str] = []
    h5.visititems(lambda name, obj: keys.append(name) if isinstance(obj, h5py.Dataset) else None)
    return sorted(keys)


def _trim_h5(path: Path, n: int) -> Path:
    """Copy the first ``n`` rows into a fresh file: fixed-size datasets cannot shrink in place,
    and a copy keeps the file free of the unused preallocated chunks."""
    trimmed = path.with_name(path.stem + ".trim.h5")
    guard = _WriteGuard(trimmed)
    try:
        with h5py.File(path, "r") as src, _new_h5(guard) as dst:
            for k, v in src.attrs.items():
                dst.attrs[k] = v
            for key in _dataset_keys(src):
                s = src[key]
                d = _create_chunked(dst, key, (n, *s.shape[1:]), s.dtype)
                if n:
                    d[...] = s[:n]
    finally:
        guard.close()
    if guard.error is not None:
        raise guard.error
    path.unlink()
    return trimmed


def _new_h5(guard: "_WriteGuard") -> h5py.File:
    # track_order off and no timestamps: same inputs must give byte-identical files.
    return h5py.File(guard, "w", libver="v110", track_order=False)


class _WriteGuard(io.RawIOBase):
    """The file HDF5 writes a shard through (h5py's file-object driver).

    When the disk is full or a file-size limit is hit, HDF5's own driver reports the failure from
    places that cannot raise (chunk write-back on close or garbage collection: "Exception ignored"),
    later writes see a corrupt file, and the library crashes at interpreter exit (a segfault,
    reproduced with h5py 3.16 alone). Here the first failed write is kept and every later write is
    dropped while HDF5 is told it succeeded, so the library stays consistent; the writer then raises
    the kept error and discards the attempt (the file is garbage by then, and is never published)."""

    def __init__(self, path: Path):
        self._fh = open(path, "w+b", buffering=0)
        self.error: OSError | None = None

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        return self._fh.readinto(buffer)

    def write(self, data) -> int:
        if self.error is None:
            try:
                written = self._fh.write(data)
                if written is not None and written < len(data):  # a short write: finish it or fail
                    written += self._fh.write(memoryview(data)[written:]) or 0
                return written
            except OSError as exc:
                self.error = exc
        return len(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._fh.seek(offset, whence)

    def tell(self) -> int:
        return self._fh.tell()

    def truncate(self, size: int | None = None) -> int:
        if self.error is None:
            try:
                return self._fh.truncate(size)
            except OSError as exc:
                self.error = exc
        return size if size is not None else self.tell()

    def flush(self) -> None:
        if self.error is None and not self._fh.closed:
            try:
                os.fsync(self._fh.fileno())  # the publish step renames only durable bytes
            except OSError as exc:
                self.error = exc

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()
        super().close()


def _create_chunked(h5: h5py.File, key: str, shape: tuple[int, ...], dtype) -> h5py.Dataset:
    """One sample per chunk (the loader reads one chunk per sample), each chunk with a Fletcher-32
    checksum: a flipped bit on disk or in transit fails the read of that sample instead of feeding
    training a wrong tensor. Fletcher-32 is HDF5's own filter (no plugin a reader could lack) and
    costs one pass of additions per chunk (bench/bench_checksums.py)."""
    return h5.create_dataset(key, shape=shape, dtype=dtype, chunks=(1, *shape[1:]), fletcher32=True, track_times=False)


def _count_reasons(rejects: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in rejects:
        key = f"{r['stage']}:{r['error_type']}"
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))
