"""Where data lives: a local path or an object-store URL, behind one small path-like interface.

Every root bindset takes (sources, dataset, embedding store, checkpoint, report output) goes through
``as_location``: a local path (or ``file://`` URL) becomes a ``pathlib.Path`` and keeps today's
behaviour and speed; ``s3://``, ``gs://`` and ``az://`` URLs become an ``ObjectPath``, which offers
the part of ``pathlib`` the pipeline uses (``/``, ``name``, ``glob``, ``read_bytes``, ``is_file``...)
plus what object stores do differently: create-if-absent and compare-and-swap writes, ranged reads,
multipart uploads of local files, listing.

Library: obstore (Rust ``object_store``) for every byte bindset moves itself. It is the fastest of
the candidates measured here (8 MB put 0.14 s against s3fs 0.53 s), has create-if-absent
(``If-None-Match: *``) and ``If-Match`` puts as first-class modes, splits large puts into multipart
uploads, and reads credentials from the standard chain (environment, web identity, container and
instance metadata). Polars scans the same URLs with its own object_store client, so both read the same
configuration keys (``aws_endpoint``, ``aws_region``, ``aws_allow_http``...).

Configuration: the environment (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``...), overridden by
``--storage-option key=value`` (``object_store.set_storage_options``). An ``ObjectPath`` carries its options, so
it travels to Ray workers on other nodes intact (it pickles as URL + options, never as a client).

Modules: this one turns any root into a location (``as_location``) and holds the helpers that take
either kind; ``storage.object_path`` is ``ObjectPath``; ``storage.object_store`` parses URLs and holds
the clients, credentials, storage options and errors (``LocationError``, ``StoreError``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Union
from urllib.parse import urlsplit

from storage.object_path import ObjectPath
from storage.object_store import OBJECT_SCHEMES, LocationError, StoreError, store_error


def parse_storage_options(pairs: list[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise LocationError(f"--storage-option {pair!r}: expected key=value (e.g. aws_region=eu-west-1)")
        out[key.strip()] = value
    return out


def is_url(value: Any) -> bool:
    return isinstance(value, str) and "://" in value


def as_location(value: "str | os.PathLike | ObjectPath", options: dict[str, str] | None = None) -> "Location":
    """A local ``Path`` or an ``ObjectPath`` for ``value``; refuses URLs bindset cannot use.

    ``Path("s3://b/k")`` would silently become a local folder ``s3:/b/k``: URLs must reach here as
    strings, and anything with a scheme is either supported or an error."""
    if isinstance(value, ObjectPath):
        return value
    if isinstance(value, Path):
        text = str(value)
        if text.split("/", 1)[0].endswith(":") and text.split(":", 1)[0].lower() in (*OBJECT_SCHEMES, "file"):
            raise LocationError(
                f"{text!r} looks like a URL that lost a slash; pass it as a string ({text.split(':', 1)[0]}://...)"
            )
        return value
    text = os.fspath(value)
    if "://" not in text:
        scheme = text.split(":", 1)[0].lower() if ":" in text else ""
        if scheme in (*OBJECT_SCHEMES, "file"):
            # Even where a folder of that name exists (left by a tool that mangled a URL before):
            # "s3:/b/k" is a URL missing a slash far more often than a folder someone meant.
            raise LocationError(
                f"malformed URL {text!r}: expected {scheme}://bucket/path "
                f"(for a local folder of that name, write ./{text})"
            )
        return Path(text)
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise LocationError(f"file URL {text!r} names host {parts.netloc!r}; use file:///absolute/path")
        return Path(parts.path or "/")
    if scheme not in OBJECT_SCHEMES:
        raise LocationError(
            f"unsupported URL scheme {scheme!r} in {text!r}; use a local path, file://, s3://, gs:// or az://"
        )
    return ObjectPath(text, options)


Location = Union[Path, "ObjectPath"]


def is_remote(location: Any) -> bool:
    return isinstance(location, ObjectPath)


def polars_storage_options(location: "Location") -> dict[str, str] | None:
    """The storage options Polars' own object_store client needs for ``location``."""
    if not isinstance(location, ObjectPath):
        return None
    opts = {k: v for k, v in location.options.items()}
    if location.scheme == "s3":
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint and not any(k in opts for k in ("endpoint", "aws_endpoint", "aws_endpoint_url", "endpoint_url")):
            opts["aws_endpoint_url"] = endpoint
        if os.environ.get("AWS_ALLOW_HTTP") and not any(k in opts for k in ("allow_http", "aws_allow_http")):
            opts["aws_allow_http"] = os.environ["AWS_ALLOW_HTTP"]
    return opts or None


