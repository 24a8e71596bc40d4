"""The embed step: committed shards -> frozen-encoder vectors in an embedding store.

``embed_shard`` reads one shard's model-ready arrays (a reader thread prepares the next batch while
the encoder computes the current one) and commits ``embeddings/<encoder-id>/<shard>.parquet``.
``embed_dataset`` embeds exactly the committed shards that lack a store file (a backfill), locally
or on a Ray actor pool with the model loaded once per actor (one GPU per actor where GPUs exist).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import polars as pl

from storage import format as fmt
from storage.embeddings import commit_embeddings, missing_shard_ids, write_encoder_info
from storage.locks import DatasetLock
from storage.reader import DatasetReader

# Dataset modality -> the model-ready array the reader returns for it.
INPUT_KEY = {"image": "image", "video": "video", "text": "text", "audio": "audio", "depth": "depth",
             "thermal": "thermal", "imu": "imu"}


@dataclass(frozen=True)
class EncoderSpec:
    """How to build an encoder anywhere (Ray actors build their own; models never travel)."""

    name: str
    checkpoint: str | None = None
    modalities: tuple[str, ...] = ("image",)
    device: str | None = None
    precision: str | None = None
    batch_size: int | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def create(self) -> dict[str, Any]:
        from encoders import create_encoder

        kwargs = dict(self.options)
        if self.batch_size:
            kwargs["batch_size"] = self.batch_size
        unknown = [m for m in self.modalities if m not in INPUT_KEY]
        if unknown:
            raise ValueError(f"cannot embed modality {unknown}; choose from {sorted(INPUT_KEY)}")
        return {m: create_encoder(self.name, checkpoint=self.checkpoint, modality=m, device=self.device,
                                  precision=self.precision, **kwargs) for m in self.modalities}


def store_id(encoders: dict[str, Any]) -> str:
    """One store per model, checkpoint hash and preprocessing version (the encoders' ``model_id``);
    each embedded modality is a column of it, as DESIGN.md lays out."""
    ids = {e.model_id for e in encoders.values()}
    if len(ids) != 1:
        raise ValueError(f"one store needs one model, got {sorted(ids)}")
    return ids.pop()


@dataclass(frozen=True)
class EmbedSummary:
    shard_id: int
    rows: int
    per_modality: dict[str, int]
    seconds: float


def _batches(reader: DatasetReader, shard_id: int, rows: list[int], key: str, size: int) -> Iterator[np.ndarray]:
    for start in range(0, len(rows), size):
        yield reader.read_batch(shard_id, rows[start : start + size], key)


def _prefetched(iterator: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    """Read batch k+1 on a thread while the caller encodes batch k (h5py releases the GIL on I/O)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(next, iterator, None)
        while True:
            batch = future.result()
            if batch is None:
                return
            future = pool.submit(next, iterator, None)
            yield batch


def _overlapped(batches: Iterator[np.ndarray], device) -> Iterator[np.ndarray]:
    """Prefetch the next batch while the model runs, when the model runs on an accelerator.

    On the CPU the model's intra-op threads already use every core: a reader thread beside them
    only preempts one, and the others wait for it at each parallel region's barrier (measured on 2
    cores, interleaved shard by shard: 0.96 of a bare encode loop's speed with a reader thread, 1.04
    without; run-to-run noise here is about 4 %).
    """
    return _prefetched(batches) if getattr(device, "type", str(device)) != "cpu" else batches


def embed_shard(root: str | Path, shard_id: int, encoders: dict[str, Any], encoder_id: str) -> EmbedSummary:
    started = time.perf_counter()
    index = pl.read_parquet(fmt.index_path(root, shard_id), columns=["sample_id", "row", "modalities"])
    wanted = set(encoders)
    index = index.filter(pl.col("modalities").list.eval(pl.element().is_in(list(wanted))).list.any())
    sample_ids = index["sample_id"].to_list()
    vectors: dict[str, np.ndarray] = {}
    per_modality: dict[str, int] = {}
    with DatasetReader(root) as reader:
        for modality, encoder in encoders.items():
            has = [modality in m for m in index["modalities"].to_list()]
            rows = [r for r, h in zip(index["row"].to_list(), has) if h]
            out = np.full((len(sample_ids), encoder.dim), np.nan, dtype=np.float32)
            batches = _batches(reader, shard_id, rows, INPUT_KEY[modality], encoder.batch_size)
            chunks = [encoder.encode(batch) for batch in _overlapped(batches, encoder.device)]
            if chunks:
                out[np.flatnonzero(has)] = np.concatenate(chunks)
            vectors[modality] = out
            per_modality[modality] = len(rows)
    commit_embeddings(root, encoder_id, shard_id, sample_ids, vectors)
    return EmbedSummary(shard_id, len(sample_ids), per_modality, time.perf_counter() - started)


class _EmbedWorker:
    """One model per worker process: Ray actors of this class build the encoders once."""

    def __init__(self, spec: EncoderSpec, expected_id: str | None = None,
                 known_hashes: dict[tuple[str, int, int], str] | None = None):
        from encoders.base import remember_file_hashes

        # The driver already hashed the checkpoint (GBs for a huge model): reuse its digest for the
        # same path, size and mtime rather than reading the file again in every actor. The check
        # below therefore catches a different file only where size or mtime differ (a copy that
        # kept both for other bytes would pass, as it would for rsync's own quick check).
        remember_file_hashes(known_hashes or {})
        self.encoders = spec.create()
        self.encoder_id = store_id(self.encoders)
        if expected_id is not None and self.encoder_id != expected_id:
            # e.g. another node holds a different file at the checkpoint path: its vectors must not
            # land in (or beside) the store the driver planned for.
            raise RuntimeError(f"this worker's encoder is {self.encoder_id}, the driver's is {expected_id}: "
                               f"the checkpoint {spec.checkpoint} differs between nodes")

    def embed(self, root: str, shard_id: int) -> dict:
        return embed_shard(root, shard_id, self.encoders, self.encoder_id).__dict__


@dataclass
class EmbedReport:
    encoder_id: str
    embedded: list[EmbedSummary]
    already_done: int
    seconds: float = 0.0

    def lines(self) -> list[str]:
        rows = sum(s.rows for s in self.embedded)
        rate = rows / self.seconds if self.seconds else 0.0
        return [f"encoder {self.encoder_id}: {len(self.embedded)} shards embedded ({rows} samples, "
                f"{rate:.1f} samples/s), {self.already_done} already in the store"]


def embed_dataset(root: str | Path, spec: EncoderSpec, executor: str = "local", ray_address: str | None = None,
                  actors: int | None = None, progress: bool = True) -> EmbedReport:
    """Embed every committed shard that lacks this encoder's store file."""
    from tqdm.auto import tqdm

    root = Path(root).resolve()
    started = time.perf_counter()
    probe = spec.create()  # fails fast on a bad name or checkpoint, before any Ray work
    encoder_id = store_id(probe)
    first = next(iter(probe.values()))
    with DatasetLock(root, f"embed-{encoder_id}"):
        write_encoder_info(root, encoder_id, {**first.metadata(), "modalities": list(spec.modalities),
                                              "name": spec.name})
        todo = missing_shard_ids(root, encoder_id)
        report = EmbedReport(encoder_id, [], 0)
        from storage.shard import committed_shard_ids

        report.already_done = len(committed_shard_ids(root)) - len(todo)
        with tqdm(total=len(todo), desc=f"embed {encoder_id}", unit="shard", disable=not progress or not todo) as bar:
            if executor == "local" or not todo:
                for shard_id in todo:
                    report.embedded.append(embed_shard(root, shard_id, probe, encoder_id))
                    bar.update(1)
            else:
                del probe  # the actors load their own copies
                for summary in _embed_on_ray(root, spec, todo, ray_address, actors, encoder_id):
                    report.embedded.append(summary)
                    bar.update(1)
    report.seconds = time.perf_counter() - started
    return report


def _embed_on_ray(root: Path, spec: EncoderSpec, shard_ids: list[int], address: str | None,
                  actors: int | None, encoder_id: str | None = None) -> Iterator[EmbedSummary]:
    import os

    import ray
    from ray.util import ActorPool

    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS") or "local"
        kwargs = {"include_dashboard": False, "object_store_memory": 256 * 1024**2} if address == "local" else {}
        ray.init(address=address, configure_logging=False, **kwargs)
    gpus = int(ray.cluster_resources().get("GPU", 0))
    count = actors or max(1, min(gpus or 1, len(shard_ids)))
    actor_cls = ray.remote(num_gpus=1 if gpus else 0, num_cpus=1, max_restarts=2, max_task_retries=2)(_EmbedWorker)
    from encoders.base import known_file_hashes

    pool = ActorPool([actor_cls.remote(spec, encoder_id, known_file_hashes()) for _ in range(count)])
    for result in pool.map_unordered(lambda actor, shard: actor.embed.remote(str(root), shard), shard_ids):
        yield EmbedSummary(**result)
