"""The ANN index's files (``ann``): the embedding store's shard files it covers, the faiss and ids
files of each generation, the manifest, and whether the index is fresh.

Layout (``embeddings/<encoder-id>/index/``)::

    <modality>.json                  the manifest and commit point (written last)
    <modality>-g00003-<tag>.faiss    the index of generation 3 (faiss' own format)
    <modality>-g00003-<tag>.ids.parquet   row i = faiss id i -> sample_id

The manifest lists every store file the index covers with its size, version (mtime on disk, e-tag
on an object store) and sha256. ``index_status`` compares it with a listing of the store: a file
added since makes the index *stale* (``build_index`` then adds only those files: incremental), a
file changed or removed makes it stale too (``build_index`` rebuilds it). Search never uses a stale
index: it warns (``IndexStaleWarning``, naming what changed) and falls back to exact search.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import polars as pl

from pipelines.curation.ann_index import normalize
from storage.embeddings import embedding_dir
from storage.location import Location, is_remote, local_file, publish_file

INDEX_FORMAT = 1
INDEX_DIR = "index"

# -- the store's files ------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoreFile:
    name: str
    size: int
    version: str  # mtime_ns on disk, e-tag on an object store
    location: Any = field(compare=False, repr=False, default=None)


def store_files(root: str | Path | Location, encoder_id: str) -> list[StoreFile]:
    """The store's shard files (``NNNNN.parquet``) with size and version, from one listing."""
    directory = embedding_dir(root, encoder_id)
    out: list[StoreFile] = []
    if is_remote(directory):
        import obstore

        from storage.object_store import store_error

        try:
            for batch in obstore.list(directory.store, prefix=f"{directory.key}/", chunk_size=1000):
                for meta in batch:
                    rel = meta["path"][len(directory.key) + 1 :]
                    if "/" in rel or not rel.endswith(".parquet") or not rel[:-8].isdigit():
                        continue
                    out.append(
                        StoreFile(
                            rel, int(meta["size"]), str(meta.get("e_tag") or meta["last_modified"]), directory / rel
                        )
                    )
        except Exception as exc:  # noqa: BLE001 - store errors become one readable line
            raise store_error(directory, exc) from exc
    elif Path(directory).is_dir():
        for p in Path(directory).glob("*.parquet"):
            if p.stem.isdigit():
                st = p.stat()
                out.append(StoreFile(p.name, st.st_size, str(st.st_mtime_ns), p))
    return sorted(out, key=lambda f: f.name)


def sha256_bytes(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def read_file_vectors(file: StoreFile, modality: str) -> tuple[list[str], np.ndarray, str]:
    """``(sample_ids, normalized [n,D] float32, sha256 of the file)`` of one store file's non-null rows."""
    data = file.location.read_bytes()
    frame = pl.read_parquet(io.BytesIO(data))
    if modality not in frame.columns:
        raise KeyError(f"store file {file.location} has no column {modality!r} (has {frame.columns[1:]})")
    frame = frame.select("sample_id", modality).filter(pl.col(modality).is_not_null())
    if frame.height == 0:
        return [], np.zeros((0, 0), np.float32), sha256_bytes(data)
    return frame["sample_id"].to_list(), normalize(frame[modality].to_numpy()), sha256_bytes(data)


# -- manifest and status ----------------------------------------------------------------------------------


def index_dir(root: str | Path | Location, encoder_id: str) -> Location:
    return embedding_dir(root, encoder_id) / INDEX_DIR


def manifest_path(root: str | Path | Location, encoder_id: str, modality: str) -> Location:
    if not modality.replace("_", "").isalnum():
        raise ValueError(f"modality {modality!r} is not a plain column name")
    return index_dir(root, encoder_id) / f"{modality}.json"


def read_manifest(root: str | Path | Location, encoder_id: str, modality: str) -> dict[str, Any] | None:
    try:
        return json.loads(manifest_path(root, encoder_id, modality).read_text())
    except FileNotFoundError:
        return None


@dataclass
class IndexStatus:
    """``state``: "missing", "fresh" or "stale"; the store files added, changed and removed since."""

    state: str
    manifest: dict[str, Any] | None = None
    added: list[StoreFile] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    @property
    def fresh(self) -> bool:
        return self.state == "fresh"

    @property
    def appendable(self) -> bool:
        """Stale only because files were added: the index can be extended without a rebuild."""
        return self.state == "stale" and not self.changed and not self.removed

    def describe(self) -> str:
        if self.state != "stale":
            return self.state
        parts = []
        for what, names in (
            ("added", [f.name for f in self.added]),
            ("changed", self.changed),
            ("removed", self.removed),
        ):
            if names:
                shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
                parts.append(f"{len(names)} store file(s) {what} since it was built ({shown})")
        return "stale: " + "; ".join(parts)


def index_status(
    root: str | Path | Location, encoder_id: str, modality: str, files: list[StoreFile] | None = None
) -> IndexStatus:
    """Compare the manifest with a listing of the store. A file whose size matches but whose version
    (mtime/e-tag) does not is hashed: a copied dataset with new mtimes stays fresh."""
    manifest = read_manifest(root, encoder_id, modality)
    if manifest is None:
        return IndexStatus("missing")
    files = store_files(root, encoder_id) if files is None else files
    covered = {f["name"]: f for f in manifest["files"]}
    now = {f.name: f for f in files}
    added = [f for name, f in now.items() if name not in covered]
    removed = sorted(name for name in covered if name not in now)
    changed = []
    for name, rec in covered.items():
        f = now.get(name)
        if f is None or (f.size == rec["size"] and f.version == rec["version"]):
            continue
        if f.size != rec["size"] or sha256_bytes(f.location.read_bytes()) != rec["sha256"]:
            changed.append(name)
    state = "stale" if (added or removed or changed) else "fresh"
    return IndexStatus(state, manifest, added, sorted(changed), removed)


def write_index_file(index, final: Location) -> tuple[str, int]:
    """faiss' own format (no pickle): written to a local temp file, published atomically."""
    import faiss

    local_dir = None if is_remote(final) else Path(final).parent
    if local_dir is not None:
        local_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".index-", suffix=".faiss.tmp", dir=local_dir)
    os.close(fd)
    try:
        faiss.write_index(index, tmp)
        import hashlib

        digest = hashlib.sha256()
        with open(tmp, "rb") as fh:
            for block in iter(lambda: fh.read(8 << 20), b""):
                digest.update(block)
        size = os.path.getsize(tmp)
        publish_file(Path(tmp), final)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return digest.hexdigest(), size


def read_index_file(location: Location):
    import faiss

    with local_file(location) as path:
        return faiss.read_index(str(path))


def ids_bytes(sample_ids: Sequence[str]) -> bytes:
    buf = io.BytesIO()
    pl.DataFrame({"sample_id": pl.Series(list(sample_ids), dtype=pl.Utf8)}).write_parquet(buf)
    return buf.getvalue()
