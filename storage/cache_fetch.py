"""Moving shard bytes into the shard cache (``storage.cache``): the streaming, hashing download, the
helper process forked readers download through, and the background prefetch thread.

Prefetch: ``ShardCache.prefetch(shards)`` fetches the next shards of a reader's plan on one background thread,
best effort (it waits for no room and evicts none of the announced shards; a failure is left for the
foreground fetch to report).

Fork: obstore's tokio runtime does not survive ``fork()`` (a forked DataLoader worker that touches it
crashes or hangs), so a process forked after ``storage.cache`` was imported downloads through a helper
process it starts with ``exec`` (a fresh interpreter running only this file's ``_serve`` and
``object_store.py``: no torch, no polars), fed one JSON line per shard. Spawned workers and the main
process download in-process.

This file is loaded by path in that helper (so is ``object_store.py``): standard library only at
import, and no ``storage`` import outside ``download``'s in-process branch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger(__name__)

STREAM_CHUNK_BYTES = 8 << 20


def download(
    url: str, options: dict[str, str], fd: int, expected_size: int | None, stores: Any = None
) -> tuple[str, int, int]:
    """Stream one object into ``fd`` (from offset 0) while hashing it: (sha256, size, requests).

    One GET whatever the size. A size other than expected is reported without reading the body
    (the response head carries it), and never more than ``expected_size`` bytes are written, so a
    wrong object cannot push the cache over its limit. ``expected_size`` None: any size. ``stores``: the
    ``storage.object_store`` module (the helper process passes the copy it loaded by path)."""
    import obstore

    if stores is None:
        from storage import object_store as stores

    scheme, bucket, key = stores.parse_object_url(url)
    store = stores.get_store(scheme, bucket, dict(options), url)
    try:
        result = obstore.get(store, key)
    except FileNotFoundError:
        raise FileNotFoundError(f"{url} does not exist") from None
    size = int(result.meta["size"])
    if expected_size is None:
        expected_size = size
    elif size != expected_size:
        return "", size, 1
    digest = hashlib.sha256()
    written = 0
    os.lseek(fd, 0, os.SEEK_SET)
    for chunk in result.stream(min_chunk_size=STREAM_CHUNK_BYTES):
        view = memoryview(chunk)
        if written + len(view) > expected_size:
            return "", written + len(view), 1
        digest.update(view)
        while view:
            n = os.write(fd, view)
            view = view[n:]
            written += n
    return digest.hexdigest(), written, 1


# The helper a forked process downloads through: a fresh interpreter (its own tokio runtime) that
# loads only this file and object_store.py, by path (importing the ``storage`` package would pull in
# polars and h5py for nothing).
_HELPER_CODE = (
    "import importlib.util as u, sys\n"
    "s = u.spec_from_file_location('_bindset_cache_helper', sys.argv[1])\n"
    "m = u.module_from_spec(s); sys.modules[s.name] = m; s.loader.exec_module(m); m._serve(sys.argv[2])\n"
)


class HelperFetcher:
    """Client of one helper process; one fetch at a time (the prefetch thread and the reader share it)."""

    def __init__(self) -> None:
        object_store_py = str(Path(__file__).with_name("object_store.py"))
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _HELPER_CODE, __file__, object_store_py],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            close_fds=True,
        )
        self._lock = threading.Lock()

    def fetch(self, shard: Any, part: Path) -> tuple[str, int, int]:
        """Fetch a ``RemoteShard`` into the reserved ``part`` file: (sha256, size, requests)."""
        reply = self._request(
            {"url": shard.url, "options": shard.options, "path": str(part), "size": shard.size}, shard.label
        )
        return reply["sha256"], int(reply["size"]), int(reply["requests"])

    def fetch_any(self, url: str, options: dict[str, str], path: Path) -> None:
        self._request({"url": url, "options": options, "path": str(path), "size": None}, url)

    def _request(self, request: dict[str, Any], label: str) -> dict[str, Any]:
        with self._lock:
            assert self._proc.stdin is not None and self._proc.stdout is not None
            try:
                self._proc.stdin.write(json.dumps(request).encode() + b"\n")
                self._proc.stdin.flush()
                line = self._proc.stdout.readline()
            except BrokenPipeError:
                line = b""
        if not line:
            raise OSError(f"{label}: the download helper process exited (code {self._proc.poll()})")
        reply = json.loads(line)
        if reply.get("missing"):
            raise FileNotFoundError(reply["error"])
        if not reply["ok"]:
            raise OSError(f"{label}: {reply['error']}")
        return reply

    def close(self) -> None:
        try:
            if self._proc.stdin is not None:
                self._proc.stdin.close()  # EOF: the helper exits
            self._proc.wait(timeout=10)
        except Exception:  # noqa: BLE001 - best effort at shutdown
            self._proc.kill()


def _serve(object_store_py: str) -> None:
    """Helper main loop: one JSON request per line on stdin, one JSON reply per line on stdout."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_bindset_object_store_helper", object_store_py)
    stores = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = stores  # dataclasses look their module up there
    spec.loader.exec_module(stores)
    for line in sys.stdin.buffer:
        request = json.loads(line)
        try:
            fd = os.open(request["path"], os.O_WRONLY)
            try:
                expected = None if request["size"] is None else int(request["size"])
                sha, size, requests = download(request["url"], request["options"], fd, expected, stores=stores)
            finally:
                os.close(fd)
            reply = {"ok": True, "sha256": sha, "size": size, "requests": requests}
        except FileNotFoundError as exc:
            reply = {"ok": False, "missing": True, "error": str(exc)}
        except Exception as exc:  # noqa: BLE001 - reported to the reader, which raises it
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        sys.stdout.buffer.write(json.dumps(reply).encode() + b"\n")
        sys.stdout.buffer.flush()


class Prefetcher:
    """One daemon thread fetching the most recently announced shards, in order, best effort:
    ``fetch(shard)`` for each one ``is_cached(shard)`` finds missing (a failure is only logged: the
    reader's own fetch reports it)."""

    def __init__(self, fetch: Callable[[Any], object], is_cached: Callable[[Any], bool]):
        self._fetch = fetch
        self._is_cached = is_cached
        self._cond = threading.Condition()
        self._wanted: list[Any] = []
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="bindset-shard-prefetch", daemon=True)
        self._thread.start()

    def want(self, shards: list[Any]) -> None:
        with self._cond:
            self._wanted = list(shards)
            self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._wanted = []
            self._cond.notify()
        self._thread.join(timeout=30)

    def _next(self) -> Any:
        with self._cond:
            while not self._stopped and not self._wanted:
                self._cond.wait()
            return None if self._stopped else self._wanted.pop(0)

    def _run(self) -> None:
        while True:
            shard = self._next()
            if shard is None:
                return
            if self._is_cached(shard):
                continue
            try:
                self._fetch(shard)
            except Exception as exc:  # noqa: BLE001 - the reader's own fetch reports it
                log.debug("prefetch of %s failed: %s", shard.label, exc)