def check_reachable(location: "Location", write: bool = False) -> None:
    """Fail fast, in one line, when a URL cannot be used: missing bucket, no credentials, denied.
    Lists once (and, with ``write``, writes and deletes a probe object)."""
    if not isinstance(location, ObjectPath):
        return
    import obstore

    try:
        obstore.list_with_delimiter(location.store, prefix=location.listing_prefix())
    except Exception as exc:  # noqa: BLE001
        raise store_error(location, exc) from None
    if write:
        probe = location / f"_tmp/probe-{os.getpid()}-{os.urandom(4).hex()}"
        try:
            probe.write_bytes(b"bindset write probe")
            probe.unlink(missing_ok=True)
        except StoreError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise store_error(location, exc) from None


# -- helpers that take either kind of location --------------------------------------------------------


def read_bytes(location: "Location") -> bytes:
    return location.read_bytes()


def write_bytes_atomic(location: "Location", data: bytes) -> None:
    """All of ``data`` or nothing becomes visible at ``location``."""
    if isinstance(location, ObjectPath):
        location.write_bytes(data)  # one PUT is atomic
        return
    from storage.atomic import write_bytes_atomic as local_atomic

    local_atomic(Path(location), data)


def publish_file(local_tmp: Path, final: "Location") -> None:
    """Make a finished local file visible at ``final``: an atomic rename on disk, an upload (atomic
    per object; multipart for large files) on an object store, after which the local file is gone."""
    if isinstance(final, ObjectPath):
        final.upload(local_tmp)
        Path(local_tmp).unlink(missing_ok=True)
        return
    from storage.atomic import publish

    publish(Path(local_tmp), Path(final))


def remove_tree(location: "Location") -> None:
    """Delete a directory, or every object under a prefix."""
    if isinstance(location, ObjectPath):
        import obstore

        keys = [obj.key for obj in location.iter_objects()]
        for start in range(0, len(keys), 1000):
            try:
                obstore.delete(location.store, keys[start : start + 1000])
            except Exception as exc:  # noqa: BLE001
                raise store_error(location, exc) from exc
        return
    shutil.rmtree(location, ignore_errors=True)


def sha256_of(location: "Location", chunk: int = 8 << 20) -> str:
    if isinstance(location, ObjectPath):
        import obstore

        digest = hashlib.sha256()
        try:
            for block in obstore.get(location.store, location.key).stream(min_chunk_size=chunk):
                digest.update(block)
        except Exception as exc:  # noqa: BLE001
            raise store_error(location, exc) from exc
        return digest.hexdigest()
    from storage.atomic import sha256_file

    return sha256_file(Path(location))


def list_files(directory: "Location", suffix: str) -> list["Location"]:
    """Files directly in ``directory`` ending with ``suffix``, sorted; one LIST on object stores."""
    if isinstance(directory, ObjectPath):
        return sorted(p for p in directory.glob(f"*{suffix}"))
    directory = Path(directory)
    return sorted(directory.glob(f"*{suffix}")) if directory.is_dir() else []


class _LocalCopies:
    """Worker-private local copies of the last few remote inputs (media libraries need a seekable
    local file). The build reads one video's samples consecutively (the manifest is sorted by media
    file), so a handful of copies means each object is downloaded once per shard, however many
    samples (narrations) or modalities (video and audio of one mp4) use it."""

    def __init__(self, keep: int = 4):
        self.keep = keep
        self._dir: Path | None = None
        self._copies: dict[str, Path] = {}
        self._lock = threading.Lock()

    def get(self, location: "ObjectPath") -> Path:
        with self._lock:
            hit = self._copies.pop(location.url, None)
            if hit is not None and hit.exists():
                self._copies[location.url] = hit  # most recent last
                return hit
            if self._dir is None or not self._dir.is_dir():
                self._dir = Path(tempfile.mkdtemp(prefix="bindset-inputs-"))
            while len(self._copies) >= self.keep:
                oldest = next(iter(self._copies))
                self._copies.pop(oldest).unlink(missing_ok=True)
            digest = hashlib.sha1(location.url.encode()).hexdigest()[:16]
            path = self._dir / f"{digest}-{location.name or 'object'}"
            tmp = path.with_name(path.name + ".part")
            location.download(tmp)
            os.replace(tmp, path)
            self._copies[location.url] = path
            return path


_LOCAL_COPIES = _LocalCopies()


def local_copy(location: "Location") -> Path:
    """A local path with ``location``'s bytes: the path itself when local, else a cached download
    (valid until a few other inputs have been fetched; use ``local_file`` to own a copy)."""
    if not isinstance(location, ObjectPath):
        return Path(location)
    return _LOCAL_COPIES.get(location)


@contextmanager
def local_file(location: "Location") -> Iterator[Path]:
    """A local path holding ``location``'s bytes, for libraries that need one (PyAV seeks, h5py):
    the path itself for local files, a worker-private temp copy for objects, removed afterwards."""
    if not isinstance(location, ObjectPath):
        yield Path(location)
        return
    tmp_dir = Path(tempfile.mkdtemp(prefix="bindset-input-"))
    path = tmp_dir / (location.name or "object")
    try:
        location.download(path)
        yield path
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def display(location: "Location") -> str:
    return str(location)
