"""A dataset lock: one build (or embed of one store) of a dataset at a time, naming the holder.

The lock is a create-if-absent file or object (``O_EXCL`` on disk, ``If-None-Match: *`` on an object
store) holding host, pid, start time and a lease expiry that the holder renews on a background thread
(every third of the lease). Another process takes the lock over when

- the lease has expired (any host: a driver that was SIGKILLed, or a node that vanished), or
- the holder is on this host and its pid is gone (no need to wait for the lease).

A second live build is refused with a message naming the holder and when its lease ends. On an
object store the takeover and every renewal are compare-and-swap writes (``If-Match`` on the e-tag
read), so two processes racing for an expired lock cannot both win, and a holder that stalled past
its lease notices that it lost the lock instead of overwriting its successor's.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from storage import format as fmt
from storage.location import Location, as_location
from storage.object_path import ObjectPath

DEFAULT_LEASE_SECONDS = 60.0


def lease_seconds() -> float:
    """The lease a new lock takes (``BINDSET_LOCK_LEASE_S``, default 60 s)."""
    try:
        return max(1.0, float(os.environ.get("BINDSET_LOCK_LEASE_S", DEFAULT_LEASE_SECONDS)))
    except ValueError:
        return DEFAULT_LEASE_SECONDS


class DatasetLocked(RuntimeError):
    pass


@dataclass(frozen=True)
class LockInfo:
    host: str
    pid: int
    started: str
    purpose: str
    expires: float = 0.0  # unix time the lease ends; 0 = a lock from before leases (never expires)
    token: str = ""

    def describe(self) -> str:
        lease = ""
        if self.expires:
            left = self.expires - time.time()
            lease = f", lease ends in {left:.0f} s" if left > 0 else f", lease expired {-left:.0f} s ago"
        return f"{self.purpose} by pid {self.pid} on {self.host}, started {self.started}{lease}"

    def encode(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def decode(cls, data: bytes) -> "LockInfo | None":
        try:
            fields = json.loads(data)
            return cls(**{k: fields[k] for k in cls.__dataclass_fields__ if k in fields})
        except (ValueError, TypeError, KeyError):
            return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stale(holder: LockInfo, now: float) -> bool:
    if holder.host == socket.gethostname() and not _pid_alive(holder.pid):
        return True
    return bool(holder.expires) and now > holder.expires


class DatasetLock:
    def __init__(self, root: str | Path | Location, purpose: str = "build", lease_s: float | None = None):
        self.root = as_location(root)
        self.path = self.root / fmt.LOCKS_DIR / f"{purpose}.lock"
        self.purpose = purpose
        self.lease_s = lease_s or lease_seconds()
        self._held = False
        self._info: LockInfo | None = None
        self._etag: str | None = None
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self.lost = False

    # -- storage of the lock record (file or object) -----------------------------------------------
    def _remote(self) -> bool:
        return isinstance(self.path, ObjectPath)

    def _create(self, data: bytes) -> bool:
        if self._remote():
            etag = self.path.create_if_absent(data)
            self._etag = etag
            return etag is not None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        return True

    def _read_record(self) -> tuple[LockInfo | None, str | None, float]:
        """(holder, e-tag on object stores, age of the record in seconds)."""
        if self._remote():
            meta = self.path.head()
            if meta is None:
                return None, None, 0.0
            try:
                data = self.path.read_bytes()
            except FileNotFoundError:
                return None, None, 0.0
            return LockInfo.decode(data), meta.get("e_tag"), time.time() - meta["last_modified"].timestamp()
        try:
            data = Path(self.path).read_bytes()
            age = time.time() - Path(self.path).stat().st_mtime
        except FileNotFoundError:
            return None, None, 0.0
        return LockInfo.decode(data), None, age

    def read(self) -> LockInfo | None:
        return self._read_record()[0]

    def _replace(self, data: bytes, etag: str | None) -> bool:
        """Overwrite the record we read (compare-and-swap on object stores)."""
        if self._remote():
            new = self.path.replace_if_match(data, etag) if etag else None
            if new is not None:
                self._etag = new
            return new is not None
        tmp = Path(self.path).with_name(f".{self.path.name}.{os.getpid()}.{uuid.uuid4().hex[:6]}")
        tmp.write_bytes(data)
        os.replace(tmp, self.path)
        return True

    # -- lifecycle -----------------------------------------------------------------------------------
    def _new_info(self) -> LockInfo:
        return LockInfo(
            socket.gethostname(),
            os.getpid(),
            time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            self.purpose,
            expires=time.time() + self.lease_s,
            token=uuid.uuid4().hex,
        )

    def acquire(self) -> "DatasetLock":
        info = self._new_info()
        for _ in range(3):
            if self._create(info.encode()):
                return self._took(info)
            holder, etag, age = self._read_record()
            if holder is None and age == 0.0:
                continue  # released between our create and our read: try again
            if holder is None:
                # unreadable record: only a local crash between create and write leaves one
                if age > self.lease_s and self._replace(info.encode(), etag):
                    return self._took(info)
                raise DatasetLocked(
                    f"dataset {self.root} is locked: an unreadable lock {self.path} "
                    f"({age:.0f} s old); it is taken over once older than {self.lease_s:.0f} s"
                )
            if _stale(holder, time.time()):
                if self._remote():
                    if self._replace(info.encode(), etag):
                        return self._took(info)
                    continue  # someone else took it over first: read again
                Path(self.path).unlink(missing_ok=True)
                continue
            hint = ""
            if not holder.expires and holder.host != info.host:
                hint = f"; if that process is gone, remove {self.path}"
            raise DatasetLocked(f"dataset {self.root} is locked: {holder.describe()}{hint}")
        raise DatasetLocked(f"could not take {self.path}: other processes kept taking it")

    def _took(self, info: LockInfo) -> "DatasetLock":
        self._info = info
        self._held = True
        self.lost = False
        self._stop.clear()
        self._renewer = threading.Thread(target=self._renew_loop, name=f"lock-lease-{self.purpose}", daemon=True)
        self._renewer.start()
        return self

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.lease_s / 3):
            try:
                self.renew()
            except Exception:  # noqa: BLE001 - a failed renewal is retried; expiry is the backstop
                continue

    def renew(self) -> None:
        """Push the lease end forward; marks the lock ``lost`` if someone else holds it now."""
        if not self._held or self._info is None:
            return
        holder, etag, _ = self._read_record()
        if holder is None or holder.token != self._info.token:
            self.lost = True
            self._stop.set()
            return
        info = LockInfo(**{**asdict(self._info), "expires": time.time() + self.lease_s})
        if self._replace(info.encode(), etag):
            self._info = info
        else:
            self.lost = True
            self._stop.set()

    def check(self) -> None:
        """Raise if the lease was lost (this process stalled past it and another took over)."""
        if self.lost:
            holder = self.read()
            raise DatasetLocked(
                f"lost the lock on {self.root} (lease expired); now held: "
                f"{holder.describe() if holder else 'by nobody'}"
            )

    def release(self) -> None:
        if not self._held:
            return
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join(timeout=5)
        holder = self.read()
        # Only remove our own record: after a lost lease it belongs to the new holder.
        if holder is not None and self._info is not None and holder.token == self._info.token:
            self.path.unlink(missing_ok=True)
        self._held = False

    def __enter__(self) -> "DatasetLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
