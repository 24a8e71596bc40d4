"""``ObjectPath``: an object-store key with the part of ``pathlib`` the pipeline uses (``storage.location``
makes one from a URL). Clients, credentials and errors come from ``storage.object_store``.
"""

from __future__ import annotations

import fnmatch
import os
import posixpath
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Iterator

from storage.object_store import MULTIPART_CHUNK_BYTES, default_options, get_store, parse_object_url, store_error


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
        self.scheme, self.bucket, self.key = parse_object_url(url)
        self.options = default_options() if options is None else dict(options)
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
        return get_store(self.scheme, self.bucket, self.options, self.url)

    def listing_prefix(self) -> str | None:
        """The key prefix that lists what lies below (None: the whole bucket)."""
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
            listing = obstore.list_with_delimiter(self.store, prefix=self.listing_prefix())
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
            for batch in obstore.list(self.store, prefix=self.listing_prefix(), chunk_size=1000):
                for meta in batch:
                    yield self._child(meta["path"], size=int(meta["size"]))
        except Exception as exc:  # noqa: BLE001
            raise store_error(self, exc) from exc

    def iterdir(self) -> Iterator["ObjectPath"]:
        import obstore

        try:
            listing = obstore.list_with_delimiter(self.store, prefix=self.listing_prefix())
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
