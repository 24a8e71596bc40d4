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
``--storage-option key=value`` (``set_storage_options``). An ``ObjectPath`` carries its options, so
it travels to Ray workers on other nodes intact (it pickles as URL + options, never as a client).
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import posixpath
import shutil
import tempfile
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Iterator, Union
from urllib.parse import urlsplit

OBJECT_SCHEMES = {"s3": "s3", "s3a": "s3", "gs": "gs", "gcs": "gs", "az": "az", "abfs": "az", "abfss": "az"}

_OPTIONS: dict[str, str] = {}  # process-wide --storage-option overrides
_STORES: dict[tuple, Any] = {}
_STORES_LOCK = threading.Lock()
_FORKED_AFTER_USE = False


def _after_fork_in_child() -> None:
    # obstore's async runtime does not survive fork(): a child of a process that used it hangs or
    # crashes on its first request (seen with DataLoader workers). Say so instead.
    global _FORKED_AFTER_USE, _STORES_LOCK
    _STORES_LOCK = threading.Lock()
    if _STORES:
        _FORKED_AFTER_USE = True
        _STORES.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


class LocationError(ValueError):
    """A URL bindset cannot use (malformed, unsupported scheme, unreachable bucket, no credentials).
    Its message is one line meant for the user."""


def set_storage_options(options: dict[str, str]) -> None:
    """Options every ``ObjectPath`` created afterwards carries (``--storage-option key=value``)."""
    _OPTIONS.clear()
    _OPTIONS.update({str(k): str(v) for k, v in options.items()})


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


def _bucket_ok(bucket: str) -> bool:
    return 3 <= len(bucket) <= 255 and all(c.isalnum() or c in "-._" for c in bucket)


@dataclass(frozen=True)
class _Stat:
    st_size: int
    st_mtime: float


