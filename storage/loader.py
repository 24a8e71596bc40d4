"""PyTorch loader over a dataset's committed shards: model-ready tensors for a training loop.

``ShardDataset`` is an ``IterableDataset``: each DataLoader worker of each rank reads its own part
of the dataset, straight from HDF5 (opened lazily inside the worker: h5py handles never cross a
fork) and Parquet. No pickle on the read path. Every shard is read through ``ShardReader``.

Local or remote: ``root`` is a local path or a URL (``s3://bucket/ds``). A local dataset's shards
are opened in place. A remote dataset's shards are fetched whole (one GET each) into a bounded local
cache shared by all workers (``cache_dir``, ``cache_limit_bytes``; see ``storage.cache``), verified
against the catalog's sha256, pinned while a worker reads them and released after their last row in
the worker's plan; while a worker reads its current shards, a background thread fetches the next
``prefetch_shards`` of its plan. The cache must hold the shards open at once: about
``buffer_shards`` per worker (``CacheFullError`` says so when it cannot).

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

Mid-epoch resume (``state_dict`` / ``load_state_dict``). The contract:

- the training loop counts the batches it has *consumed* in the current epoch, ``k`` (batches the
  DataLoader prefetched but the loop did not use are not consumed), and saves
  ``ds.state_dict(k, loader)`` with its checkpoint: plain ints and strings (``epoch``, ``seed``,
  ``batches_consumed``, the DataLoader's ``batch_size``/``num_workers``/``drop_last``,
  ``world_size`` and a fingerprint of the sample table), JSON-able. DDP ranks step in lockstep, so
  ``k`` is the same on every rank and one state (rank 0's) serves them all;
- to resume, build the dataset and DataLoader the same way (seed, world size, batch size,
  ``num_workers``, ``drop_last``; refused otherwise), call ``ds.load_state_dict(state)`` (it sets the
  epoch) and iterate: the loader yields exactly the batches the interrupted epoch had not delivered,
  the same samples in the same batches in the same order. ``set_epoch`` to another epoch ends the
  resume: later epochs are whole.

Why it is exact with DataLoader workers: with an ``IterableDataset`` and ``in_order=True`` (the
default) a DataLoader hands out batch requests to its workers in a fixed cycle 0..W-1, skipping
workers that ran out, and returns results in request order. So the loop's k-th batch is batch j of
worker w for the k-th pair (j, w) in (j, w) order with j < batches(w), and the batch count of every
worker follows from its plan length, the batch size and ``drop_last``. From ``k`` each worker's
consumed count is derived (a multiple of the batch size, so batches keep their composition); on
resume each worker skips that prefix of its deterministic plan, and workers are rotated so that
DataLoader worker 0 serves the worker whose batch was next, which continues the cycle exactly where
it stopped. Augmentations depend on (seed, epoch, sample_id) only, so the tensors are the same too.

Frozen embeddings (``embeddings="<encoder-id>"``): ``embeddings/<encoder-id>/<shard>.parquet``
(``sample_id`` + one ``Array(Float32, D)`` or ``List(Float32)`` column per modality) is joined by
``sample_id`` and yielded as ``"<column>_embedding"``. Samples without a (non-null) vector in every
selected column are skipped, counted in ``missing_embeddings`` (ids in ``missing_embedding_ids``)
and reported with a warning when the dataset is created.

Corrupt samples (``on_corrupt``). A stored sample whose bytes fail their chunk checksum raises
``storage.CorruptSampleError`` naming the dataset, shard, row, sample and array (``"raise"``, the
default: through a DataLoader the worker's error is re-raised in the loop with that message). With
``on_corrupt="skip"`` the sample is dropped instead:

- one warning line is logged (logger ``storage.loader``) naming it, from the worker that read it;
- the worker yields a *placeholder* ``{"sample_id": id, "_skipped": "<the error message>"}`` in its
  place, and ``collate`` drops placeholders from the batch and lists their ids under the batch's
  ``"_skipped"`` key (present only when a sample of that batch was skipped). So the batch is one
  sample shorter, or empty (``sample_id == []``, no tensors) when every sample of it was corrupt: a
  training loop skips such a batch. A custom ``collate_fn`` (or ``batch_size=None``) must drop items
  holding ``"_skipped"`` the same way;
- ``ds.corrupt_skipped`` counts the samples skipped in the current epoch by all workers of this
  process's DataLoader (per-worker counters in shared memory, like the epoch; a worker runs ahead of
  the loop by its prefetched batches, so the count is exact once the epoch's batches are consumed).

Why placeholders rather than yielding nothing: a skipped sample keeps its position in the worker's
plan, so every batch holds the same plan positions as without corruption, the DataLoader's worker
cycle is unchanged, and mid-epoch resume stays exact: a skipped sample counts as consumed (a resume
past it does not read it again, nor count it again; one before it reads and skips it again). Every
other sample is still yielded exactly once.

Deduplicated (``dedup="<name>"``): the samples ``dedup/<name>.parquet`` marks as duplicates that
are not kept (``storage.dedup``; written by ``bindset dedup``) are left out, so each duplicate group
is read once, through its representative. Nothing is deleted; another name or None reads them again.

Why one module of this size: it is one class whose planning, resume arithmetic and reads share one
contract (every sample exactly once, exact mid-epoch resume); most of its length is that contract,
written out here.
"""

