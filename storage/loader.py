"""PyTorch loader over a dataset's committed shards: model-ready tensors for a training loop.

``ShardDataset`` is an ``IterableDataset``: each DataLoader worker of each rank reads its own part
of the dataset, straight from HDF5 (opened lazily inside the worker: h5py handles never cross a
fork) and Parquet. No pickle on the read path.

Every epoch reads every selected sample exactly once across all workers and ranks. The split is
hierarchical, first over ranks (``rank``/``world_size``, or ``torch.distributed`` when it is
initialized), then over the DataLoader workers of a rank, so a rank's samples of an epoch do not
depend on its ``num_workers`` (only their order does):

- **shard granularity** (``granularity="auto"`` when there are at least as many shards as parts):
  whole shards go to parts, in the epoch's shard order, each to the part with the fewest rows so
  far (a deterministic greedy balance). Reads stay sequential per file. Parts then differ in size
  by at most about one shard: a DDP loop must tolerate uneven ends (``torch.distributed.algorithms
  .Join``, or a per-epoch ``min`` over ranks of ``len(dataset)``), or use ``granularity="row"``;
- **row granularity** (``"auto"`` with fewer shards than parts, or ``granularity="row"``): the
  epoch's sample sequence is dealt round-robin (``seq[part::parts]``), so parts differ by at most
  one sample; every part may then read from every shard.

Shuffling (``shuffle=True``): the shard order is permuted per epoch, and rows are permuted within
a window of ``buffer_shards`` consecutive shards of a part, so one buffer mixes several shards
while only row *positions* are buffered (never decoded tensors: a stored video is 18 MB). All of
it is a function of ``(seed, epoch)`` and the rank/worker layout: the same seed, epoch, world size
and ``num_workers`` give the same batches. Call ``set_epoch(e)`` before each epoch; the epoch lives
in shared memory, so persistent DataLoader workers see it too.

Augmentations (``augment=AugmentConfig(...)`` and ``train=True``) are drawn per sample from
``preprocess.augment.sample_rng(seed, epoch, sample_id)``, so they do not depend on which worker
reads the sample. Normalization is ``DatasetReader.model_ready``: without augmentation the tensors
equal the reader's exactly.

Frozen embeddings (``embeddings="<encoder-id>"``): ``embeddings/<encoder-id>/<shard>.parquet``
(``sample_id`` + one ``Array(Float32, D)`` or ``List(Float32)`` column per modality) is joined by
``sample_id`` and yielded as ``"<column>_embedding"``. Samples without a (non-null) vector in every
selected column are skipped, counted in ``missing_embeddings`` (ids in ``missing_embedding_ids``)
and reported with a warning when the dataset is created.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import h5py
import numpy as np
import polars as pl
import torch
from torch.utils.data import IterableDataset, get_worker_info

from storage import format as fmt
from storage import scan_index
from storage.reader import DatasetReader

if TYPE_CHECKING:
    from preprocess.augment import AugmentConfig

MODALITIES = ("image", "depth", "thermal", "text", "video", "audio", "imu")
GRANULARITIES = ("auto", "shard", "row")
_BIT = {m: 1 << i for i, m in enumerate(MODALITIES)}


def _rank_world(rank: int | None, world_size: int | None) -> tuple[int, int]:
    if rank is None or world_size is None:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            rank = dist.get_rank() if rank is None else rank
            world_size = dist.get_world_size() if world_size is None else world_size
    rank = 0 if rank is None else int(rank)
    world_size = 1 if world_size is None else int(world_size)
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank} world_size={world_size}")
    return rank, world_size


def _balanced(shards: np.ndarray, counts: dict[int, int], parts: int) -> list[list[int]]:
    """Shards in the given order, each to the part with the fewest rows so far (ties: lowest part)."""
    loads = [0] * parts
    out: list[list[int]] = [[] for _ in range(parts)]
    for shard in shards.tolist():
        k = loads.index(min(loads))
        out[k].append(shard)
        loads[k] += counts[shard]
    return out


class _ShardFiles:
    """Open HDF5 shards of one worker (LRU-bounded) and the dataset keys of each, by group."""

    def __init__(self, root: Path, max_open: int):
        self.root = root
        self.max_open = max(1, max_open)
        self._files: OrderedDict[int, tuple[h5py.File, dict[str, list[h5py.Dataset]]]] = OrderedDict()

    def groups(self, shard: int) -> dict[str, list[h5py.Dataset]]:
        if shard in self._files:
            self._files.move_to_end(shard)
            return self._files[shard][1]
        while len(self._files) >= self.max_open:
            _, (old, _) = self._files.popitem(last=False)
            old.close()
        h5 = h5py.File(fmt.shard_path(self.root, shard), "r")
        groups: dict[str, list[h5py.Dataset]] = {}
        h5.visititems(lambda name, obj: groups.setdefault(name.split("/", 1)[0], []).append(obj)
                      if isinstance(obj, h5py.Dataset) else None)
        self._files[shard] = (h5, groups)
        return groups

    def close(self) -> None:
        while self._files:
            _, (h5, _) = self._files.popitem()
            h5.close()


class ShardDataset(IterableDataset):
    """Yields ``{"sample_id": str, "<modality>": Tensor, ...}`` per stored sample (see module doc).

    ``modalities``: keep only samples holding all of them and yield only those (with their masks
    ``depth_valid``/``imu_valid``); None yields whatever each sample holds. ``split``: one split
    name or several. ``granularity``: "auto", "shard" or "row" (module doc). ``buffer_shards``:
    shards whose rows are shuffled together. ``max_open_shards``: HDF5 files a worker keeps open.
    """

    def __init__(self, root: str | Path, modalities: Sequence[str] | None = None,
                 split: str | Sequence[str] | None = None, shuffle: bool = True, seed: int = 0,
                 augment: AugmentConfig | None = None, train: bool = True, embeddings: str | None = None,
                 embedding_columns: Sequence[str] | None = None, rank: int | None = None,
                 world_size: int | None = None, granularity: str = "auto", buffer_shards: int = 2,
                 max_open_shards: int = 16):
        super().__init__()
        self.root = Path(root)
        self._reader = DatasetReader(self.root)  # catalog only: normalization constants, no files open
        if modalities is not None:
            modalities = tuple(modalities)
            unknown = set(modalities) - set(MODALITIES)
            if unknown or not modalities:
                raise ValueError(f"unknown modalities {sorted(unknown)}; choose from {MODALITIES}")
        if granularity not in GRANULARITIES:
            raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
        if int(seed) < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self.modalities = modalities
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.augment = augment
        self.train = bool(train)
        self.embeddings = embeddings
        self.granularity = granularity
        self.buffer_shards = max(1, int(buffer_shards))
        self.max_open_shards = int(max_open_shards)
        self.rank, self.world_size = _rank_world(rank, world_size)
        # In shared memory, so that persistent DataLoader workers (which call __iter__ again each
        # epoch but keep their copy of the dataset) see set_epoch() of the main process.
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

        index = scan_index(self.root).select("sample_id", "shard", "row", "split", "modalities")
        if split is not None:
            splits = [split] if isinstance(split, str) else list(split)
            index = index.filter(pl.col("split").is_in(splits))
        if modalities is not None:
            index = index.filter(pl.all_horizontal([pl.col("modalities").list.contains(m) for m in modalities]))
        index = index.with_columns(
            pl.sum_horizontal([pl.col("modalities").list.contains(m).cast(pl.Int32) * _BIT[m] for m in MODALITIES])
            .alias("_bits")
        ).collect()

        self.embedding_columns: tuple[str, ...] = ()
        self.embedding_files: tuple[str, ...] = ()
        self.missing_embedding_ids: list[str] = []
        if embeddings is not None:
            index = self._join_embeddings(index, embeddings, embedding_columns)
        index = index.sort("shard", "row")
        # Plain numpy columns (fixed-width UTF-8 bytes, no Python objects): forked workers share
        # them without copy-on-write churn from reference counts, and they pickle compactly.
        self._sample_ids = np.asarray([s.encode("utf-8") for s in index["sample_id"].to_list()], dtype=np.bytes_)
        self._shards = index["shard"].to_numpy().astype(np.int64)
        self._rows = index["row"].to_numpy().astype(np.int64)
        self._bits = index["_bits"].to_numpy().astype(np.int64)
        self._emb_file = index["_emb_file"].to_numpy().astype(np.int64) if embeddings else None
        self._emb_row = index["_emb_row"].to_numpy().astype(np.int64) if embeddings else None
        shard_ids, starts, counts = np.unique(self._shards, return_index=True, return_counts=True)
        self._shard_ids = shard_ids
        self._shard_start = dict(zip(shard_ids.tolist(), starts.tolist()))
        self._shard_count = dict(zip(shard_ids.tolist(), counts.tolist()))

    # -- embeddings --------------------------------------------------------------------------------
    def _join_embeddings(self, index: pl.DataFrame, encoder_id: str,
                         columns: Sequence[str] | None) -> pl.DataFrame:
        from storage.embeddings import embedding_dir

        directory = embedding_dir(self.root, encoder_id)
        files = sorted(p for p in directory.glob("*.parquet") if p.stem.isdigit()) if directory.is_dir() else []
        if not files:
            raise FileNotFoundError(f"no embedding store {directory} (run the embed step for {encoder_id!r})")
        schema = pl.scan_parquet(files[0]).collect_schema()
        vector_columns = [c for c, t in schema.items() if c != "sample_id" and isinstance(t, (pl.Array, pl.List))]
        columns = tuple(columns) if columns is not None else tuple(vector_columns)
        bad = [c for c in columns if c not in vector_columns]
        if bad or not columns:
            raise ValueError(f"embedding columns {bad or list(columns)} not in {directory} (vector columns: {vector_columns})")
        self.embedding_columns = columns
        self.embedding_files = tuple(str(p) for p in files)
        paths = {str(p): i for i, p in enumerate(files)}
        store = (
            pl.scan_parquet(files, include_file_paths="_path")
            .select(
                "sample_id",
                pl.col("_path").replace_strict(paths, return_dtype=pl.Int64).alias("_emb_file"),
                pl.int_range(pl.len(), dtype=pl.Int64).over("_path").alias("_emb_row"),
                pl.all_horizontal([pl.col(c).is_not_null() for c in columns]).alias("_emb_ok"),
            )
            .filter(pl.col("_emb_ok"))
            .unique("sample_id", keep="first", maintain_order=True)
            .drop("_emb_ok")
            .collect()
        )
        joined = index.join(store, on="sample_id", how="left")
        missing = joined.filter(pl.col("_emb_file").is_null())
        self.missing_embedding_ids = sorted(missing["sample_id"].to_list())
        if self.missing_embedding_ids:
            warnings.warn(
                f"{len(self.missing_embedding_ids)} of {index.height} samples have no {encoder_id!r} embedding "
                f"for {list(columns)} and are skipped (ShardDataset.missing_embedding_ids lists them; "
                f"a backfill of the embed step fills them)",
                stacklevel=3,
            )
        return joined.filter(pl.col("_emb_file").is_not_null())

    @property
    def missing_embeddings(self) -> int:
        """Samples skipped because the embedding store has no vector for them."""
        return len(self.missing_embedding_ids)

    @property
    def num_samples(self) -> int:
        """Samples one epoch reads across all ranks and workers."""
        return int(self._sample_ids.size)

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        """Call before iterating each epoch (before ``iter(loader)``)."""
        if int(epoch) < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self._epoch.fill_(int(epoch))

    # -- the plan: which positions a (rank, worker) reads, in which order ---------------------------
    def _shard_order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return self._shard_ids.copy()
        return np.random.default_rng([self.seed, epoch, 0]).permutation(self._shard_ids)

    def _sequence(self, shards: list[int], epoch: int) -> np.ndarray:
        """Positions of ``shards`` in read order: windows of ``buffer_shards`` shards, rows permuted
        inside a window (the permutation is keyed by the window's shards, not by who reads it)."""
        chunks = []
        for w in range(0, len(shards), self.buffer_shards):
            window = shards[w : w + self.buffer_shards]
            pos = np.concatenate([np.arange(self._shard_start[s], self._shard_start[s] + self._shard_count[s])
                                  for s in window])
            if self.shuffle:
                pos = np.random.default_rng([self.seed, epoch, 1, *window]).permutation(pos)
            chunks.append(pos)
        return np.concatenate(chunks) if chunks else np.zeros(0, np.int64)

    def _split(self, shards: list[int], parts: int, part: int, epoch: int) -> tuple[list[int] | None, np.ndarray]:
        by_shard = self.granularity == "shard" or (self.granularity == "auto" and len(shards) >= parts)
        if by_shard:
            mine = _balanced(np.asarray(shards, np.int64), self._shard_count, parts)[part]
            return mine, self._sequence(mine, epoch)
        return None, self._sequence(shards, epoch)[part::parts]

    def plan(self, epoch: int | None = None, rank: int | None = None, world_size: int | None = None,
             worker: int = 0, num_workers: int = 1) -> np.ndarray:
        """Positions (into this dataset's sample table) that one worker of one rank reads, in order."""
        epoch = self.epoch if epoch is None else int(epoch)
        rank = self.rank if rank is None else int(rank)
        world = self.world_size if world_size is None else int(world_size)
        if not 0 <= worker < num_workers:
            raise ValueError(f"need 0 <= worker < num_workers, got {worker}, {num_workers}")
        order = self._shard_order(epoch).tolist()
        rank_shards, rank_seq = self._split(order, world, rank, epoch)
        if num_workers == 1:
            return rank_seq
        if rank_shards is not None:
            return self._split(rank_shards, num_workers, worker, epoch)[1]
        return rank_seq[worker::num_workers]

    def sample_ids(self, positions: np.ndarray) -> list[str]:
        return [s.decode("utf-8") for s in self._sample_ids[positions].tolist()]

    def __len__(self) -> int:
        """Samples this rank reads in the current epoch (all its workers together)."""
        return int(self.plan(num_workers=1).size)

    # -- reading -------------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        epoch = self.epoch
        positions = self.plan(epoch, worker=worker, num_workers=num_workers)
        files = _ShardFiles(self.root, self.max_open_shards)
        vectors: OrderedDict[int, dict[str, np.ndarray]] = OrderedDict()
        try:
            for pos in positions.tolist():
                yield self._load(pos, epoch, files, vectors)
        finally:
            files.close()

    def _wanted(self, bits: int) -> list[str]:
        present = [m for m in MODALITIES if bits & _BIT[m]]
        return present if self.modalities is None else [m for m in self.modalities if m in present]

    def _load(self, pos: int, epoch: int, files: _ShardFiles,
              vectors: OrderedDict[int, dict[str, np.ndarray]]) -> dict[str, Any]:
        from preprocess.augment import augment, sample_rng

        sample_id = self._sample_ids[pos].decode("utf-8")
        shard, row = int(self._shards[pos]), int(self._rows[pos])
        groups = files.groups(shard)
        wanted = self._wanted(int(self._bits[pos]))
        stored = {d.name.lstrip("/"): d[row] for m in wanted for d in groups.get(m, ())}
        if self.augment is not None and self.train:
            ready = augment(stored, self.augment, sample_rng(self.seed, epoch, sample_id),
                            self._reader.model_ready, train=True)
        else:
            ready = self._reader.model_ready(stored)
        out: dict[str, Any] = {"sample_id": sample_id}
        for key, value in ready.items():
            out[key] = torch.from_numpy(np.ascontiguousarray(value))
        if self._emb_file is not None:
            table = self._vectors(int(self._emb_file[pos]), vectors)
            erow = int(self._emb_row[pos])
            for column in self.embedding_columns:
                out[f"{column}_embedding"] = torch.from_numpy(table[column][erow].copy())
        return out

    def _vectors(self, file_id: int, cache: OrderedDict[int, dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        if file_id not in cache:
            cache[file_id] = _read_vectors(self.embedding_files[file_id], self.embedding_columns)
            while len(cache) > self.max_open_shards:
                cache.popitem(last=False)
        cache.move_to_end(file_id)
        return cache[file_id]


def _read_vectors(path: str, columns: Sequence[str]) -> dict[str, np.ndarray]:
    """``{column: [rows, D] float32}`` of one store file, read in a DataLoader worker.

    pyarrow, single-threaded, not polars: a forked worker must not use polars, whose thread pool
    the parent already started (its locks may be copied held: the child then deadlocks). Rows whose
    vector is null hold unspecified values; the join at start-up never points at them."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(path, columns=list(columns), use_threads=False, pre_buffer=False)
    out = {}
    for column in columns:
        array = table.column(column).combine_chunks()
        n = len(array)
        if pa.types.is_fixed_size_list(array.type):  # FixedSizeList, i.e. polars Array(Float32, D)
            values = array.values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
            d = array.type.list_size
            out[column] = values[array.offset * d : (array.offset + n) * d].reshape(n, d)
        else:  # List(Float32): rows of one length D (nulls excepted)
            offsets = array.offsets.to_numpy()
            values = array.values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
            lengths = np.diff(offsets)
            d = int(lengths.max()) if n else 0
            matrix = np.zeros((n, d), np.float32)
            for i in np.flatnonzero(lengths == d):
                matrix[i] = values[offsets[i] : offsets[i + 1]]
            out[column] = matrix
    return out


def collate(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack the tensors of a list of samples; ``sample_id`` (and any other non-tensor) stays a list.
    Samples of one batch must hold the same keys: pass ``modalities=`` to mix sources."""
    if not batch:
        raise ValueError("cannot collate an empty batch")
    keys = list(batch[0].keys())
    for sample in batch[1:]:
        if sample.keys() != batch[0].keys():
            a, b = set(batch[0]), set(sample)
            raise ValueError(
                f"samples {batch[0].get('sample_id')!r} and {sample.get('sample_id')!r} hold different keys "
                f"({sorted(a ^ b)}): choose ShardDataset(modalities=...) so every sample has the same ones"
            )
    out: dict[str, Any] = {}
    for key in keys:
        values = [sample[key] for sample in batch]
        out[key] = torch.stack(values) if isinstance(values[0], torch.Tensor) else values
    return out


__all__ = ["GRANULARITIES", "MODALITIES", "ShardDataset", "collate"]
