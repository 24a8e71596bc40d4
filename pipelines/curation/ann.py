"""An approximate nearest-neighbour index per embedding store and modality, beside the store:
loading it and searching it.

    build_index("/data/as", "openclip-ViT-H-14-3f2a9c0d1b7e-p1", "image")   # ann_build; or extends it
    hits = search_index("/data/as", "openclip-...-p1", "image", query_vectors, k=10)

The parts: ``ann_index`` (faiss: index kinds, training, nprobe tuning, exact search; why faiss),
``ann_files`` (the store files covered, the index files and manifest, freshness; the layout) and
``ann_build`` (build, incremental extension, commit). Search never uses a stale index: it warns
(``IndexStaleWarning``, naming what changed) and returns None, and the caller searches exactly.
"""

from __future__ import annotations

import io
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from pipelines.curation.ann_files import index_dir, index_status, read_index_file, read_manifest, sha256_bytes
from pipelines.curation.ann_index import normalize, set_nprobe
from storage.location import Location, as_location


class IndexStaleWarning(UserWarning):
    """An index exists but no longer matches its store: search falls back to exact."""


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
        index = read_index_file(directory / manifest["index_file"])
        ids_data = (directory / manifest["ids_file"]).read_bytes()
        if sha256_bytes(ids_data) != manifest["ids_sha256"]:
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


__all__ = ["AnnIndex", "IndexStaleWarning", "load_fresh_index", "search_index"]
