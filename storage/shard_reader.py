"""Shard reader: random access to committed shards' stored arrays, every chunk checked (see
``storage.shard``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy as np
import polars as pl

# Imported with the reader, not on first fetch: its at-fork hook must be registered before any
# process forks (a DataLoader worker forked earlier would not know obstore is unusable in it).
from storage import cache as _shard_cache  # noqa: E402,F401,I001
from storage import format as fmt
from storage.location import Location, as_location, is_remote


class CorruptSampleError(OSError):
    """A stored sample whose bytes fail their check (HDF5's Fletcher-32 filter, or another read error
    of the data itself): reading it would feed a wrong tensor, so it is never returned.

    ``dataset`` (the root), ``shard`` (id), ``row``, ``sample_id`` (None when the index could not be
    read), ``key`` (the HDF5 dataset, e.g. ``"video/pixels"``) and ``reason`` name the first bad
    sample; ``also`` lists further ``(row, sample_id, key)`` a batch read found bad in the same call.
    Constructible from the message alone, as a DataLoader re-raises a worker's exception that way
    (the message still names everything then; the attributes are None)."""

    def __init__(
        self,
        message: str,
        *,
        dataset: str | None = None,
        shard: int | None = None,
        row: int | None = None,
        sample_id: str | None = None,
        key: str | None = None,
        reason: str | None = None,
        also: tuple[tuple[int, str | None, str], ...] = (),
    ):
        super().__init__(message)
        self.dataset, self.shard, self.row, self.sample_id = dataset, shard, row, sample_id
        self.key, self.reason, self.also = key, reason, tuple(also)

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def _is_data_error(exc: BaseException) -> bool:
    # h5py reports a failed chunk read (a checksum or decompression filter failing, a chunk address
    # past the end of a truncated file) as an OSError without errno; an errno means the OS failed to
    # read (EIO, a vanished file): not a verdict on the bytes, so it propagates as it is.
    return isinstance(exc, OSError) and not isinstance(exc, CorruptSampleError) and exc.errno is None


def _reason(dset: h5py.Dataset, exc: BaseException) -> str:
    text = str(exc)
    if dset.fletcher32 and "filter" in text.lower():
        if dset.compression is None:
            return "Fletcher-32 checksum mismatch"
        return f"Fletcher-32 checksum or {dset.compression} decompression failed"
    return text


class ShardReader:
    """Random access to one committed shard's stored arrays (HDF5 + Parquet only, no pickle).

    The one HDF5 reader of bindset: the loader, ``DatasetReader``, training and the report all read
    shards through it. A local dataset's shard is opened in place. A remote dataset's shard (an
    ``s3://`` root) is fetched whole into a local ``ShardCache`` (default: ``default_cache()``),
    verified against the catalog's sha256 and size, and pinned there until ``close()`` so the cache
    never evicts it while it is open. ``catalog``: the dataset's ``dataset.json`` if the caller has
    it already (a loader worker must not read it again per shard). ``path``: read this local copy of
    the shard file instead (``bindset validate`` checks the copy it downloaded to hash).

    Integrity: every read of a stored array that fails its chunk's check (format 2: Fletcher-32)
    raises ``CorruptSampleError`` naming the dataset, shard, row, sample and array; a batch read
    (``read_stored_rows``) re-reads row by row to name the bad rows. ``verify`` reads every chunk.
    """

    def __init__(
        self,
        root: str | Path | Location,
        shard_id: int,
        cache: Any = None,
        catalog: dict[str, Any] | None = None,
        path: str | Path | None = None,
    ):
        self.root = as_location(root)
        self.shard_id = int(shard_id)
        self._pin = None
        self._row_ids: dict[int, str] | None = None
        if path is not None:
            path = Path(path)
        elif is_remote(self.root):
            path = self._fetch(cache, catalog)
        else:
            index_file = fmt.index_path(self.root, self.shard_id)
            if not index_file.exists():
                raise FileNotFoundError(f"shard {self.shard_id} of {self.root} is not committed (no {index_file})")
            path = fmt.shard_path(self.root, self.shard_id)
        try:
            self._h5 = h5py.File(path, "r")
        except BaseException:
            self._unpin()
            raise
        self._datasets: dict[str, list[tuple[str, h5py.Dataset]]] | None = None
        self._index: pl.DataFrame | None = None

    def _fetch(self, cache: Any, catalog: dict[str, Any] | None) -> Path:
        from storage.cache import default_cache, remote_shard

        if catalog is None:
            from storage.catalog import load_catalog

            catalog = load_catalog(self.root)
            if catalog is None:
                raise FileNotFoundError(f"{self.root} is not a bindset dataset (no dataset.json)")
        shard = remote_shard(self.root, self.shard_id, catalog)
        self._pin = (cache if cache is not None else default_cache()).acquire(shard)
        return self._pin.path

    def _unpin(self) -> None:
        if self._pin is not None:
            self._pin.release()
            self._pin = None

    @property
    def index(self) -> pl.DataFrame:
        """The shard's index rows (read on first use: the loader never needs them)."""
        if self._index is None:
            location = fmt.index_path(self.root, self.shard_id)
            if is_remote(location):
                import io

                self._index = pl.read_parquet(io.BytesIO(location.read_bytes()))
            else:
                self._index = pl.read_parquet(location)
        return self._index

    def __len__(self) -> int:
        return self.index.height

    def _groups(self) -> dict[str, list[tuple[str, h5py.Dataset]]]:
        # Dataset handles by group, looked up once: per-row reads then skip h5py's name resolution.
        if self._datasets is None:
            found: dict[str, list[tuple[str, h5py.Dataset]]] = {}
            self._h5.visititems(
                lambda name, obj: (
                    found.setdefault(name.split("/", 1)[0], []).append((name, obj))
                    if isinstance(obj, h5py.Dataset)
                    else None
                )
            )
            self._datasets = {g: sorted(items, key=lambda kv: kv[0]) for g, items in sorted(found.items())}
        return self._datasets

    def keys(self) -> list[str]:
        return sorted(k for items in self._groups().values() for k, _ in items)

    def groups(self) -> list[str]:
        """The modality groups this shard stores."""
        return list(self._groups())

    def read_groups(self, row: int, groups: Any, sample_id: str | None = None) -> dict[str, np.ndarray]:
        """The stored arrays of ``groups`` (modality names) at ``row``, keyed ``group/name``; a group
        the shard does not store is skipped. The caller knows from the index which groups the row
        holds (a row missing one holds zeros there). ``sample_id``: the row's sample if the caller
        knows it (named by a ``CorruptSampleError`` without reading the index)."""
        datasets = self._groups()
        out: dict[str, np.ndarray] = {}
        for group in groups:
            for key, dset in datasets.get(group, ()):
                if not 0 <= row < dset.shape[0]:
                    raise IndexError(
                        f"row {row} out of range for shard {self.shard_id} of {self.root} ({dset.shape[0]} rows)"
                    )
                out[key] = self._read_row(key, dset, row, sample_id)
        return out

    def read_keys(self, row: int, keys: Any) -> dict[str, np.ndarray]:
        """The stored arrays named ``keys`` (``group/name``) at ``row``."""
        missing = [k for k in keys if k not in self._h5]
        if missing:
            raise KeyError(f"shard {self.shard_id} of {self.root} stores no {missing}")
        return {k: self._read_row(k, self._h5[k], row) for k in keys}

    # -- integrity ---------------------------------------------------------------------------------
    def _read_row(self, key: str, dset: h5py.Dataset, row: int, sample_id: str | None = None) -> np.ndarray:
        try:
            return dset[row]
        except OSError as exc:
            if not _is_data_error(exc):
                raise
            raise self.corrupt_error([(row, key, _reason(dset, exc))], {row: sample_id}) from exc

    def _read_rows(self, items: list[tuple[str, h5py.Dataset]], rows: list[int], select: Any) -> dict[str, np.ndarray]:
        """``{key: dset[select]}`` for every dataset of ``items``; when a read fails its check, every
        row of ``rows`` is re-read alone, so the error names each bad sample (not just the batch)."""
        out: dict[str, np.ndarray] = {}
        for key, dset in items:
            try:
                out[key] = dset[select]
            except OSError as exc:
                if not _is_data_error(exc):
                    raise
                bad = [(r, k, reason) for k, d in items for r, reason in self._bad_rows(d, rows)]
                if not bad:  # every row reads alone: not the bytes (cannot happen with a checksum)
                    raise
                raise self.corrupt_error(bad) from exc
        return out

    def _bad_rows(self, dset: h5py.Dataset, rows: Any) -> list[tuple[int, str]]:
        bad = []
        for r in rows:
            try:
                dset[int(r)]
            except OSError as exc:
                if not _is_data_error(exc):
                    raise
                bad.append((int(r), _reason(dset, exc)))
        return bad

    def corrupt_error(
        self, bad: list[tuple[int, str, str]], known_ids: dict[int, str | None] | None = None
    ) -> CorruptSampleError:
        """The error naming ``bad`` rows ``(row, key, reason)``, the first one in the attributes."""
        bad = sorted(bad)
        ids = {r: (known_ids or {}).get(r) or self._sample_id(r) for r, _, _ in bad}
        row, key, reason = bad[0]
        message = (
            f"corrupt data in {self.root} shard {fmt.shard_name(self.shard_id)} row {row} "
            f"(sample {ids[row] or 'unknown'}) {key}: {reason}"
        )
        also = [(r, ids[r], k) for r, k, _ in bad[1:]]
        if also:
            message += "; also " + ", ".join(f"row {r} (sample {s or 'unknown'}) {k}" for r, s, k in also)
        return CorruptSampleError(
            message,
            dataset=str(self.root),
            shard=self.shard_id,
            row=row,
            sample_id=ids[row],
            key=key,
            reason=reason,
            also=tuple(also),
        )

    def _sample_id(self, row: int) -> str | None:
        """The sample stored at ``row``, for error messages; None when the index cannot be read.
        pyarrow, single-threaded (never polars, whose thread pool a forked DataLoader worker must not
        touch), and a remote index through the cache's fork-safe fetch."""
        if self._row_ids is None:
            try:
                import pyarrow as pa
                import pyarrow.parquet as pq

                location = fmt.index_path(self.root, self.shard_id)
                source: Any = location
                if is_remote(location):
                    from storage.cache import read_object

                    source = pa.BufferReader(read_object(location.url, dict(location.options)))
                table = pq.read_table(source, columns=["sample_id", "row"], use_threads=False, pre_buffer=False)
                self._row_ids = dict(zip(table.column("row").to_pylist(), table.column("sample_id").to_pylist()))
            except Exception:  # noqa: BLE001 - a message without the id beats hiding the corruption
                self._row_ids = {}
        return self._row_ids.get(int(row))

    def verify(self, block_bytes: int = 64 << 20) -> list[CorruptSampleError]:
        """Read every chunk of every stored array (so each chunk's checksum is checked); one error
        per bad ``(row, key)``, in key then row order. Reads blocks of rows and re-reads a failing
        block row by row."""
        found: list[CorruptSampleError] = []
        for key in self.keys():
            dset = self._h5[key]
            n = dset.shape[0] if dset.shape else 0
            row_bytes = max(1, dset.dtype.itemsize * int(np.prod(dset.shape[1:], dtype=np.int64)))
            step = max(1, block_bytes // row_bytes)
            for start in range(0, n, step):
                stop = min(n, start + step)
                try:
                    dset[start:stop]
                except OSError as exc:
                    if not _is_data_error(exc):
                        raise
                    bad = self._bad_rows(dset, range(start, stop))
                    found += [self.corrupt_error([(r, key, reason)]) for r, reason in bad]
        return found

    def unchecked_keys(self) -> list[str]:
        """Stored arrays without per-chunk checksums (format-1 shards): corruption there reads as data."""
        return [k for k in self.keys() if not self._h5[k].fletcher32]

    def read_stored(self, row: int) -> dict[str, np.ndarray]:
        """The compact stored arrays of one row, keyed ``group/name`` (the groups the row holds)."""
        if not 0 <= row < len(self):
            raise IndexError(f"row {row} out of range for shard {self.shard_id} ({len(self)} rows)")
        return self.read_groups(row, self.index["modalities"][row], sample_id=self.index["sample_id"][row])

    def read_stored_rows(self, rows: list[int], group: str) -> dict[str, np.ndarray]:
        """One modality's stored arrays for several rows, keyed ``group/name``, each ``[len(rows), ...]``.

        One HDF5 read per array (a slice when the rows are consecutive, as a shard's are when read in
        order) instead of one per row and array: what a batch consumer such as the embed step wants.
        The caller picks rows that hold the modality (the index's ``modalities`` column).
        """
        if not rows:
            raise ValueError("read_stored_rows needs at least one row")
        if min(rows) < 0 or max(rows) >= len(self):
            raise IndexError(f"rows {min(rows)}..{max(rows)} out of range for shard {self.shard_id} ({len(self)} rows)")
        datasets = self._groups().get(group)
        if not datasets:
            raise KeyError(f"shard {self.shard_id} of {self.root} stores no {group!r}")
        first, last = rows[0], rows[-1]
        if rows == list(range(first, last + 1)):
            return self._read_rows(datasets, rows, slice(first, last + 1))
        order = np.argsort(rows, kind="stable")
        sorted_rows = np.asarray(rows)[order]
        if len(np.unique(sorted_rows)) != len(rows):
            raise ValueError("read_stored_rows: rows must not repeat")
        inverse = np.empty_like(order)
        inverse[order] = np.arange(len(rows))
        # h5py reads fancy selections in increasing order only: read sorted, then restore the caller's order
        return {k: v[inverse] for k, v in self._read_rows(datasets, rows, sorted_rows).items()}

    def close(self) -> None:
        self._datasets = None
        try:
            self._h5.close()
        finally:
            self._unpin()

    def __enter__(self) -> "ShardReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ShardReaderPool:
    """The open ``ShardReader`` s of one consumer, at most ``max_open`` (least recently used closed
    first). Remote shards share one cache; ``catalog`` is read once, not per shard."""

    def __init__(
        self, root: str | Path | Location, max_open: int = 16, cache: Any = None, catalog: dict[str, Any] | None = None
    ):
        from collections import OrderedDict

        self.root = as_location(root)
        self.max_open = max(1, int(max_open))
        self.cache = cache
        self.catalog = catalog
        self._open: "OrderedDict[int, ShardReader]" = OrderedDict()

    def get(self, shard_id: int) -> ShardReader:
        reader = self._open.get(shard_id)
        if reader is not None:
            self._open.move_to_end(shard_id)
            return reader
        while len(self._open) >= self.max_open:
            self._open.popitem(last=False)[1].close()  # unpin before pinning another
        if is_remote(self.root) and self.catalog is None:
            from storage.catalog import load_catalog

            self.catalog = load_catalog(self.root)
        reader = self._open[shard_id] = ShardReader(self.root, shard_id, cache=self.cache, catalog=self.catalog)
        return reader

    def is_open(self, shard_id: int) -> bool:
        return shard_id in self._open

    def release(self, shard_id: int) -> None:
        """Close one shard (e.g. after its last row in a plan), unpinning it in the cache."""
        reader = self._open.pop(shard_id, None)
        if reader is not None:
            reader.close()

    def close(self) -> None:
        while self._open:
            self._open.popitem()[1].close()

    def __enter__(self) -> "ShardReaderPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def committed_shard_ids(root: str | Path | Location) -> list[int]:
    """Shards whose index exists (their commit marker), local or remote (one LIST)."""
    from storage.location import list_files

    files = list_files(as_location(root) / fmt.INDEX_DIR, ".parquet")
    return sorted(int(p.stem) for p in files if p.stem.isdigit())