from __future__ import annotations

import hashlib
import logging
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np
import polars as pl
import torch
from torch.utils.data import IterableDataset, get_worker_info

from preprocess.registry import modality_names
from storage.location import Location, as_location, is_remote, list_files, polars_storage_options
from storage.reader import DatasetReader
from storage.scans import scan_index
from storage.shard import CorruptSampleError, ShardReader, ShardReaderPool

if TYPE_CHECKING:
    from preprocess.augment import AugmentConfig

GRANULARITIES = ("auto", "shard", "row")
ON_CORRUPT = ("raise", "skip")
SKIPPED_KEY = "_skipped"  # placeholder/batch key of samples dropped by on_corrupt="skip"
_COUNTER_SLOTS = 256  # per-worker corrupt-sample counters (worker id modulo this)
log = logging.getLogger(__name__)


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


class ShardDataset(IterableDataset):
    """Yields ``{"sample_id": str, "<modality>": Tensor, ...}`` per stored sample (see module doc).

    ``modalities``: keep only samples holding all of them and yield only those (with their masks
    ``depth_valid``/``imu_valid``); None yields whatever each sample holds. ``split``: one split
    name or several. ``dedup``: the name of a dedup table whose non-kept duplicates are skipped. ``granularity``: "auto", "shard" or "row" (module doc). ``buffer_shards``:
    shards whose rows are shuffled together. ``max_open_shards``: HDF5 files a worker keeps open.
    Remote roots only: ``cache_dir`` / ``cache_limit_bytes`` (the shard cache, ``storage.cache``;
    defaults ``$BINDSET_CACHE_DIR`` / 16 GiB) and ``prefetch_shards`` (shards a worker fetches ahead).
    ``on_corrupt``: "raise" (default) or "skip" a sample that fails its checksum (module doc).
    """

    def __init__(
        self,
        root: str | Path | Location,
        modalities: Sequence[str] | None = None,
        split: str | Sequence[str] | None = None,
        shuffle: bool = True,
        seed: int = 0,
        augment: AugmentConfig | None = None,
        train: bool = True,
        embeddings: str | None = None,
        embedding_columns: Sequence[str] | None = None,
        rank: int | None = None,
        world_size: int | None = None,
        granularity: str = "auto",
        buffer_shards: int = 2,
        max_open_shards: int = 16,
        cache_dir: str | Path | None = None,
        cache_limit_bytes: int | None = None,
        prefetch_shards: int = 2,
        dedup: str | None = None,
        on_corrupt: str = "raise",
    ):
        super().__init__()
        if on_corrupt not in ON_CORRUPT:
            raise ValueError(f"on_corrupt must be one of {ON_CORRUPT}, got {on_corrupt!r}")
        self.on_corrupt = on_corrupt
        # The registered modalities, in registry order: each sample's set is kept as bits of this.
        self._known = modality_names()
        self.root = as_location(root)
        self._reader = DatasetReader(self.root)  # catalog only: normalization constants, no files open
        self._catalog = self._reader.catalog  # shard sha256/size for the cache: workers never reread it
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self.cache_limit_bytes = None if cache_limit_bytes is None else int(cache_limit_bytes)
        self.prefetch_shards = max(0, int(prefetch_shards))
        if modalities is not None:
            modalities = tuple(modalities)
            unknown = set(modalities) - set(self._known)
            if unknown or not modalities:
                raise ValueError(f"unknown modalities {sorted(unknown)}; choose from {self._known}")
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
        # The resume point of load_state_dict, shared for the same reason:
        # [epoch (-1: none), batches consumed, batch size, num_workers, drop_last].
        self._resume = torch.tensor([-1, 0, 1, 0, 0], dtype=torch.int64).share_memory_()
        # Corrupt samples skipped, one (epoch, count) slot per DataLoader worker: each worker writes
        # only its own slot (no lost updates without atomics) and the main process sums them.
        self._corrupt = torch.zeros((_COUNTER_SLOTS, 2), dtype=torch.int64).share_memory_()

        index = scan_index(self.root).select("sample_id", "shard", "row", "split", "modalities")
        if split is not None:
            splits = [split] if isinstance(split, str) else list(split)
            index = index.filter(pl.col("split").is_in(splits))
        if modalities is not None:
            index = index.filter(pl.all_horizontal([pl.col("modalities").list.contains(m) for m in modalities]))
        self.dedup = dedup
        if dedup is not None:
            from storage.dedup import dropped_ids

            index = index.join(dropped_ids(self.root, dedup).lazy(), on="sample_id", how="anti")
        index = index.with_columns(
            pl.sum_horizontal(
                [pl.col("modalities").list.contains(m).cast(pl.Int64) * (1 << i) for i, m in enumerate(self._known)]
            ).alias("_bits")
        ).collect()

        self.embedding_columns: tuple[str, ...] = ()
        self.embedding_files: tuple[str, ...] = ()
        self._embedding_options: dict[str, str] | None = None  # storage options of a remote store
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
    def _join_embeddings(self, index: pl.DataFrame, encoder_id: str, columns: Sequence[str] | None) -> pl.DataFrame:
        from storage.embeddings import embedding_dir

        directory = embedding_dir(self.root, encoder_id)
        files = [p for p in list_files(directory, ".parquet") if p.stem.isdigit()]
        if not files:
            raise FileNotFoundError(f"no embedding store {directory} (run the embed step for {encoder_id!r})")
        options = polars_storage_options(files[0])
        schema = pl.scan_parquet(str(files[0]), storage_options=options).collect_schema()
        vector_columns = [c for c, t in schema.items() if c != "sample_id" and isinstance(t, (pl.Array, pl.List))]
        columns = tuple(columns) if columns is not None else tuple(vector_columns)
        bad = [c for c in columns if c not in vector_columns]
        if bad or not columns:
            raise ValueError(
                f"embedding columns {bad or list(columns)} not in {directory} (vector columns: {vector_columns})"
            )
        self.embedding_columns = columns
        self.embedding_files = tuple(str(p) for p in files)
        self._embedding_options = dict(files[0].options) if is_remote(files[0]) else None
        # One scan per file with its number as a literal: file ids need no path matching (Polars
        # may spell a URL differently from the listing).
        per_file = [
            pl.scan_parquet(str(f), storage_options=options).select(
                "sample_id",
                pl.lit(i, dtype=pl.Int64).alias("_emb_file"),
                pl.int_range(pl.len(), dtype=pl.Int64).alias("_emb_row"),
                pl.all_horizontal([pl.col(c).is_not_null() for c in columns]).alias("_emb_ok"),
            )
            for i, f in enumerate(files)
        ]
        store = (
            pl.concat(per_file)
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
    def corrupt_skipped(self) -> int:
        """Samples ``on_corrupt="skip"`` dropped in the current epoch, all workers together."""
        counts = self._corrupt
        return int(counts[counts[:, 0] == self.epoch, 1].sum())

    @property
    def num_samples(self) -> int:
        """Samples one epoch reads across all ranks and workers."""
        return int(self._sample_ids.size)

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        """Call before iterating each epoch (before ``iter(loader)``). Another epoch than a loaded
        resume point's ends that resume."""
        if int(epoch) < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        if int(self._resume[0]) != int(epoch):
            self._resume[0] = -1
        self._epoch.fill_(int(epoch))

    # -- mid-epoch resume (module doc: the contract) ----------------------------------------------------
    def fingerprint(self) -> str:
        """Identifies the sample table (ids in order): a resume state fits only the same one."""
        return hashlib.sha256(self._sample_ids.tobytes()).hexdigest()[:16]

    def state_dict(
        self,
        batches_consumed: int,
        loader: Any = None,
        *,
        batch_size: int = 1,
        num_workers: int = 0,
        drop_last: bool = False,
    ) -> dict[str, Any]:
        """Where the current epoch stands after the training loop consumed ``batches_consumed``
        batches of ``loader`` (a DataLoader over this dataset; without one, ``batch_size``,
        ``num_workers`` and ``drop_last`` describe how the samples were batched)."""
        if loader is not None:
            if getattr(loader, "dataset", None) is not self:
                raise ValueError("state_dict: the loader does not iterate this dataset")
            if not getattr(loader, "in_order", True):
                raise ValueError(
                    "state_dict: a DataLoader with in_order=False yields batches in no fixed "
                    "order, so the consumed samples cannot be derived; use in_order=True"
                )
            batch_size = 1 if loader.batch_size is None else int(loader.batch_size)
            num_workers, drop_last = int(loader.num_workers), bool(loader.drop_last)
        if int(batches_consumed) < 0 or int(batch_size) < 1 or int(num_workers) < 0:
            raise ValueError(
                f"state_dict: need batches_consumed >= 0, batch_size >= 1, num_workers >= 0; got "
                f"{batches_consumed}, {batch_size}, {num_workers}"
            )
        return {
            "version": 1,
            "epoch": self.epoch,
            "seed": self.seed,
            "shuffle": self.shuffle,
            "world_size": self.world_size,
            "fingerprint": self.fingerprint(),
            "batches_consumed": int(batches_consumed),
            "batch_size": int(batch_size),
            "num_workers": int(num_workers),
            "drop_last": bool(drop_last),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume at ``state`` (from ``state_dict``): sets the epoch; the next iteration of that epoch
        yields only what the interrupted one had not delivered."""
        if state.get("version") != 1:
            raise ValueError(f"unknown ShardDataset state version {state.get('version')!r}")
        mine = {
            "seed": self.seed,
            "shuffle": self.shuffle,
            "world_size": self.world_size,
            "fingerprint": self.fingerprint(),
        }
        differ = {k: (state.get(k), v) for k, v in mine.items() if state.get(k) != v}
        if differ:
            detail = ", ".join(f"{k} {a!r} (saved) != {b!r} (now)" for k, (a, b) in differ.items())
            raise ValueError(
                f"cannot resume {self.root}: {detail}; a resume needs the same samples, seed, shuffle and world size"
            )
        self.set_epoch(int(state["epoch"]))
        self._resume.copy_(
            torch.tensor(
                [
                    int(state["epoch"]),
                    int(state["batches_consumed"]),
                    int(state["batch_size"]),
                    int(state["num_workers"]),
                    int(bool(state["drop_last"])),
                ],
                dtype=torch.int64,
            )
        )

    def _resume_point(self, epoch: int, worker: int, num_workers: int) -> tuple[int, int]:
        """(positions to skip, logical worker) for DataLoader worker ``worker`` of ``num_workers``."""
        saved_epoch, batches, batch_size, saved_workers, drop_last = (int(v) for v in self._resume.tolist())
        if saved_epoch != epoch:
            return 0, worker
        if max(saved_workers, 1) != num_workers:
            raise ValueError(
                f"resume state of {self.root} was saved with num_workers={saved_workers}; this "
                f"DataLoader has {num_workers if get_worker_info() else 0}: use the same number"
            )
        consumed, rotation = self.consumed_per_worker(epoch, batches, batch_size, num_workers, bool(drop_last))
        logical = (worker + rotation) % num_workers
        return consumed[logical], logical

    def consumed_per_worker(
        self, epoch: int, batches: int, batch_size: int, num_workers: int, drop_last: bool = False
    ) -> tuple[list[int], int]:
        """Samples each (logical) worker of this rank had delivered after ``batches`` batches of an
        epoch, and the worker whose batch comes next (0 when none does): see the module doc."""
        workers = max(1, num_workers)
        sizes = [int(self.plan(epoch, worker=w, num_workers=workers).size) for w in range(workers)]
        per_worker = [n // batch_size if drop_last else -(-n // batch_size) for n in sizes]
        taken = [0] * workers
        remaining = min(int(batches), sum(per_worker))
        j = 0
        while True:
            for w in range(workers):
                if j < per_worker[w]:
                    if remaining == 0:
                        return [min(sizes[v], taken[v] * batch_size) for v in range(workers)], w
                    taken[w] += 1
                    remaining -= 1
            if j >= max(per_worker, default=0):
                return [min(sizes[v], taken[v] * batch_size) for v in range(workers)], 0
            j += 1

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
            pos = np.concatenate(
                [np.arange(self._shard_start[s], self._shard_start[s] + self._shard_count[s]) for s in window]
            )
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

    def plan(
        self,
        epoch: int | None = None,
        rank: int | None = None,
        world_size: int | None = None,
        worker: int = 0,
        num_workers: int = 1,
    ) -> np.ndarray:
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
        skip, logical = self._resume_point(epoch, worker, num_workers)
        positions = self.plan(epoch, worker=logical, num_workers=num_workers)[skip:]
        self._corrupt[worker % _COUNTER_SLOTS] = torch.tensor([epoch, 0])  # this pass counts afresh
        return self._read(positions, epoch)

    def _make_cache(self):
        from storage.cache import ShardCache

        return ShardCache(self.cache_dir, self.cache_limit_bytes)

    def _read(self, positions: np.ndarray, epoch: int) -> Iterator[dict[str, Any]]:
        """Yield ``positions`` in order. Each shard is open from its first to its last row in this
        plan (then closed: a remote shard is unpinned and may be evicted); opening one asks the
        cache to prefetch the next ``prefetch_shards`` shards of the plan."""
        shards = self._shards[positions]
        last_use = {int(s): i for i, s in enumerate(shards.tolist())}
        _, first = np.unique(shards, return_index=True)
        upcoming = shards[np.sort(first)].tolist()  # shards in order of first use
        rank_of = {s: k for k, s in enumerate(upcoming)}
        cache = self._make_cache() if is_remote(self.root) else None
        if cache is not None:
            self._check_cache_room(shards, last_use, cache.limit_bytes)
        pool = ShardReaderPool(self.root, self.max_open_shards, cache=cache, catalog=self._catalog)
        vectors: OrderedDict[int, dict[str, np.ndarray]] = OrderedDict()
        try:
            for i, pos in enumerate(positions.tolist()):
                shard = int(shards[i])
                if cache is not None and not pool.is_open(shard) and self.prefetch_shards:
                    ahead = upcoming[rank_of[shard] + 1 : rank_of[shard] + 1 + self.prefetch_shards]
                    cache.prefetch([self._remote_shard(s) for s in ahead])
                try:
                    item = self._load(pos, epoch, pool.get(shard), vectors, cache)
                except CorruptSampleError as exc:
                    if self.on_corrupt != "skip":
                        raise
                    item = self._skipped(pos, epoch, exc)
                yield item
                if last_use[shard] == i:
                    pool.release(shard)
        finally:
            pool.close()
            if cache is not None:
                cache.close()

    def _skipped(self, pos: int, epoch: int, exc: CorruptSampleError) -> dict[str, Any]:
        """The placeholder of a corrupt sample (module doc), counted and logged."""
        info = get_worker_info()
        slot = self._corrupt[(info.id if info is not None else 0) % _COUNTER_SLOTS]
        if int(slot[0]) != epoch:
            slot.copy_(torch.tensor([epoch, 0]))
        slot[1] += 1
        sample_id = self._sample_ids[pos].decode("utf-8")
        log.warning("skipped a corrupt sample (on_corrupt='skip', epoch %d): %s", epoch, exc)
        return {"sample_id": sample_id, SKIPPED_KEY: str(exc)}

    def _check_cache_room(self, shards: np.ndarray, last_use: dict[int, int], limit: int) -> None:
        """Warn when this rank's workers may together need more open shards than the cache holds:
        they would then wait for each other (and give up with CacheFullError after a while)."""
        from storage.format import shard_name

        entries = self._catalog.get("shards", {})
        size = {s: int(entries.get(shard_name(s), {}).get("bytes") or 0) for s in last_use}
        open_bytes = peak = 0
        seen: set[int] = set()
        for i, shard in enumerate(shards.tolist()):
            if shard not in seen:
                seen.add(shard)
                open_bytes += size[shard]
                peak = max(peak, open_bytes)
            if last_use[shard] == i:
                open_bytes -= size[shard]
        info = get_worker_info()
        workers = info.num_workers if info is not None else 1
        if workers * peak > limit:
            warnings.warn(
                f"{self.root}: a worker keeps up to {peak} bytes of shards open at once; {workers} worker(s) "
                f"may need {workers * peak} bytes, more than the cache limit of {limit} bytes. Raise "
                f"cache_limit_bytes or lower buffer_shards, or workers will wait for each other",
                stacklevel=2,
            )

    def _remote_shard(self, shard_id: int):
        from storage.cache import remote_shard

        return remote_shard(self.root, shard_id, self._catalog)

    def _wanted(self, bits: int) -> list[str]:
        present = [m for i, m in enumerate(self._known) if bits >> i & 1]
        return present if self.modalities is None else [m for m in self.modalities if m in present]

    def _load(
        self,
        pos: int,
        epoch: int,
        reader: ShardReader,
        vectors: OrderedDict[int, dict[str, np.ndarray]],
        cache: Any = None,
    ) -> dict[str, Any]:
        from preprocess.augment import augment, sample_rng

        sample_id = self._sample_ids[pos].decode("utf-8")
        stored = reader.read_groups(int(self._rows[pos]), self._wanted(int(self._bits[pos])), sample_id=sample_id)
        if self.augment is not None and self.train:
            ready = augment(
                stored, self.augment, sample_rng(self.seed, epoch, sample_id), self._reader.model_ready, train=True
            )
        else:
            ready = self._reader.model_ready(stored)
        out: dict[str, Any] = {"sample_id": sample_id}
        for key, value in ready.items():
            out[key] = torch.from_numpy(np.ascontiguousarray(value))
        if self._emb_file is not None:
            table = self._vectors(int(self._emb_file[pos]), vectors, cache)
            erow = int(self._emb_row[pos])
            for column in self.embedding_columns:
                out[f"{column}_embedding"] = torch.from_numpy(table[column][erow].copy())
        return out

    def _vectors(
        self, file_id: int, tables: OrderedDict[int, dict[str, np.ndarray]], cache: Any = None
    ) -> dict[str, np.ndarray]:
        if file_id not in tables:
            source: Any = self.embedding_files[file_id]
            if self._embedding_options is not None:
                import pyarrow as pa

                from storage.cache import read_object

                # Through the cache's fork-safe fetch: obstore must not run in a forked worker.
                source = pa.BufferReader(read_object(source, self._embedding_options, cache))
            tables[file_id] = _read_vectors(source, self.embedding_columns)
            while len(tables) > self.max_open_shards:
                tables.popitem(last=False)
        tables.move_to_end(file_id)
        return tables[file_id]


def _read_vectors(source: Any, columns: Sequence[str]) -> dict[str, np.ndarray]:
    """``{column: [rows, D] float32}`` of one store file (a path or a pyarrow buffer), read in a
    DataLoader worker.

    pyarrow, single-threaded, not polars: a forked worker must not use polars, whose thread pool
    the parent already started (its locks may be copied held: the child then deadlocks). Rows whose
    vector is null hold unspecified values; the join at start-up never points at them."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(source, columns=list(columns), use_threads=False, pre_buffer=False)
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
    Samples of one batch must hold the same keys: pass ``modalities=`` to mix sources.

    Placeholders of samples ``on_corrupt="skip"`` dropped are left out; their ids are listed under
    ``"_skipped"`` (only in a batch that had one; a batch of placeholders only is
    ``{"sample_id": [], "_skipped": [...]}``)."""
    if not batch:
        raise ValueError("cannot collate an empty batch")
    skipped = [s["sample_id"] for s in batch if SKIPPED_KEY in s]
    if skipped:
        batch = [s for s in batch if SKIPPED_KEY not in s]
        if not batch:
            return {"sample_id": [], SKIPPED_KEY: skipped}
        return {**collate(batch), SKIPPED_KEY: skipped}
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


__all__ = ["GRANULARITIES", "ON_CORRUPT", "SKIPPED_KEY", "ShardDataset", "collate"]