class ObjectPath:
    """An object-store key (or key prefix) with the pathlib surface the pipeline uses.

    Directories do not exist on object stores: ``mkdir`` does nothing, ``is_dir`` means "some object
    lies below", and a write is atomic per object (readers see all of it or none of it)."""

    __slots__ = ("scheme", "bucket", "key", "options", "_size")

    def __init__(self, url: str, options: dict[str, str] | None = None, _size: int | None = None):
        parts = urlsplit(url)
        scheme = OBJECT_SCHEMES.get(parts.scheme.lower())
        if scheme is None:
            raise LocationError(f"unsupported URL scheme {parts.scheme!r} in {url!r}")
        if not parts.netloc or not _bucket_ok(parts.netloc):
            raise LocationError(
                f"malformed URL {url!r}: expected {parts.scheme}://bucket/path with a bucket name "
                "of 3 or more letters, digits, '-', '.' or '_'"
            )
        if parts.query or parts.fragment:
            raise LocationError(f"malformed URL {url!r}: query strings and fragments are not supported")
        key = posixpath.normpath(parts.path.lstrip("/")) if parts.path.strip("/") else ""
        if key in (".", ""):
            key = ""
        if key.startswith(".."):
            raise LocationError(f"malformed URL {url!r}: the path climbs above the bucket")
        self.scheme = scheme
        self.bucket = parts.netloc
        self.key = key
        self.options = dict(_OPTIONS if options is None else options)
        self._size = _size

    # -- identity ---------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.bucket}/{self.key}" if self.key else f"{self.scheme}://{self.bucket}"

    def __str__(self) -> str:
        return self.url

    def __repr__(self) -> str:
        return f"ObjectPath({self.url!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ObjectPath) and (self.scheme, self.bucket, self.key) == (
            other.scheme,
            other.bucket,
            other.key,
        )

    def __hash__(self) -> int:
        return hash((self.scheme, self.bucket, self.key))

    def __lt__(self, other: "ObjectPath") -> bool:
        return self.url < other.url

    def __reduce__(self):
        # Workers rebuild their own client from URL + options; clients never cross processes.
        return (ObjectPath, (self.url, self.options))

    def _child(self, key: str, size: int | None = None) -> "ObjectPath":
        return ObjectPath(f"{self.scheme}://{self.bucket}/{key}", self.options, _size=size)

    # -- pure path operations ----------------------------------------------------------------------
    def __truediv__(self, other: str | os.PathLike) -> "ObjectPath":
        rel = os.fspath(other)
        if rel.startswith("/"):
            raise ValueError(f"cannot join absolute path {rel!r} to {self.url}")
        joined = posixpath.normpath(posixpath.join(self.key, rel)) if self.key else posixpath.normpath(rel)
        if joined.startswith("..") or joined == ".":
            joined = "" if joined == "." else joined
        return self._child(joined)

    def joinpath(self, *parts: str) -> "ObjectPath":
        out = self
        for part in parts:
            out = out / part
        return out

    @property
    def name(self) -> str:
        return posixpath.basename(self.key)

    @property
    def stem(self) -> str:
        return PurePosixPath(self.name).stem if self.name else ""

    @property
    def suffix(self) -> str:
        return PurePosixPath(self.name).suffix if self.name else ""

    @property
    def parent(self) -> "ObjectPath":
        return self._child(posixpath.dirname(self.key))

    @property
    def parents(self) -> list["ObjectPath"]:
        out, cur = [], self
        while cur.key:
            cur = cur.parent
            out.append(cur)
        return out

    def with_name(self, name: str) -> "ObjectPath":
        return self.parent / name

    def with_suffix(self, suffix: str) -> "ObjectPath":
        return self.with_name(self.stem + suffix)

    def resolve(self) -> "ObjectPath":
        return self  # keys are normalized at construction; there are no symlinks

    def absolute(self) -> "ObjectPath":
        return self

    def as_posix(self) -> str:
        return self.url

    def relative_to(self, other: "ObjectPath") -> PurePosixPath:
        if not self.is_relative_to(other):
            raise ValueError(f"{self.url} is not inside {other.url}")
        return PurePosixPath(self.key[len(other.key) :].lstrip("/") or ".")

    def is_relative_to(self, other: "ObjectPath") -> bool:
        if not isinstance(other, ObjectPath) or (self.scheme, self.bucket) != (other.scheme, other.bucket):
            return False
        return not other.key or self.key == other.key or self.key.startswith(other.key + "/")

    # -- the store -----------------------------------------------------------------------------------
    @property
    def store(self):
        if _FORKED_AFTER_USE:
            raise LocationError(
                f"{self.url}: this process was forked from one that had used object storage, "
                "which cannot work; start workers with the 'spawn' method (or read through "
                "storage.cache, which does)"
            )
        ident = (self.scheme, self.bucket, tuple(sorted(self.options.items())))
        with _STORES_LOCK:
            store = _STORES.get(ident)
            if store is None:
                store = _STORES[ident] = _make_store(self.scheme, self.bucket, self.options)
        return store

    def _prefix(self) -> str | None:
        return f"{self.key}/" if self.key else None

    # -- queries -------------------------------------------------------------------------------------
    def head(self) -> dict[str, Any] | None:
        import obstore

        if not self.key:
            return None
        try:
            return obstore.head(self.store, self.key)
        except FileNotFoundError:
            return None
        except Exception as exc:  # noqa: BLE001 - store errors become one readable line
            raise store_error(self, exc) from exc

    # ``_size``: None = not known yet, -1 = known to be a prefix with objects below (a "directory",
    # from a listing), >= 0 = a known object of that size. Listings fill it in, so a scan over a
    # listed tree costs no extra request per file.
    def is_file(self) -> bool:
        if self._size is not None:
            return self._size >= 0
        return self.head() is not None

    def is_dir(self) -> bool:
        import obstore

        if self._size is not None:
            return self._size == -1
        try:
            listing = obstore.list_with_delimiter(self.store, prefix=self._prefix())
        except Exception as exc:  # noqa: BLE001
            raise store_error(self, exc) from exc
        return bool(listing["objects"] or listing["common_prefixes"])

    def exists(self) -> bool:
        return self.is_file() or self.is_dir()

    def stat(self) -> _Stat:
        meta = self.head()
        if meta is None:
            raise FileNotFoundError(f"{self.url} does not exist")
        return _Stat(int(meta["size"]), meta["last_modified"].timestamp())

    def size(self) -> int:
        return self._size if self._size is not None else self.stat().st_size

    def iter_objects(self) -> Iterator["ObjectPath"]:
        """Every object below this prefix (recursive), in key order, each knowing its size."""
        import obstore

        try:
            for batch in obstore.list(self.store, prefix=self._prefix(), chunk_size=1000):
                for meta in batch:
                    yield self._child(meta["path"], size=int(meta["size"]))
        except Exception as exc:  # noqa: BLE001
            raise store_error(self, exc) from exc

    def iterdir(self) -> Iterator["ObjectPath"]:
        import obstore

        try:
            listing = obstore.list_with_delimiter(self.store, prefix=self._prefix())
        except Exception as exc:  # noqa: BLE001
            raise store_error(self, exc) from exc
        for prefix in listing["common_prefixes"]:
            yield self._child(prefix.rstrip("/"), size=-1)
        for meta in listing["objects"]:
            yield self._child(meta["path"], size=int(meta["size"]))

    def glob(self, pattern: str) -> Iterator["ObjectPath"]:
        """Objects and implied directories matching ``pattern`` relative to this prefix (``*`` stays
        within one level, a leading ``**/`` matches at any depth), from one recursive listing."""
        recursive = pattern.startswith("**/")
        tail = pattern[3:] if recursive else pattern
        depth = tail.count("/") + 1
        entries: dict[str, int] = {}
        for obj in self.iter_objects():
            rel = obj.key[len(self.key) :].lstrip("/") if self.key else obj.key
            parts = rel.split("/")
            entries[rel] = obj._size if obj._size is not None else 0
            for i in range(1, len(parts)):
                entries.setdefault("/".join(parts[:i]), -1)
        for rel in sorted(entries):
            parts = rel.split("/")
            if recursive:
                matched = len(parts) >= depth and fnmatch.fnmatchcase("/".join(parts[-depth:]), tail)
            else:
                matched = len(parts) == depth and fnmatch.fnmatchcase(rel, tail)
            if matched:
                yield self._child(f"{self.key}/{rel}" if self.key else rel, size=entries[rel])

    def rglob(self, pattern: str) -> Iterator["ObjectPath"]:
        return self.glob("**/" + pattern)

    # -- reads -----------------------------------------------------------------------------------------
    def read_bytes(self) -> bytes:
        import obstore

        try:
            return bytes(obstore.get(self.store, self.key).bytes())
        except FileNotFoundError:
            raise FileNotFoundError(f"{self.url} does not exist") from None
        except Exception as exc:  # noqa: BLE001
            raise store_error(self, exc) from exc

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)

    def read_range(self, start: int, end: int) -> bytes:
        import obstore

        try:
            return bytes(obstore.get_range(self.store, self.key, start=start, end=end))
        except FileNotFoundError:
            raise FileNotFoundError(f"{self.url} does not exist") from None
        except Exception as exc:  # noqa: BLE001
            raise store_error(self, exc) from exc

    def download(self, local: Path) -> int:
        """Stream the object into a local file; returns its size."""
        import obstore

        local = Path(local)
        local.parent.mkdir(parents=True, exist_ok=True)
        written = 0
        try:
            result = obstore.get(self.store, self.key)
            with open(local, "wb") as fh:
                for chunk in result.stream(min_chunk_size=8 * 1024 * 1024):
                    fh.write(chunk)
                    written += len(chunk)
        except FileNotFoundError:
            raise FileNotFoundError(f"{self.url} does not exist") from None
        except OSError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise store_error(self, exc) from exc
        return written

    # -- writes ------------------------------------------------------------------------------------------
    def mkdir(self, parents: bool = False, exist_ok: bool = False) -> None:
        """Nothing to do: object stores have no directories."""

    def _put(self, data, mode=None) -> dict[str, Any]:
        import obstore

        try:
            return obstore.put(self.store, self.key, data, mode=mode, chunk_size=MULTIPART_CHUNK_BYTES)
        except Exception as exc:  # noqa: BLE001
            if mode is not None and type(exc).__name__ in ("AlreadyExistsError", "PreconditionError"):
                raise
            raise store_error(self, exc) from exc

    def write_bytes(self, data: bytes) -> int:
        self._put(bytes(data))
        return len(data)

    def write_text(self, text: str, encoding: str = "utf-8") -> int:
        return self.write_bytes(text.encode(encoding))

    def upload(self, local: Path) -> None:
        """Upload a local file; large files go up as a multipart upload, which stays invisible
        until its last part completes (a killed uploader leaves no object)."""
        with open(local, "rb") as fh:
            self._put(fh)

    def create_if_absent(self, data: bytes) -> str | None:
        """Write only if no object exists here (``If-None-Match: *``); the new e-tag, or None if
        another writer got there first."""
        from obstore.exceptions import AlreadyExistsError, PreconditionError

        try:
            return self._put(bytes(data), mode="create").get("e_tag") or ""
        except (AlreadyExistsError, PreconditionError):
            return None

    def replace_if_match(self, data: bytes, e_tag: str) -> str | None:
        """Overwrite only if the object still has ``e_tag`` (``If-Match``); the new e-tag, or None."""
        from obstore.exceptions import AlreadyExistsError, PreconditionError

        try:
            return self._put(bytes(data), mode={"e_tag": e_tag}).get("e_tag") or ""
        except (AlreadyExistsError, PreconditionError, FileNotFoundError):
            return None

    def unlink(self, missing_ok: bool = False) -> None:
        import obstore

        if not missing_ok and self.head() is None:
            raise FileNotFoundError(f"{self.url} does not exist")
        try:
            obstore.delete(self.store, self.key)
        except FileNotFoundError:
            pass
        except Exception as exc:  # noqa: BLE001
            raise store_error(self, exc) from exc


