"""The shard cache's directory (``storage.cache``): where it is and how much it may hold, the cache-wide lock, the listing of cached shards and
fetches in progress, the pin test, eviction.

Locks are ``flock`` locks (not fcntl/POSIX locks): they belong to the open file, so h5py opening and
closing the same file elsewhere in the process does not drop them, and the kernel drops them when a
process dies (no stale pins or stale fetches).
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from pathlib import Path

CACHE_DIR_ENV = "BINDSET_CACHE_DIR"
CACHE_LIMIT_ENV = "BINDSET_CACHE_LIMIT_BYTES"
DEFAULT_LIMIT_BYTES = 16 << 30


def default_cache_dir() -> Path:
    env = os.environ.get(CACHE_DIR_ENV)
    if env:
        return Path(env)
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return Path(tempfile.gettempdir()) / f"bindset-cache-{uid}"


def default_limit_bytes() -> int:
    env = os.environ.get(CACHE_LIMIT_ENV)
    return int(env) if env else DEFAULT_LIMIT_BYTES


class CacheLock:
    """The cache-wide exclusive flock, held around accounting, eviction and reservation."""

    def __init__(self, path: Path):
        self.path = path
        self.fd: int | None = None

    def __enter__(self) -> "CacheLock":
        self.fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc) -> None:
        assert self.fd is not None
        os.close(self.fd)
        self.fd = None


def list_entries(directory: Path, clean_stale: bool = False) -> list[tuple[Path, int, float]]:
    """(path, size, mtime) of every cached shard and fetch in progress. With ``clean_stale`` (only
    under the cache-wide lock) ``.part`` files whose fetcher died are deleted and left out."""
    out = []
    for entry in os.scandir(directory):
        name = entry.name
        if not (name.endswith(".h5") or name.endswith(".part")):
            continue
        path = Path(entry.path)
        if clean_stale and name.endswith(".part") and not is_locked(path):
            path.unlink(missing_ok=True)  # its fetcher died: its flock went with it
            continue
        try:
            st = entry.stat()
        except FileNotFoundError:
            continue
        out.append((path, st.st_size, st.st_mtime))
    return out


def is_locked(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def live_part(directory: Path, sha256: str) -> bool:
    return any(is_locked(p) for p in directory.glob(f"{sha256}.*.part"))


def evict(path: Path) -> bool:
    """Delete a cached shard unless some reader has it pinned (a shared flock)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return False
    try:
        if same_file(os.fstat(fd), path):
            path.unlink()
            return True
        return False
    finally:
        os.close(fd)


def same_file(st: os.stat_result, path: Path) -> bool:
    try:
        now = os.stat(path)
    except FileNotFoundError:
        return False
    return (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino)
