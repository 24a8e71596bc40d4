"""Model-ready samples from committed shards: stored compact arrays -> the tensors an encoder sees.

The normalization constants come from the dataset's own ``dataset.json``, so a reader always undoes
exactly the preprocessing the shards were built with. The dataset may be local or on an object store
(``s3://bucket/ds``): shards are read through ``ShardReader`` (remote ones from a verified local
cache, see ``storage.cache``), at most ``max_open_shards`` open at a time.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from storage.catalog import load_catalog
from storage.location import Location, as_location, is_remote
from storage.scans import scan_index
from storage.shard import ShardReader, ShardReaderPool


class DatasetReader:
    """``reader[sample_id]`` or ``reader.read(shard, row)`` -> dict of model-ready float32 arrays.

    A stored array whose chunk fails its checksum raises ``storage.CorruptSampleError`` naming the
    dataset, shard, row, sample and array (``read_batch`` names every bad row of the batch)."""

    def __init__(
        self,
        root: str | Path | Location,
        cache_dir: str | Path | None = None,
        cache_limit_bytes: int | None = None,
        max_open_shards: int = 8,
    ):
        self.root = as_location(root)
        catalog = load_catalog(self.root)
        if catalog is None:
            raise FileNotFoundError(f"{self.root} is not a bindset dataset (no dataset.json)")
        self.catalog = catalog
        self.config = catalog["config"]
        self.cache_dir = cache_dir
        self.cache_limit_bytes = cache_limit_bytes
        self.max_open_shards = int(max_open_shards)
        self._pool: ShardReaderPool | None = None

    def __getstate__(self) -> dict[str, Any]:
        # Travels to DataLoader workers as configuration: open files and the cache stay behind.
        return {k: v for k, v in self.__dict__.items() if k not in ("_pool", "index")} | {"_pool": None}

    def _shards_pool(self) -> ShardReaderPool:
        if self._pool is None:
            cache = None
            if is_remote(self.root):
                from storage.cache import ShardCache, default_cache

                if self.cache_dir is None and self.cache_limit_bytes is None:
                    cache = default_cache()
                else:
                    cache = ShardCache(self.cache_dir, self.cache_limit_bytes)
            self._pool = ShardReaderPool(self.root, self.max_open_shards, cache=cache, catalog=self.catalog)
        return self._pool

    @cached_property
    def index(self) -> pl.DataFrame:
        return scan_index(self.root).select("sample_id", "shard", "row").collect()

    def _shard(self, shard_id: int) -> ShardReader:
        return self._shards_pool().get(int(shard_id))

    def read(self, shard_id: int, row: int) -> dict[str, np.ndarray]:
        return self.model_ready(self._shard(shard_id).read_stored(row))

    def read_batch(self, shard_id: int, rows: list[int], modality: str) -> np.ndarray:
        """Model-ready ``[len(rows), ...]`` of one modality (rows that hold it), read in one go.
        Equal to stacking ``read(shard_id, r)[modality]``; every normalization here is elementwise,
        so it runs on the whole batch at once."""
        stored = self._shard(shard_id).read_stored_rows(list(rows), modality)
        return self.model_ready(stored)[modality]

    def __getitem__(self, sample_id: str) -> dict[str, np.ndarray]:
        hit = self.index.filter(pl.col("sample_id") == sample_id)
        if hit.height != 1:
            raise KeyError(f"sample {sample_id!r} is not in {self.root}")
        return self.read(int(hit["shard"][0]), int(hit["row"][0]))

    def model_ready(self, stored: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Stored arrays -> model-ready ones of every modality they hold (the registry's
        ``model_ready`` of each, with this dataset's recorded configs)."""
        from preprocess.registry import model_ready

        return model_ready(stored, self.config)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def __enter__(self) -> "DatasetReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
