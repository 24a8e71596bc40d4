"""The embed step: committed shards -> frozen-encoder vectors in an embedding store.

``embed_shard`` reads one shard's model-ready arrays (a reader thread prepares the next batch while
the encoder computes the current one) and commits ``embeddings/<encoder-id>/<shard>.parquet``.
``embed_dataset`` embeds exactly the committed shards that lack a store file (a backfill) through an
executor's stateful workers (``Executor.map_on_workers``): one in-process worker locally, a Ray actor
pool with the model loaded once per actor (one GPU per actor where GPUs exist) on the same Ray
connection builds use. The dataset root may be a local path or an object-store URL; vectors are
written next to the shards either way, by the workers themselves.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np
import polars as pl

from preprocess.registry import modality_names
from storage import format as fmt
from storage.embeddings import commit_embeddings, missing_shard_ids, write_encoder_info
from storage.location import Location, as_location, polars_storage_options
from storage.locks import DatasetLock
from storage.reader import DatasetReader

if TYPE_CHECKING:
    from pipelines.executors import Executor


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
        known = modality_names()
        unknown = [m for m in self.modalities if m not in known]
        if unknown:
            raise ValueError(f"cannot embed modality {unknown}; choose from {sorted(known)}")
        return {
            m: create_encoder(
                self.name,
                checkpoint=self.checkpoint,
                modality=m,
                device=self.device,
                precision=self.precision,
                **kwargs,
            )
            for m in self.modalities
        }


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


def _read_index(root: Location, shard_id: int) -> pl.DataFrame:
    return pl.read_parquet(
        str(fmt.index_path(root, shard_id)),
        columns=["sample_id", "row", "modalities"],
        storage_options=polars_storage_options(root),
    )


def embed_shard(root: str | Path | Location, shard_id: int, encoders: dict[str, Any], encoder_id: str) -> EmbedSummary:
    started = time.perf_counter()
    root = as_location(root)
    index = _read_index(root, shard_id)
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
            batches = _batches(reader, shard_id, rows, modality, encoder.batch_size)
            chunks = [encoder.encode(batch) for batch in _overlapped(batches, encoder.device)]
            if chunks:
                out[np.flatnonzero(has)] = np.concatenate(chunks)
            vectors[modality] = out
            per_modality[modality] = len(rows)
    commit_embeddings(root, encoder_id, shard_id, sample_ids, vectors)
    return EmbedSummary(shard_id, len(sample_ids), per_modality, time.perf_counter() - started)


class _EmbedWorker:
    """One model per worker process: Ray actors of this class build the encoders once, then embed
    one shard of ``root`` after another."""

    def __init__(
        self,
        spec: EncoderSpec,
        expected_id: str | None = None,
        known_hashes: dict[tuple[str, int, int], str] | None = None,
        *,
        root: Location | None = None,
        encoders: dict[str, Any] | None = None,
    ):
        from encoders.base import remember_file_hashes

        self.root = root
        if encoders is not None:  # in-process: the driver's already loaded model
            self.encoders = encoders
            self.encoder_id = store_id(encoders)
            return

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
            raise RuntimeError(
                f"this worker's encoder is {self.encoder_id}, the driver's is {expected_id}: "
                f"the checkpoint {spec.checkpoint} differs between nodes"
            )

    def embed(self, shard_id: int) -> EmbedSummary:
        if self.root is None:
            raise RuntimeError("this embed worker was built without a dataset root")
        return embed_shard(self.root, shard_id, self.encoders, self.encoder_id)


class _EmbedWorkerFactory:
    """Builds an ``_EmbedWorker`` where it runs. In the driver's process (a local executor) it hands
    over the model the driver already loaded; pickled to a Ray actor it carries only the spec, the
    root (a path or URL + options) and the driver's checkpoint digests: models never travel."""

    def __init__(
        self,
        spec: EncoderSpec,
        root: Location,
        expected_id: str,
        known_hashes: dict[tuple[str, int, int], str],
        prebuilt: dict[str, Any] | None = None,
    ):
        self.spec = spec
        self.root = root
        self.expected_id = expected_id
        self.known_hashes = known_hashes
        self.prebuilt = prebuilt

    def __getstate__(self) -> dict:
        return {**self.__dict__, "prebuilt": None}

    def __call__(self) -> _EmbedWorker:
        if self.prebuilt is not None:
            return _EmbedWorker(self.spec, root=self.root, encoders=self.prebuilt)
        return _EmbedWorker(self.spec, self.expected_id, self.known_hashes, root=self.root)


@dataclass
class EmbedReport:
    encoder_id: str
    embedded: list[EmbedSummary]
    already_done: int
    seconds: float = 0.0

    def lines(self) -> list[str]:
        rows = sum(s.rows for s in self.embedded)
        rate = rows / self.seconds if self.seconds else 0.0
        return [
            f"encoder {self.encoder_id}: {len(self.embedded)} shards embedded ({rows} samples, "
            f"{rate:.1f} samples/s), {self.already_done} already in the store"
        ]


def embed_dataset(
    root: str | Path | Location,
    spec: EncoderSpec,
    executor: "Executor | str" = "local",
    ray_address: str | None = None,
    actors: int | None = None,
    progress: bool = True,
) -> EmbedReport:
    """Embed every committed shard that lacks this encoder's store file.

    ``executor``: an ``Executor`` (the one a build used, say), or ``"local"`` / ``"ray"`` with
    ``ray_address`` (the CLI's and flows' arguments), made by ``create_executor``. ``actors``: how
    many workers (default: one per GPU of a Ray cluster with GPUs, else one)."""
    from tqdm.auto import tqdm

    from encoders.base import known_file_hashes
    from pipelines.executors import create_executor
    from storage.shard import committed_shard_ids

    if isinstance(executor, str):
        executor = create_executor(executor, ray_address=ray_address)
    root = as_location(root)
    if isinstance(root, Path):
        root = root.resolve()
    started = time.perf_counter()
    probe = spec.create()  # fails fast on a bad name or checkpoint, before any Ray work
    encoder_id = store_id(probe)
    first = next(iter(probe.values()))
    with DatasetLock(root, f"embed-{encoder_id}"):
        write_encoder_info(
            root, encoder_id, {**first.metadata(), "modalities": list(spec.modalities), "name": spec.name}
        )
        todo = missing_shard_ids(root, encoder_id)
        report = EmbedReport(encoder_id, [], len(committed_shard_ids(root)) - len(todo))
        if todo and not executor.in_process:
            executor.check_root_reachable(root)  # every node writes vectors to the root itself
        # In-process workers reuse the loaded model; remote ones load their own copy.
        factory = _EmbedWorkerFactory(
            spec, root, encoder_id, known_file_hashes(), prebuilt=probe if executor.in_process else None
        )
        del probe, first
        with tqdm(total=len(todo), desc=f"embed {encoder_id}", unit="shard", disable=not progress or not todo) as bar:
            for _, summary in executor.map_on_workers(factory, "embed", todo, workers=actors):
                report.embedded.append(summary)
                bar.update(1)
    report.seconds = time.perf_counter() - started
    return report
