"""An approximate nearest-neighbour index per embedding store and modality, beside the store.

    build_index("/data/as", "openclip-ViT-H-14-3f2a9c0d1b7e-p1", "image")   # or extends it
    hits = search_index("/data/as", "openclip-...-p1", "image", query_vectors, k=10)

Library: **faiss-cpu**, not usearch. Both are well kept and both would do for search alone; faiss
wins on what the rest of bindset needs from it on CPUs:

- build cost: its IVF index is trained by k-means on a sample (40 vectors per list) and filled by one
  assignment pass, about a minute or two for 1M x 1024 on 2 cores (bench/bench_ann.py); an HNSW graph (usearch's only
  index) costs hundreds of distance evaluations per insert: measured here, faiss' own HNSW took 72 s
  for 50k x 1024, i.e. far beyond the ~15 min budget at 1M;
- incremental adds: shards embedded later go into the trained IVF lists without touching the rest
  (``add`` with our own ids); the kind, list count and probe count are recorded, and a store that
  outgrows what the index was trained for is rebuilt on purpose, not silently;
- one library for every variant we tune (exact ``Flat`` for small stores, IVF over float32, float16
  or int8 codes), with files written by ``faiss.write_index`` (no pickle anywhere).

Layout (``embeddings/<encoder-id>/index/``)::

    <modality>.json                  the manifest and commit point (written last)
    <modality>-g00003-<tag>.faiss    the index of generation 3 (faiss' own format)
    <modality>-g00003-<tag>.ids.parquet   row i = faiss id i -> sample_id

The manifest lists every store file the index covers with its size, version (mtime on disk, e-tag
on an object store) and sha256. ``index_status`` compares it with a listing of the store: a file
added since makes the index *stale* (``build_index`` then adds only those files: incremental), a
file changed or removed makes it stale too (``build_index`` rebuilds it). Search never uses a stale
index: it warns (``IndexStaleWarning``, naming what changed) and falls back to exact search.

Kind: stores under ``flat_below`` vectors (20,000) get an exact ``IndexFlatIP`` (an index that
answers like numpy, so small stores lose nothing); larger ones ``IVF<nlist>`` with nlist about
sqrt(N) and float32 (``flat``), float16 (``fp16``) or int8 (``sq8``) codes. faiss suggests 4 to 16
sqrt(N) lists; we take fewer because k-means costs grow with nlist^2 (40 training vectors per
list): at 1M x 1024 on 2 cores, 1,000 lists trained in 4-15 s and the whole build took 15-31 s
(bench/bench_ann.py), where 4,000 lists would take minutes to train. The number of lists
probed per query (``nprobe``) is tuned at build time: the smallest power of two whose recall@10 on
256 of the store's own vectors (themselves left out) reaches ``target_recall`` (0.95) against exact
search; the manifest records it with the recall and the measured query times, index and exact.
On data with no neighbourhood structure (random unit vectors) that tuning ends near an exhaustive
scan: the index is then exact but no faster, and the manifest says so (bench/bench_ann.py).
"""

from __future__ import annotations

import io
import json
import math
import os
import tempfile
import time
import warnings
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import polars as pl

from storage.embeddings import embedding_dir
from storage.location import Location, as_location, is_remote, local_file, publish_file, write_bytes_atomic

INDEX_FORMAT = 1
INDEX_DIR = "index"
QUANTIZATIONS = ("flat", "fp16", "sq8")
_FACTORY_CODES = {"flat": "Flat", "fp16": "SQfp16", "sq8": "SQ8"}


class IndexStaleWarning(UserWarning):
    """An index exists but no longer matches its store: search falls back to exact."""


@dataclass(frozen=True)
class IndexParams:
    """How an index is built. ``nlist``/``nprobe`` None: chosen from the store (module doc)."""

    quantization: str = "flat"
    nlist: int | None = None
    nprobe: int | None = None
    flat_below: int = 20_000
    train_per_list: int = 40
    niter: int = 10
    target_recall: float = 0.95
    tune_queries: int = 256
    seed: int = 0

    def __post_init__(self) -> None:
        if self.quantization not in QUANTIZATIONS:
            raise ValueError(f"quantization must be one of {QUANTIZATIONS}, got {self.quantization!r}")
        if self.nlist is not None and self.nlist < 1:
            raise ValueError(f"nlist must be >= 1, got {self.nlist}")
        if not 0 < self.target_recall <= 1:
            raise ValueError(f"target_recall must be in (0, 1], got {self.target_recall}")


