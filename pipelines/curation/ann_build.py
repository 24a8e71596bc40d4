"""Building the ANN index (``ann``): a full build, or an incremental extension when store files were
only added, committed as a new generation whose manifest is written last (the commit point).

A changed or removed store file, other ``IndexParams``, or a store that outgrew the index rebuilds
it; ``build_index`` holds the lock ``index-<encoder>-<modality>`` while it works.
"""

from __future__ import annotations

import io
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from pipelines.curation.ann_files import (
    INDEX_FORMAT,
    StoreFile,
    ids_bytes,
    index_dir,
    index_status,
    manifest_path,
    read_file_vectors,
    read_index_file,
    sha256_bytes,
    store_files,
    write_index_file,
)
from pipelines.curation.ann_index import (
    IndexParams,
    add_vectors,
    index_kind,
    index_nlist,
    make_index,
    set_nprobe,
    train_index,
    tune_nprobe,
)
from storage.embeddings import embedding_dir
from storage.location import Location, as_location, write_bytes_atomic

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
        "kind": index_kind(index, params),
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
    index = read_index_file(index_dir(root, encoder_id) / manifest["index_file"])
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
    index_sha, index_size = write_index_file(index, index_file)
    ids_data = ids_bytes(ids)
    write_bytes_atomic(ids_file, ids_data)
    manifest = {
        **manifest,
        "count": len(ids),
        "generation": generation,
        "index_file": index_file.name,
        "ids_file": ids_file.name,
        "index_sha256": index_sha,
        "index_size": index_size,
        "ids_sha256": sha256_bytes(ids_data),
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
