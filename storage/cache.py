"""A bounded local cache of whole shard files from a dataset on an object store.

h5py needs a local file, and a shard is read whole anyway (every row of it, once per epoch), so a
reader of an ``s3://`` dataset fetches whole shard files into a local cache directory and opens them
there. One GET per shard, however many samples it holds. Local datasets never come here: their shards
are opened in place.

The cache directory (``cache_dir``, else ``$BINDSET_CACHE_DIR``, else ``<tmp>/bindset-cache-<uid>``)
holds, side by side:

- ``<sha256>.h5``: a verified shard, named by its content hash (the catalog's), so a rebuilt shard
  is a new file and two datasets with an identical shard share one copy;
- ``<sha256>.<pid>.<random>.part``: a fetch in progress, created at its full size (``ftruncate``)
  before the first byte arrives, so the directory's size already counts it, and held under an
  exclusive ``flock`` by its fetcher;
- ``.lock``: the cache-wide lock taken around space accounting, eviction and reservation.

Guarantees, for any number of processes (DataLoader workers, DDP ranks) sharing one directory:

- *Never over the limit*: a fetch first reserves its full size under the cache-wide lock, evicting
  least-recently-used shards if needed, so the sum of the sizes of all ``.h5`` and ``.part`` files
  stays <= ``limit_bytes`` at every instant (all processes must use the same limit). A shard larger
  than the limit is an error naming both sizes.
- *Never evict an open shard*: a reader pins a shard with a shared ``flock`` on the file for as long
  as it has it open; eviction takes an exclusive ``flock`` without blocking and skips files it cannot
  lock. flock, not fcntl/POSIX locks: flock locks belong to the open file, so h5py opening and
  closing the same file elsewhere in the process does not drop them, and the kernel drops them when
  a process dies (no stale pins). A pinner re-checks, after locking, that the path still names the
  inode it opened, since an eviction may win the race between its open and its lock.
- *Verified before use*: a fetch streams into the ``.part`` file while hashing, then compares size
  and sha256 with the catalog; a mismatch deletes the file and raises ``ShardIntegrityError`` naming
  dataset, shard and both hashes. Only then is the file renamed to ``<sha256>.h5`` (atomic), so a
  file under a final name has been verified, and a killed fetch leaves only a ``.part`` file whose
  lock died with it: the next process to take the cache-wide lock deletes it. Cached files are not
  re-hashed on every open (that would read each shard twice per epoch); their size is checked.
- *Concurrent fetches of one shard*: under the cache-wide lock a fetcher sees a live ``.part`` of
  the same hash and waits for it instead of downloading again; renames are atomic either way.
- *LRU by mtime*: pinning touches the file, eviction takes the oldest unpinned file first, and the
  shards a reader announced it will need soon (its prefetch window) only after all others.

Fetching (the download, the helper process forked readers use, prefetch) is ``storage.cache_fetch``;
the directory (where, how big, its locks, listing and eviction) is ``storage.cache_files``. This module
stays over 400 lines on purpose: ``ShardCache`` is one lock protocol (reserve, fetch, verify, pin,
evict) whose guarantees are the list above, and cutting the class apart would scatter them.
"""

from __future__ import annotations

import fcntl
import logging
import os
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from storage.cache_fetch import HelperFetcher, Prefetcher, download
from storage.cache_files import (
    CacheLock,
    default_cache_dir,
    default_limit_bytes,
    evict,
    list_entries,
    live_part,
    same_file,
)

log = logging.getLogger(__name__)

_POLL_SECONDS = 0.02

_FORKED = False  # set in children forked after import: obstore must not be used in-process there


def _mark_forked() -> None:
    global _FORKED
    _FORKED = True


os.register_at_fork(after_in_child=_mark_forked)


class ShardIntegrityError(ValueError):
    """A fetched shard does not match the catalog's size or sha256 (the bad copy is discarded)."""


class CacheFullError(OSError):
    """The cache cannot hold a shard: larger than the limit, or the limit is taken by open shards."""


@dataclass(frozen=True)
class RemoteShard:
    """One shard file of a remote dataset and what the catalog says it must be."""

    dataset: str  # dataset URL, for messages
    shard_id: int
    url: str  # the shard object's URL
    sha256: str
    size: int
    options: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    @property
    def label(self) -> str:
        return f"shard {self.shard_id:05d} of {self.dataset}"


