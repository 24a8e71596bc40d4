"""(model-ready input, target vector) pairs: the training data of a binding.

`load_pairs` joins the index rows holding a modality with a store's target vectors by sample_id;
`ModalityInputs` reads that modality's model-ready arrays straight from the shards (the evaluation
and the bind demo read their inputs through it too).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import polars as pl
import torch

#: the stored HDF5 datasets the reader needs to make one modality model-ready


@dataclass
class PairTable:
    """Samples with the modality *and* a target vector, sorted by sample_id."""

    sample_ids: list[str]
    shards: np.ndarray  # [N] int
    rows: np.ndarray  # [N] int
    targets: np.ndarray  # [N, D] float32, L2-normalized
    missing: list[str]  # samples with the modality but no (non-null) target vector

    def __len__(self) -> int:
        return len(self.sample_ids)

    def digest(self) -> str:
        h = hashlib.sha256("\n".join(self.sample_ids).encode())
        h.update(np.ascontiguousarray(self.targets).tobytes())
        return h.hexdigest()[:16]


def read_store_vectors(
    dataset: str | Path, encoder_id: str, column: str, sample_ids: Sequence[str] | None = None
) -> tuple[list[str], np.ndarray]:
    """`(sample_ids, [N,D] float32)` of one store column, non-null rows only, sorted by sample_id."""
    from storage import scan_embeddings

    lf = scan_embeddings(dataset, encoder_id)
    names = lf.collect_schema().names()
    if column not in names:
        raise KeyError(f"store embeddings/{encoder_id}/ of {dataset} has no column {column!r} (has {names[1:]})")
    frame = lf.select("sample_id", column).filter(pl.col(column).is_not_null())
    if sample_ids is not None:
        frame = frame.filter(pl.col("sample_id").is_in(list(sample_ids)))
    frame = frame.unique("sample_id", keep="first", maintain_order=True).sort("sample_id").collect()
    if frame.height == 0:
        return [], np.zeros((0, 0), np.float32)
    return frame["sample_id"].to_list(), np.ascontiguousarray(frame[column].to_numpy(), dtype=np.float32)


def load_pairs(
    dataset: str | Path,
    modality: str,
    target_encoder_id: str,
    column: str = "image",
    split: str | None = None,
    sample_ids: Sequence[str] | None = None,
    dedup: str | None = None,
) -> PairTable:
    """Join the index rows holding `modality` with the store's target vectors by sample_id
    (without the duplicates dedup table `dedup` leaves out, when given)."""
    from storage import scan_index

    index = scan_index(dataset).filter(pl.col("modalities").list.contains(modality))
    if dedup is not None:
        from storage.dedup import dropped_ids

        index = index.join(dropped_ids(dataset, dedup).lazy(), on="sample_id", how="anti")
    if split is not None:
        index = index.filter(pl.col("split") == split)
    if sample_ids is not None:
        index = index.filter(pl.col("sample_id").is_in(list(sample_ids)))
    index = index.select("sample_id", "shard", "row").unique("sample_id", keep="first").sort("sample_id").collect()
    if index.height == 0:
        raise ValueError(
            f"{dataset}: no stored sample has modality {modality!r}"
            + (f" in split {split!r}" if split else "")
            + (" among the given ids" if sample_ids is not None else "")
        )
    ids, vectors = read_store_vectors(dataset, target_encoder_id, column, index["sample_id"].to_list())
    if not ids:
        raise ValueError(
            f"no target vectors: embeddings/{target_encoder_id}/ column {column!r} has none of "
            f"the {index.height} samples with {modality!r}; embed the dataset first"
        )
    targets = pl.DataFrame({"sample_id": ids, "_i": np.arange(len(ids))})
    joined = index.join(targets, on="sample_id", how="left")
    have = joined.filter(pl.col("_i").is_not_null())
    missing = joined.filter(pl.col("_i").is_null())["sample_id"].to_list()
    vecs = vectors[have["_i"].to_numpy()]
    norms = np.linalg.norm(vecs, axis=1, keepdims=True)
    if not np.all(norms > 0):
        raise ValueError(f"embeddings/{target_encoder_id}/{column} holds zero vectors")
    return PairTable(
        have["sample_id"].to_list(),
        have["shard"].to_numpy().astype(np.int64),
        have["row"].to_numpy().astype(np.int64),
        (vecs / norms).astype(np.float32),
        missing,
    )


class ModalityInputs(torch.utils.data.Dataset):
    """Model-ready arrays of one modality for given (shard, row) positions, read straight from the
    shards' HDF5 through `ShardReader` (only that modality's datasets: never the 18 MB videos next to
    them; a remote dataset's shards through the verified local shard cache) and normalized by
    `DatasetReader.model_ready` with the dataset's own config. Optionally cached in RAM."""

    def __init__(
        self,
        dataset: str | Path,
        modality: str,
        shards: Sequence[int],
        rows: Sequence[int],
        cache: bool | None = None,
        cache_limit_mb: int = 2048,
    ) -> None:
        from preprocess.registry import get_modality
        from storage.reader import DatasetReader

        spec = get_modality(modality)  # names the registered modalities when it is not one
        from storage.location import as_location

        self.root = as_location(dataset)
        self.modality = modality
        self.keys = spec.stored_keys()
        self.shards = [int(s) for s in shards]
        self.rows = [int(r) for r in rows]
        self._reader = DatasetReader(self.root)  # config + model_ready only
        self._files: Any = None  # ShardReaderPool, opened on first read
        self._cache: dict[int, np.ndarray] | None = None
        if len(self) and cache is not False:
            first = self._read(0)
            estimate_mb = first.nbytes * len(self) / 2**20
            if cache or estimate_mb <= cache_limit_mb:
                self._cache = {0: first}

    def __len__(self) -> int:
        return len(self.rows)

    def _read(self, i: int) -> np.ndarray:
        if self._files is None:
            from storage.shard import ShardReaderPool

            # Random access over every shard: keep many open (a remote one stays pinned in the cache).
            self._files = ShardReaderPool(self.root, max_open=64, catalog=self._reader.catalog)
        stored = self._files.get(self.shards[i]).read_keys(self.rows[i], self.keys)
        return self._reader.model_ready(stored)[self.modality]

    def __getitem__(self, i: int) -> np.ndarray:
        if self._cache is not None:
            if i not in self._cache:
                self._cache[i] = self._read(i)
            return self._cache[i]
        return self._read(i)

    def batch(self, indices: Sequence[int]) -> torch.Tensor:
        return torch.from_numpy(np.stack([self[int(i)] for i in indices]))

    def close(self) -> None:
        if self._files is not None:
            self._files.close()
            self._files = None

    def __enter__(self) -> "ModalityInputs":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


__all__ = ["ModalityInputs", "PairTable", "load_pairs", "read_store_vectors"]