# -- vectors --------------------------------------------------------------------------------------------


def normalize(vectors: np.ndarray) -> np.ndarray:
    """float32 rows of unit length (zero rows stay zero): cosine = inner product."""
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    if x.ndim == 1:
        x = x[None]
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.maximum(norms, np.float32(1e-12)))


def default_nlist(n: int) -> int:
    """About sqrt(N) lists (module doc), at least 39 training vectors each (faiss' own floor)."""
    return int(max(1, min(math.sqrt(n), n // 39)))


def make_index(dim: int, n: int, params: IndexParams = IndexParams()):
    """An empty faiss index of the kind ``params`` gives for ``n`` vectors (inner product)."""
    import faiss

    if n < params.flat_below and params.nlist is None:
        return faiss.IndexFlatIP(dim)
    nlist = params.nlist or default_nlist(n)
    index = faiss.index_factory(dim, f"IVF{nlist},{_FACTORY_CODES[params.quantization]}", faiss.METRIC_INNER_PRODUCT)
    ivf = faiss.extract_index_ivf(index)
    ivf.cp.niter = params.niter
    ivf.cp.seed = params.seed
    ivf.cp.max_points_per_centroid = max(params.train_per_list, 39)
    return index


def train_index(index, vectors: np.ndarray, params: IndexParams = IndexParams()) -> float:
    """k-means on a seeded sample of ``params.train_per_list`` vectors per list; seconds taken."""
    started = time.perf_counter()
    if not index.is_trained:
        nlist = index_nlist(index)
        size = min(len(vectors), max(nlist * params.train_per_list, nlist))
        rng = np.random.default_rng(params.seed)
        sample = vectors if size >= len(vectors) else vectors[np.sort(rng.choice(len(vectors), size, replace=False))]
        index.train(np.ascontiguousarray(sample, dtype=np.float32))
    return time.perf_counter() - started


def add_vectors(index, vectors: np.ndarray, first_id: int, chunk: int = 65_536) -> None:
    """Add with ids ``first_id, first_id+1, ...`` (a Flat index numbers them itself, in order)."""
    import faiss

    for start in range(0, len(vectors), chunk):
        block = np.ascontiguousarray(vectors[start : start + chunk], dtype=np.float32)
        if isinstance(index, faiss.IndexFlat):
            index.add(block)
        else:
            ids = np.arange(first_id + start, first_id + start + len(block), dtype=np.int64)
            index.add_with_ids(block, ids)


def index_nlist(index) -> int:
    import faiss

    try:
        return int(faiss.extract_index_ivf(index).nlist)
    except (RuntimeError, TypeError):  # not an IVF index
        return 0


def set_nprobe(index, nprobe: int | None) -> None:
    import faiss

    if nprobe and index_nlist(index):
        faiss.extract_index_ivf(index).nprobe = int(min(nprobe, index_nlist(index)))


def exact_topk(queries: np.ndarray, vectors: np.ndarray, k: int, block: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-k in numpy (the baseline the index is measured against), best first."""
    k = min(k, len(vectors))
    queries = np.asarray(queries, dtype=vectors.dtype)  # a float64 query would make numpy copy the store
    idx = np.empty((len(queries), k), np.int64)
    val = np.empty((len(queries), k), np.float32)
    for s in range(0, len(queries), block):
        sims = queries[s : s + block] @ vectors.T
        part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        pv = np.take_along_axis(sims, part, axis=1)
        order = np.argsort(-pv, axis=1, kind="stable")
        idx[s : s + block] = np.take_along_axis(part, order, axis=1)
        val[s : s + block] = np.take_along_axis(pv, order, axis=1)
    return idx, val


def recall_at(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of each row of ``truth`` found in the same row of ``found``."""
    if truth.size == 0:
        return 1.0
    return float(np.mean([len(set(f.tolist()) & set(t.tolist())) / len(t) for f, t in zip(found, truth)]))


def tune_nprobe(index, vectors: np.ndarray, params: IndexParams = IndexParams(), k: int = 10) -> dict[str, Any]:
    """The smallest power-of-two ``nprobe`` whose recall@k on ``params.tune_queries`` of the store's
    own vectors (each one's own id left out) reaches ``params.target_recall``; with the recall and
    the measured ms per query of the index and of exact numpy search."""
    nlist = index_nlist(index)
    n = len(vectors)
    if not nlist or n < 2:
        return {"nprobe": None, "recall_at_10": 1.0}
    rng = np.random.default_rng(params.seed + 1)
    pick = np.sort(rng.choice(n, min(params.tune_queries, n), replace=False))
    queries = np.ascontiguousarray(vectors[pick])
    kk = min(k + 1, n)
    started = time.perf_counter()
    truth_idx, _ = exact_topk(queries, vectors, kk)
    exact_ms = (time.perf_counter() - started) * 1000 / len(queries)
    truth = np.array([[i for i in row if i != q][:k] for row, q in zip(truth_idx, pick)])
    chosen = None
    nprobe = 1
    while True:
        nprobe = min(nprobe, nlist)
        set_nprobe(index, nprobe)
        started = time.perf_counter()
        _, found = index.search(queries, kk)
        ms = (time.perf_counter() - started) * 1000 / len(queries)
        found = np.array([[i for i in row if i != q][:k] for row, q in zip(found, pick)])
        recall = recall_at(found, truth)
        chosen = {
            "nprobe": nprobe,
            "recall_at_10": round(recall, 4),
            "index_ms_per_query": round(ms, 4),
            "exact_ms_per_query": round(exact_ms, 4),
        }
        if recall >= params.target_recall or nprobe >= nlist:
            break
        nprobe *= 2
    set_nprobe(index, chosen["nprobe"])
    return chosen


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

        from storage.location import store_error

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


def _sha256(data: bytes) -> str:
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
        return [], np.zeros((0, 0), np.float32), _sha256(data)
    return frame["sample_id"].to_list(), normalize(frame[modality].to_numpy()), _sha256(data)


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
        if f.size != rec["size"] or _sha256(f.location.read_bytes()) != rec["sha256"]:
            changed.append(name)
    state = "stale" if (added or removed or changed) else "fresh"
    return IndexStatus(state, manifest, added, sorted(changed), removed)


# -- build ------------------------------------------------------------------------------------------------


@dataclass
class IndexReport:
    action: str  # "built", "rebuilt", "extended", "up to date"
    encoder_id: str
    modality: str
    count: int
    added: int
    kind: str
    nprobe: int | None
    recall_at_10: float | None
    seconds: float
    reason: str = ""
    manifest: dict[str, Any] = field(default_factory=dict, repr=False)

    def lines(self) -> list[str]:
        line = (
            f"index {self.encoder_id}/{self.modality}: {self.action} ({self.kind}, {self.count} vectors, "
            f"{self.added} added, {self.seconds:.1f} s)"
        )
        out = [line]
        if self.reason:
            out.append(f"  why: {self.reason}")
        tune = self.manifest.get("tuning") or {}
        if self.nprobe:
            out.append(
                f"  nprobe {self.nprobe} of {self.manifest.get('nlist')} lists: recall@10 {tune.get('recall_at_10')} "
                f"on the store's own vectors; {tune.get('index_ms_per_query')} ms/query vs exact "
                f"{tune.get('exact_ms_per_query')} ms/query"
            )
        return out


def _write_index_file(index, final: Location) -> tuple[str, int]:
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


def _read_index_file(location: Location):
    import faiss

    with local_file(location) as path:
        return faiss.read_index(str(path))


def _ids_bytes(sample_ids: Sequence[str]) -> bytes:
    buf = io.BytesIO()
    pl.DataFrame({"sample_id": pl.Series(list(sample_ids), dtype=pl.Utf8)}).write_parquet(buf)
    return buf.getvalue()


def build_index(
    root: str | Path | Location,
    encoder_id: str,
    modality: str,
    params: IndexParams = IndexParams(),
    rebuild: bool = False,
) -> IndexReport:
    """Build the index of one store column, or bring it up to date: files added since the last build
    are added to it (incremental); a changed or removed file, a different ``params``, or a store that
    outgrew the index (a Flat index past ``flat_below``, an IVF index past 16x the vectors its lists
    were trained on) rebuild it. Holds the lock ``index-<encoder>-<modality>`` while it works."""
    from storage.locks import DatasetLock

    started = time.perf_counter()
    root = as_location(root)
    lock = DatasetLock(root, f"index-{encoder_id}-{modality}").acquire()
    try:
        files = store_files(root, encoder_id)
        if not files:
            raise FileNotFoundError(f"no embedding store {embedding_dir(root, encoder_id)} (run bindset embed first)")
        status = index_status(root, encoder_id, modality, files)
        manifest = status.manifest
        reason = ""
        if manifest is not None and manifest.get("params") != _params_record(params):
            rebuild, reason = True, "other index settings than the last build"
        if status.state == "fresh" and not rebuild:
            return IndexReport(
                "up to date",
                encoder_id,
                modality,
                manifest["count"],
                0,
                manifest["kind"],
                manifest.get("nprobe"),
                (manifest.get("tuning") or {}).get("recall_at_10"),
                time.perf_counter() - started,
                manifest=manifest,
            )
        if status.state == "stale" and not status.appendable:
            rebuild, reason = True, status.describe()
        if status.appendable and not rebuild:
            new = _read_files(status.added, modality)
            grown = manifest["count"] + len(new[0])
            if manifest["kind"] == "Flat" and grown >= params.flat_below and params.nlist is None:
                rebuild, reason = True, f"{grown} vectors outgrow an exact Flat index (flat_below={params.flat_below})"
            elif manifest["kind"] != "Flat" and grown > 16 * max(manifest.get("trained_on_count", 1), 1):
                rebuild, reason = (
                    True,
                    (f"{grown} vectors: over 16x the {manifest.get('trained_on_count')} its lists were trained for"),
                )
            else:
                return _extend(root, encoder_id, modality, params, manifest, status.added, new, started, lock)
        return _full_build(
            root,
            encoder_id,
            modality,
            params,
            files,
            manifest,
            started,
            lock,
            "rebuilt" if manifest is not None else "built",
            reason,
        )
    finally:
        lock.release()


def _params_record(params: IndexParams) -> dict[str, Any]:
    return asdict(params)


def _read_files(files: list[StoreFile], modality: str) -> tuple[list[str], np.ndarray, list[dict[str, Any]]]:
    ids: list[str] = []
    blocks: list[np.ndarray] = []
    records: list[dict[str, Any]] = []
    for f in files:
        sids, vectors, sha = read_file_vectors(f, modality)
        ids += sids
        if len(sids):
            blocks.append(vectors)
        records.append({"name": f.name, "size": f.size, "version": f.version, "sha256": sha, "rows": len(sids)})
    dims = {b.shape[1] for b in blocks}
    if len(dims) > 1:
        raise ValueError(f"store files hold {modality!r} vectors of different dimensions {sorted(dims)}")
    matrix = np.concatenate(blocks) if blocks else np.zeros((0, 0), np.float32)
    return ids, matrix, records


def _full_build(root, encoder_id, modality, params, files, old_manifest, started, lock, action, reason) -> IndexReport:
    ids, vectors, records = _read_files(files, modality)
    if not ids:
        raise ValueError(f"store {encoder_id} has no {modality!r} vectors to index")
    lock.check()
    index = make_index(vectors.shape[1], len(ids), params)
    train_s = train_index(index, vectors, params)
    add_vectors(index, vectors, 0)
    tuning = tune_nprobe(index, vectors, params) if params.nprobe is None else {"nprobe": params.nprobe}
    set_nprobe(index, tuning.get("nprobe"))
    manifest = {
        "format": INDEX_FORMAT,
        "encoder_id": encoder_id,
        "modality": modality,
        "metric": "cosine",
        "dim": int(vectors.shape[1]),
        "kind": _kind(index, params),
        "nlist": index_nlist(index) or None,
        "nprobe": tuning.get("nprobe"),
        "tuning": tuning,
        "params": _params_record(params),
        "trained_on_count": len(ids),
        "train_seconds": round(train_s, 3),
    }
    return _commit(
        root, encoder_id, modality, index, ids, records, manifest, old_manifest, started, action, len(ids), reason, lock
    )


def _extend(root, encoder_id, modality, params, manifest, added_files, new, started, lock) -> IndexReport:
    ids_new, vectors, records = new
    base = manifest["count"]
    index = _read_index_file(index_dir(root, encoder_id) / manifest["index_file"])
    old_ids = pl.read_parquet(io.BytesIO((index_dir(root, encoder_id) / manifest["ids_file"]).read_bytes()))[
        "sample_id"
    ].to_list()
    if len(old_ids) != base or index.ntotal != base:
        # The committed files disagree with their manifest: never extend a broken index.
        files = store_files(root, encoder_id)
        return _full_build(
            root,
            encoder_id,
            modality,
            params,
            files,
            manifest,
            started,
            lock,
            "rebuilt",
            "index files do not match their manifest",
        )
    if ids_new:
        if vectors.shape[1] != manifest["dim"]:
            raise ValueError(f"new store files hold {vectors.shape[1]}-d vectors; the index holds {manifest['dim']}-d")
        lock.check()
        add_vectors(index, vectors, base)
    set_nprobe(index, manifest.get("nprobe"))
    new_manifest = {
        k: v
        for k, v in manifest.items()
        if k
        not in (
            "files",
            "count",
            "generation",
            "index_file",
            "ids_file",
            "index_sha256",
            "index_size",
            "ids_sha256",
            "built_at",
            "faiss_version",
            "seconds",
        )
    }
    return _commit(
        root,
        encoder_id,
        modality,
        index,
        old_ids + ids_new,
        manifest["files"] + records,
        new_manifest,
        manifest,
        started,
        "extended",
        len(ids_new),
        "",
        lock,
    )


def _kind(index, params: IndexParams) -> str:
    nlist = index_nlist(index)
    return f"IVF{nlist},{_FACTORY_CODES[params.quantization]}" if nlist else "Flat"


def _commit(
    root, encoder_id, modality, index, ids, records, manifest, old_manifest, started, action, added, reason, lock
) -> IndexReport:
    import faiss

    directory = index_dir(root, encoder_id)
    generation = int((old_manifest or {}).get("generation", 0)) + 1
    stem = f"{modality}-g{generation:05d}-{os.urandom(4).hex()}"
    index_file = directory / f"{stem}.faiss"
    ids_file = directory / f"{stem}.ids.parquet"
    lock.check()
    index_sha, index_size = _write_index_file(index, index_file)
    ids_data = _ids_bytes(ids)
    write_bytes_atomic(ids_file, ids_data)
    manifest = {
        **manifest,
        "count": len(ids),
        "generation": generation,
        "index_file": index_file.name,
        "ids_file": ids_file.name,
        "index_sha256": index_sha,
        "index_size": index_size,
        "ids_sha256": _sha256(ids_data),
        "files": sorted(records, key=lambda r: r["name"]),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "faiss_version": faiss.__version__,
        "seconds": round(time.perf_counter() - started, 3),
    }
    lock.check()
    write_bytes_atomic(manifest_path(root, encoder_id, modality), json.dumps(manifest, indent=2).encode() + b"\n")
    _drop_old_generations(
        directory,
        modality,
        keep={
            index_file.name,
            ids_file.name,
            (old_manifest or {}).get("index_file"),
            (old_manifest or {}).get("ids_file"),
        },
    )
    tuning = manifest.get("tuning") or {}
    return IndexReport(
        action,
        encoder_id,
        modality,
        len(ids),
        added,
        manifest["kind"],
        manifest.get("nprobe"),
        tuning.get("recall_at_10"),
        time.perf_counter() - started,
        reason,
        manifest,
    )


def _drop_old_generations(directory: Location, modality: str, keep: set) -> None:
    """Files of generations before the previous one: a reader that loaded the previous manifest
    just before this commit can still open its files."""
    from storage.location import list_files

    for suffix in (".faiss", ".ids.parquet"):
        for f in list_files(directory, suffix):
            if f.name.startswith(f"{modality}-g") and f.name not in keep:
                f.unlink(missing_ok=True)


# -- load and search ---------------------------------------------------------------------------------------


class AnnIndex:
    """A loaded index: ``search(queries, k)`` -> ``(sample_ids per query, scores [Q,k'])``."""

    def __init__(self, index, sample_ids: list[str], manifest: dict[str, Any]):
        self.index = index
        self.sample_ids = sample_ids
        self.manifest = manifest

    def __len__(self) -> int:
        return len(self.sample_ids)

    @classmethod
    def load(
        cls, root: str | Path | Location, encoder_id: str, modality: str, manifest: dict[str, Any] | None = None
    ) -> "AnnIndex":
        manifest = manifest or read_manifest(root, encoder_id, modality)
        if manifest is None:
            raise FileNotFoundError(f"no index for {encoder_id}/{modality} in {as_location(root)} (run bindset index)")
        directory = index_dir(root, encoder_id)
        index = _read_index_file(directory / manifest["index_file"])
        ids_data = (directory / manifest["ids_file"]).read_bytes()
        if _sha256(ids_data) != manifest["ids_sha256"]:
            raise ValueError(f"{directory / manifest['ids_file']} does not match its manifest")
        ids = pl.read_parquet(io.BytesIO(ids_data))["sample_id"].to_list()
        if index.ntotal != len(ids) or len(ids) != manifest["count"]:
            raise ValueError(
                f"index {directory / manifest['index_file']} holds {index.ntotal} vectors, its manifest "
                f"{manifest['count']}: rebuild it (bindset index --rebuild)"
            )
        set_nprobe(index, manifest.get("nprobe"))
        return cls(index, ids, manifest)

    def search(self, queries: np.ndarray, k: int = 10, nprobe: int | None = None) -> tuple[list[list[str]], np.ndarray]:
        q = normalize(queries)
        if q.shape[1] != self.index.d:
            raise ValueError(f"query dim {q.shape[1]} does not match the index's {self.index.d}")
        k = min(int(k), len(self.sample_ids))
        if k <= 0:
            return [[] for _ in range(len(q))], np.zeros((len(q), 0), np.float32)
        if nprobe is not None:
            set_nprobe(self.index, nprobe)
        try:
            scores, idx = self.index.search(q, k)
        finally:
            if nprobe is not None:
                set_nprobe(self.index, self.manifest.get("nprobe"))
        out = [[self.sample_ids[i] for i in row if i >= 0] for row in idx]
        return out, scores.astype(np.float32)


_LOADED: "OrderedDict[tuple, AnnIndex]" = OrderedDict()  # a Python session searching repeatedly loads once


def load_fresh_index(root: str | Path | Location, encoder_id: str, modality: str, warn: bool = True) -> AnnIndex | None:
    """The index if it exists and matches its store; None otherwise, warning (``IndexStaleWarning``)
    when it exists but is stale or unreadable."""
    root = as_location(root)
    status = index_status(root, encoder_id, modality)
    if status.state == "missing":
        return None
    if not status.fresh:
        if warn:
            warnings.warn(
                f"the index of {encoder_id}/{modality} is {status.describe()}; searching exactly "
                f"instead (run: bindset index {root} --encoder {encoder_id} --modality {modality})",
                IndexStaleWarning,
                stacklevel=3,
            )
        return None
    key = (str(root), encoder_id, modality, status.manifest["index_sha256"])
    if key in _LOADED:
        _LOADED.move_to_end(key)
        return _LOADED[key]
    try:
        loaded = AnnIndex.load(root, encoder_id, modality, status.manifest)
    except (OSError, ValueError, RuntimeError) as exc:
        if warn:
            warnings.warn(
                f"the index of {encoder_id}/{modality} cannot be read ({exc}); searching exactly instead",
                IndexStaleWarning,
                stacklevel=3,
            )
        return None
    _LOADED[key] = loaded
    while len(_LOADED) > 2:
        _LOADED.popitem(last=False)
    return loaded


def search_index(
    root: str | Path | Location,
    encoder_id: str,
    modality: str,
    queries: np.ndarray,
    k: int = 10,
    nprobe: int | None = None,
) -> tuple[list[list[str]], np.ndarray] | None:
    """Top-k by the store's index, or None when there is no usable index (see ``load_fresh_index``)."""
    index = load_fresh_index(root, encoder_id, modality)
    if index is None:
        return None
    return index.search(queries, k, nprobe)


__all__ = [
    "AnnIndex",
    "IndexParams",
    "IndexReport",
    "IndexStaleWarning",
    "IndexStatus",
    "QUANTIZATIONS",
    "build_index",
    "default_nlist",
    "exact_topk",
    "index_status",
    "load_fresh_index",
    "make_index",
    "read_manifest",
    "recall_at",
    "search_index",
    "store_files",
    "train_index",
    "tune_nprobe",
]