class CachedShard:
    """A pinned cached shard: ``path`` stays valid (never evicted) until ``release()``."""

    def __init__(self, cache: "ShardCache", shard: RemoteShard, path: Path, fd: int):
        self.shard = shard
        self.path = path
        self._cache = cache
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            self._cache._unpinned(self.shard)
            os.close(self._fd)  # drops the shared flock
            self._fd = None

    def __enter__(self) -> "CachedShard":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class ShardCache:
    """See the module doc. ``limit_bytes``: the most the directory may hold (default
    ``$BINDSET_CACHE_LIMIT_BYTES`` or 16 GiB). ``wait_seconds``: how long a fetch waits for other
    processes to unpin shards before giving up with ``CacheFullError``."""

    def __init__(
        self, directory: str | os.PathLike | None = None, limit_bytes: int | None = None, wait_seconds: float = 300.0
    ):
        self.directory = Path(directory) if directory is not None else default_cache_dir()
        self.limit_bytes = int(limit_bytes) if limit_bytes is not None else default_limit_bytes()
        if self.limit_bytes <= 0:
            raise ValueError(f"cache limit must be positive, got {self.limit_bytes} bytes")
        self.wait_seconds = float(wait_seconds)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.stats = {"requests": 0, "fetches": 0, "fetched_bytes": 0, "hits": 0, "evictions": 0}
        self._state_lock = threading.Lock()
        self._pinned: dict[str, int] = {}  # sha256 -> pins held by this process
        self._pinned_bytes = 0
        self._soon: set[str] = set()  # sha256 of shards this process announced it will read next
        self._pid = os.getpid()
        self._prefetcher: Prefetcher | None = None
        self._fetcher: HelperFetcher | None = None

    def __getstate__(self) -> dict[str, Any]:
        # Travels to spawned workers as configuration only; threads, locks and pins stay behind.
        return {"directory": self.directory, "limit_bytes": self.limit_bytes, "wait_seconds": self.wait_seconds}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["directory"], state["limit_bytes"], state["wait_seconds"])

    # -- public ------------------------------------------------------------------------------------
    def path_of(self, shard: RemoteShard) -> Path:
        return self.directory / f"{shard.sha256}.h5"

    def acquire(self, shard: RemoteShard) -> CachedShard:
        """The shard as a pinned local file, fetched and verified first if it is not cached."""
        self._after_fork_reset()
        self._check_fits(shard)
        first = True
        while True:
            pinned = self._try_pin(shard)
            if pinned is not None:
                if first:
                    self._count("hits")
                return pinned
            first = False
            pinned = self._fetch(shard, best_effort=False)
            if pinned is not None:
                return pinned

    def prefetch(self, shards: list[RemoteShard]) -> None:
        """Fetch these shards (in order) on a background thread if they are not cached; replaces any
        earlier request. Best effort: see the module doc."""
        self._after_fork_reset()
        with self._state_lock:
            self._soon = {s.sha256 for s in shards}
        if self._prefetcher is None:
            self._prefetcher = Prefetcher(
                lambda shard: self._fetch(shard, best_effort=True), lambda shard: self.path_of(shard).exists()
            )
        self._prefetcher.want([s for s in shards if s.size <= self.limit_bytes])

    def usage_bytes(self) -> int:
        """Bytes the directory holds now (cached shards and fetches in progress)."""
        return sum(size for _, size, _ in list_entries(self.directory))

    def close(self) -> None:
        if self._prefetcher is not None and self._pid == os.getpid():
            self._prefetcher.stop()
        self._prefetcher = None
        if self._fetcher is not None and self._pid == os.getpid():
            self._fetcher.close()
        self._fetcher = None

    # -- pinning -------------------------------------------------------------------------------------
    def _try_pin(self, shard: RemoteShard) -> CachedShard | None:
        path = self.path_of(shard)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)  # blocks only while an evictor holds it for an unlink
            st = os.fstat(fd)
            if not same_file(st, path):
                os.close(fd)  # evicted between our open and our lock
                return None
            if st.st_size != shard.size:
                # A verified file never has another size; something else wrote here. Refetch.
                log.warning(
                    "%s: cached copy %s has %d bytes, expected %d; refetching",
                    shard.label,
                    path,
                    st.st_size,
                    shard.size,
                )
                path.unlink(missing_ok=True)
                os.close(fd)
                return None
            os.utime(fd)  # most recently used
        except BaseException:
            os.close(fd)
            raise
        self._pinned_add(shard)
        return CachedShard(self, shard, path, fd)

    def _pinned_add(self, shard: RemoteShard) -> None:
        with self._state_lock:
            count = self._pinned.get(shard.sha256, 0)
            if count == 0:
                self._pinned_bytes += shard.size
            self._pinned[shard.sha256] = count + 1

    def _unpinned(self, shard: RemoteShard) -> None:
        with self._state_lock:
            count = self._pinned.get(shard.sha256, 0) - 1
            if count <= 0:
                self._pinned.pop(shard.sha256, None)
                self._pinned_bytes -= shard.size
            else:
                self._pinned[shard.sha256] = count

    # -- fetching --------------------------------------------------------------------------------------
    def _check_fits(self, shard: RemoteShard) -> None:
        if shard.size > self.limit_bytes:
            raise CacheFullError(
                f"{shard.label} is {shard.size} bytes, larger than the cache limit of "
                f"{self.limit_bytes} bytes ({self.directory}); raise cache_limit_bytes"
            )

    def _fetch(self, shard: RemoteShard, best_effort: bool) -> CachedShard | None:
        """Make sure the shard is cached: fetch it (returned pinned unless ``best_effort``), or wait
        for another fetcher, or find it there (None: the caller pins it). ``best_effort`` gives up
        (None) when there is no room or someone else is fetching it."""
        no_room_since: float | None = None  # waiting for another fetcher of this shard is not "no room"
        while True:
            with CacheLock(self.directory / ".lock"):
                if self.path_of(shard).exists():
                    return None
                fetching = live_part(self.directory, shard.sha256)
                reserved = None if fetching else self._reserve(shard, best_effort)
            if reserved is not None:
                return self._download_into(shard, *reserved, keep_pin=not best_effort)
            if best_effort:
                return None
            if fetching:
                no_room_since = None
            else:
                self._check_not_self_blocked(shard)
                no_room_since = time.monotonic() if no_room_since is None else no_room_since
            if no_room_since is not None and time.monotonic() - no_room_since > self.wait_seconds:
                raise CacheFullError(
                    f"{shard.label}: no room in the cache ({self.directory}, limit {self.limit_bytes} bytes) "
                    f"after {self.wait_seconds:.0f} s: every cached shard is open in some reader. Each reader "
                    f"(DataLoader worker) keeps about buffer_shards shards open; raise cache_limit_bytes to "
                    f"at least workers x buffer_shards x the largest shard"
                )
            time.sleep(_POLL_SECONDS)

    def _check_not_self_blocked(self, shard: RemoteShard) -> None:
        # Only this process can unpin what it has pinned: waiting for itself would never end.
        with self._state_lock:
            pinned = self._pinned_bytes
        if pinned + shard.size > self.limit_bytes:
            raise CacheFullError(
                f"{shard.label} ({shard.size} bytes) does not fit in the cache limit of {self.limit_bytes} bytes "
                f"next to the {pinned} bytes of shards this process has open; raise cache_limit_bytes or open "
                f"fewer shards at once (buffer_shards)"
            )

    def _reserve(self, shard: RemoteShard, best_effort: bool) -> tuple[Path, int] | None:
        """Under the cache-wide lock: make room and create the ``.part`` file at full size."""
        if not self._make_room(shard.size, avoid_soon=best_effort):
            return None
        part = self.directory / f"{shard.sha256}.{os.getpid()}.{uuid.uuid4().hex[:8]}.part"
        fd = os.open(part, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.ftruncate(fd, shard.size)
        except BaseException:
            os.close(fd)
            part.unlink(missing_ok=True)
            raise
        return part, fd

    def _make_room(self, need: int, avoid_soon: bool) -> bool:
        entries = list_entries(self.directory, clean_stale=True)
        usage = sum(size for _, size, _ in entries)
        if usage + need <= self.limit_bytes:
            return True
        with self._state_lock:
            soon = set(self._soon)
        shards = [(path, size, mtime) for path, size, mtime in entries if path.suffix == ".h5"]
        # Least recently used first; the shards this process will read next only as a last resort.
        shards.sort(key=lambda e: (e[0].stem in soon, e[2]))
        for path, size, _ in shards:
            if avoid_soon and path.stem in soon:
                break
            if evict(path):
                self._count("evictions")
                usage -= size
                if usage + need <= self.limit_bytes:
                    return True
        return False

    def _download_into(self, shard: RemoteShard, part: Path, fd: int, keep_pin: bool) -> CachedShard | None:
        """Fill the reserved ``.part`` file, verify it, publish it; with ``keep_pin`` return it pinned
        (the reader that fetched it reads it next: no window in which an eviction could take it)."""
        try:
            if _FORKED:
                sha, size, requests = self._helper().fetch(shard, part)
            else:
                sha, size, requests = download(shard.url, shard.options, fd, shard.size)
            self._count("requests", requests)
            self._count("fetches")
            self._count("fetched_bytes", min(size, shard.size))
            if size != shard.size or sha != shard.sha256:
                raise ShardIntegrityError(
                    f"{shard.label} ({shard.url}) is corrupt: sha256 {sha} ({size} bytes), the catalog says "
                    f"{shard.sha256} ({shard.size} bytes); the fetched copy was discarded"
                )
            with CacheLock(self.directory / ".lock"):
                os.rename(part, self.path_of(shard))  # verified: now visible under its final name
                if keep_pin:
                    # flock converts by unlock + relock; under the cache lock no evictor can slip between.
                    fcntl.flock(fd, fcntl.LOCK_SH)
        except BaseException:
            part.unlink(missing_ok=True)
            os.close(fd)
            raise
        if not keep_pin:
            os.close(fd)  # drops the exclusive lock: waiters see the final file
            return None
        self._pinned_add(shard)
        return CachedShard(self, shard, self.path_of(shard), fd)

    def _helper(self) -> "HelperFetcher":
        with self._state_lock:  # the prefetch thread and the reader may both need it first
            if self._fetcher is None:
                self._fetcher = HelperFetcher()
            return self._fetcher

    def _count(self, key: str, n: int = 1) -> None:
        with self._state_lock:
            self.stats[key] += n

    def _after_fork_reset(self) -> None:
        # A forked child inherits a copy of this object with the parent's threads gone and pins it
        # does not own: start from nothing (the files and their locks stay with the parent).
        if self._pid != os.getpid():
            self._pid = os.getpid()
            self._state_lock = threading.Lock()
            self._pinned, self._pinned_bytes, self._soon = {}, 0, set()
            self._prefetcher = None
            self._fetcher = None


_DEFAULT: ShardCache | None = None
_DEFAULT_LOCK = threading.Lock()


def default_cache() -> ShardCache:
    """This process's cache in the default directory with the default limit (one per process: a
    forked child makes its own)."""
    global _DEFAULT
    with _DEFAULT_LOCK:
        if (
            _DEFAULT is None
            or _DEFAULT._pid != os.getpid()
            or _DEFAULT.directory != default_cache_dir()
            or _DEFAULT.limit_bytes != default_limit_bytes()
        ):
            _DEFAULT = ShardCache()  # the environment names another cache now
        return _DEFAULT


def read_object(url: str, options: dict[str, str], fetcher_owner: ShardCache | None = None) -> bytes:
    """The bytes of a small object (an embedding file), safe in forked DataLoader workers: read
    in-process where obstore may run, else through ``fetcher_owner``'s helper process."""
    if not _FORKED:
        from storage.object_path import ObjectPath

        return ObjectPath(url, options).read_bytes()
    owner = fetcher_owner if fetcher_owner is not None else default_cache()
    owner._after_fork_reset()
    fd, tmp = tempfile.mkstemp(prefix="bindset-object-")
    os.close(fd)
    try:
        owner._helper().fetch_any(url, options, Path(tmp))
        return Path(tmp).read_bytes()
    finally:
        os.unlink(tmp)


def remote_shard(dataset: Any, shard_id: int, catalog: dict[str, Any] | None) -> RemoteShard:
    """The ``RemoteShard`` of ``shard_id`` in a remote dataset: size and sha256 from the catalog, or
    from the shard's index footer when the catalog does not list it yet."""
    from storage import format as fmt
    from storage.location import as_location

    root = as_location(dataset)
    name = fmt.shard_name(shard_id)
    entry = (catalog or {}).get("shards", {}).get(name)
    if entry is not None and entry.get("sha256") and entry.get("bytes") is not None:
        sha, size = str(entry["sha256"]), int(entry["bytes"])
    else:
        from storage.shard_meta import read_shard_file_metadata

        try:
            meta = read_shard_file_metadata(fmt.index_path(root, shard_id))
        except FileNotFoundError:
            raise FileNotFoundError(f"shard {name} of {root} is not committed (no index/{name}.parquet)") from None
        if meta is None:
            raise ShardIntegrityError(
                f"shard {name} of {root}: neither dataset.json nor its index records the "
                "shard's sha256 and size, so a fetched copy cannot be verified"
            )
        sha, size = meta
    obj = fmt.shard_path(root, shard_id)
    return RemoteShard(
        dataset=str(root), shard_id=shard_id, url=obj.url, sha256=sha, size=size, options=dict(obj.options)
    )


__all__ = [
    "CacheFullError",
    "CachedShard",
    "RemoteShard",
    "ShardCache",
    "ShardIntegrityError",
    "default_cache",
    "read_object",
    "remote_shard",
]
