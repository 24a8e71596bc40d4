"""A dataset lock: one build (or embed) of a dataset at a time, with a message naming the holder.

The lock is a file created with O_EXCL holding host, pid and start time. A lock whose process is gone
(same host, pid not alive) is stale and is taken over; a lock from another host is only broken by
hand (we cannot see its processes), and the message says so.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from storage import format as fmt


class DatasetLocked(RuntimeError):
    pass


@dataclass(frozen=True)
class LockInfo:
    host: str
    pid: int
    started: str
    purpose: str

    def describe(self) -> str:
        return f"{self.purpose} by pid {self.pid} on {self.host}, started {self.started}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class DatasetLock:
    def __init__(self, root: Path, purpose: str = "build"):
        self.path = Path(root) / fmt.LOCKS_DIR / f"{purpose}.lock"
        self.purpose = purpose
        self._held = False

    def read(self) -> LockInfo | None:
        try:
            return LockInfo(**json.loads(self.path.read_text()))
        except (FileNotFoundError, ValueError, TypeError):
            return None

    def acquire(self) -> "DatasetLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        info = LockInfo(socket.gethostname(), os.getpid(), time.strftime("%Y-%m-%dT%H:%M:%S%z"), self.purpose)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self.read()
                if holder is not None and holder.host == info.host and not _pid_alive(holder.pid):
                    self.path.unlink(missing_ok=True)  # stale: its process died without releasing
                    continue
                who = holder.describe() if holder else "an unreadable lock file"
                hint = "" if holder is None or holder.host == info.host else (
                    f"; if that process is gone, remove {self.path}"
                )
                raise DatasetLocked(f"dataset {self.path.parents[1]} is locked: {who}{hint}") from None
            with os.fdopen(fd, "w") as fh:
                json.dump(info.__dict__, fh)
                fh.flush()
                os.fsync(fh.fileno())
            self._held = True
            return self
        raise DatasetLocked(f"could not take {self.path}")

    def release(self) -> None:
        if self._held:
            self.path.unlink(missing_ok=True)
            self._held = False

    def __enter__(self) -> "DatasetLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