MULTIPART_CHUNK_BYTES = 16 * 1024 * 1024  # parts of large uploads; object_store puts smaller files in one request


def _make_store(scheme: str, bucket: str, options: dict[str, str]):
    from obstore.store import AzureStore, GCSStore, S3Store

    config = dict(options)
    client: dict[str, Any] = {}
    # Plain-HTTP endpoints (a local S3 server) must be allowed explicitly, by env or option.
    allow_http = (
        config.pop("allow_http", None) or config.pop("aws_allow_http", None) or os.environ.get("AWS_ALLOW_HTTP")
    )
    if allow_http is not None:
        client["allow_http"] = str(allow_http).lower() in ("1", "true", "yes")
    if scheme == "s3" and _no_credential_source(config):
        raise StoreError(
            f"no credentials for s3://{bucket}: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a profile "
            "or web identity, or pass --storage-option (instance metadata is disabled by "
            "AWS_EC2_METADATA_DISABLED)"
        )
    try:
        if scheme == "s3":
            provider = _profile_credentials(config)
            return S3Store(bucket, config=config or None, client_options=client or None, credential_provider=provider)
        if scheme == "gs":
            return GCSStore(bucket, config=config or None, client_options=client or None)
        return AzureStore(bucket, config=config or None, client_options=client or None)
    except Exception as exc:  # noqa: BLE001
        raise LocationError(f"storage options for {scheme}://{bucket}: {_first_line(exc)}") from None


def _no_credential_source(config: dict[str, str]) -> bool:
    """True when AWS_EC2_METADATA_DISABLED rules out instance metadata and no other source of the
    chain is configured (object_store would still ask 169.254.169.254, which boto3 would not)."""
    if os.environ.get("AWS_EC2_METADATA_DISABLED", "").lower() not in ("1", "true"):
        return False
    keys = ("access_key_id", "aws_access_key_id", "skip_signature", "aws_skip_signature")
    env = (
        "AWS_ACCESS_KEY_ID",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_PROFILE",
    )
    if any(k in config for k in keys) or any(os.environ.get(k) for k in env):
        return False
    files = [
        os.environ.get("AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials"),
        os.environ.get("AWS_CONFIG_FILE", "~/.aws/config"),
    ]
    return not any(Path(f).expanduser().is_file() for f in files)


def _profile_credentials(config: dict[str, str]):
    """boto3's full provider chain when the user relies on a shared credentials/config profile
    (``AWS_PROFILE``, ``~/.aws/credentials``), which object_store's own chain (environment, web
    identity, container and instance metadata) does not read; None otherwise."""
    if any(k in config for k in ("access_key_id", "aws_access_key_id")) or os.environ.get("AWS_ACCESS_KEY_ID"):
        return None
    files = [
        os.environ.get("AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials"),
        os.environ.get("AWS_CONFIG_FILE", "~/.aws/config"),
    ]
    if not os.environ.get("AWS_PROFILE") and not any(Path(f).expanduser().is_file() for f in files):
        return None
    try:
        from obstore.auth.boto3 import Boto3CredentialProvider
    except ImportError:  # boto3 not installed: object_store's chain only
        return None
    return Boto3CredentialProvider()


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


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class StoreError(OSError):
    """An object-store request failed (no such bucket, no credentials, denied, unreachable)."""


def store_error(location: ObjectPath, exc: BaseException) -> StoreError:
    """One line a user can act on, from obstore's multi-line error."""
    text = str(exc)
    first = _first_line(exc)
    where = f"{location.scheme}://{location.bucket}"
    # With no keys the chain falls through to the instance-metadata service (169.254.169.254, or
    # AWS_METADATA_ENDPOINT): its failure means "no credentials", not "unreachable store".
    if (
        "169.254.169.254" in text
        or "/latest/api/token" in text
        or "/latest/meta-data" in text
        or "credential" in text.lower()
        or "Unauthenticated" in type(exc).__name__
    ):
        return StoreError(
            f"no credentials for {where}: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (or a "
            f"profile, web identity or instance role) or pass --storage-option ({first[:160]})"
        )
    if "NoSuchBucket" in text or ("404" in text and "list" in text.lower()):
        return StoreError(f"bucket {where} does not exist or is not visible with these credentials")
    if "403" in text or "AccessDenied" in text or "PermissionDenied" in type(exc).__name__:
        return StoreError(f"access denied to {location.url}: {first[:200]}")
    if "connect" in text.lower() or "dns" in text.lower():
        return StoreError(f"cannot reach the object store for {where}: {first[:200]}")
    return StoreError(f"{location.url}: {first[:300]}")


def check_reachable(location: "Location", write: bool = False) -> None:
    """Fail fast, in one line, when a URL cannot be used: missing bucket, no credentials, denied.
    Lists once (and, with ``write``, writes and deletes a probe object)."""
    if not isinstance(location, ObjectPath):
        return
    import obstore

    try:
        obstore.list_with_delimiter(location.store, prefix=location._prefix())
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
