"""Export a dataset as WebDataset tar shards, read as-is by the ``webdataset`` package.

    export_webdataset("/data/llvip", "s3://team/llvip-wds", dedup="default", shard_size=1000)
    # then, anywhere:  webdataset.WebDataset("llvip-wds/shard-{000000..000003}.tar").decode()

One sample per key (the sample_id): ``<sample_id>.<array>.npy`` for every model-ready array the
loader yields (``image``, ``depth`` and ``depth_valid``, ``audio``, ``video``, ``imu`` and
``imu_valid``, ``text`` tokens, ``<column>_embedding`` with ``embeddings=``), written by
``numpy.save(allow_pickle=False)`` into the tar (no pickle), and ``<sample_id>.json`` with the
sample's index row (source, split, label, caption, uris, shard, row, clip times, quality figures).
The tensors are the ones ``ShardDataset`` yields without augmentation (it produces them here), so a
model trained from the export sees what one trained from the shards sees.

Beside the tars: ``listing.parquet`` (sample_id, tar, key, members, position in the tar, shard,
row), a Polars-readable account of what went where, and ``export.json`` (dataset, dedup table,
counts, tar names with size and sha256, the brace pattern for ``webdataset``), written last: an
export is complete when ``export.json`` exists. ``out`` may be a URL: each tar is written to a local
temp file and uploaded (multipart for large ones) through the location layer.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import polars as pl

from storage.location import Location, as_location, is_remote, list_files, publish_file, write_bytes_atomic

FORMATS = ("webdataset",)
EXPORT_FILE = "export.json"
LISTING_FILE = "listing.parquet"


@dataclass
class ExportReport:
    out: Location
    samples: int
    tars: list[str]
    bytes_written: int
    seconds: float
    skipped_duplicates: int = 0
    meta: dict[str, Any] = field(default_factory=dict, repr=False)

    def lines(self) -> list[str]:
        rate = self.samples / self.seconds if self.seconds > 0 else 0.0
        out = [
            f"exported {self.samples} samples to {len(self.tars)} tar shards in {self.out} "
            f"({self.bytes_written / 1e6:.1f} MB, {self.seconds:.1f} s, {rate:.1f} samples/s)"
        ]
        if self.meta.get("dedup"):
            out.append(f"  dedup table {self.meta['dedup']!r}: {self.skipped_duplicates} duplicates left out")
        out.append(f"  read it: webdataset.WebDataset({str(self.out / self.meta['pattern'])!r}).decode()")
        out.append(f"  listing: polars.read_parquet({str(self.out / LISTING_FILE)!r})")
        return out


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0  # the same dataset exports to the same bytes
    info.mode = 0o444
    info.uname = info.gname = "bindset"
    tar.addfile(info, io.BytesIO(data))


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(8 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    return str(value)


def _prepare_out(out: Location, overwrite: bool) -> list[Location]:
    """Refuse to mix with other files; return the tars of a previous export (replaced if overwrite)."""
    previous = (out / EXPORT_FILE).is_file()
    tars = list_files(out, ".tar")
    if previous or tars:
        if not overwrite:
            raise FileExistsError(
                f"{out} already holds an export ({len(tars)} tar files); pass --overwrite "
                "to replace it, or choose another --out"
            )
        return tars
    if not is_remote(out):
        Path(out).mkdir(parents=True, exist_ok=True)
    return []


def export_webdataset(
    root: str | Path | Location,
    out: str | Path | Location,
    *,
    dedup: str | None = None,
    shard_size: int = 1000,
    modalities: Sequence[str] | None = None,
    split: str | Sequence[str] | None = None,
    embeddings: str | None = None,
    prefix: str = "shard",
    overwrite: bool = False,
    progress: bool = False,
) -> ExportReport:
    """Write the dataset's samples (optionally deduplicated, one split, some modalities) as tar
    shards of ``shard_size`` samples (module doc)."""
    from storage import scan_index
    from storage.loader import ShardDataset

    started = time.perf_counter()
    if shard_size < 1:
        raise ValueError(f"shard size must be >= 1, got {shard_size}")
    if not prefix or "/" in prefix or "." in prefix:
        raise ValueError(f"tar name prefix {prefix!r} must be a plain name without '/' or '.'")
    root = as_location(root)
    out = as_location(out)
    old_tars = _prepare_out(out, overwrite)

    def samples_of(dedup_table: str | None) -> ShardDataset:
        # In shard order, unaugmented, one reader: what the export writes (and, without the dedup
        # table, what it would have written, to count the duplicates left out).
        return ShardDataset(
            root,
            modalities=modalities,
            split=split,
            shuffle=False,
            train=False,
            embeddings=embeddings,
            rank=0,
            world_size=1,
            granularity="shard",
            dedup=dedup_table,
        )

    dataset = samples_of(dedup)
    every = samples_of(None) if dedup else None
    index = scan_index(root).unique("sample_id", keep="last").collect()
    rows = {r["sample_id"]: r for r in index.iter_rows(named=True)}
    n = dataset.num_samples
    count = (n + shard_size - 1) // shard_size
    digits = max(6, len(str(max(count - 1, 0))))
    names = [f"{prefix}-{i:0{digits}d}.tar" for i in range(count)]
    listing: list[dict[str, Any]] = []
    tar_records: list[dict[str, Any]] = []
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=None if is_remote(out) else str(out)))
    written = 0
    from tqdm.auto import tqdm

    try:
        samples = iter(dataset)
        with tqdm(total=n, desc="export", unit="sample", disable=not progress) as bar:
            for t, name in enumerate(names):
                local = staging / name
                with tarfile.open(local, "w", format=tarfile.PAX_FORMAT) as tar:
                    for position in range(min(shard_size, n - t * shard_size)):
                        sample = next(samples)
                        sid = sample["sample_id"]
                        members = []
                        for key in sorted(k for k in sample if k != "sample_id"):
                            member = f"{sid}.{key}.npy"
                            _add_member(tar, member, _npy(sample[key].numpy()))
                            members.append(member)
                        meta = {k: v for k, v in rows.get(sid, {"sample_id": sid}).items() if v is not None}
                        _add_member(
                            tar, f"{sid}.json", json.dumps(meta, sort_keys=True, default=_json_default).encode()
                        )
                        members.append(f"{sid}.json")
                        row = rows.get(sid, {})
                        listing.append(
                            {
                                "sample_id": sid,
                                "tar": name,
                                "key": sid,
                                "members": members,
                                "position": position,
                                "shard": row.get("shard"),
                                "row": row.get("row"),
                            }
                        )
                        bar.update(1)
                size = local.stat().st_size
                digest = _sha256_file(local)
                publish_file(local, out / name)
                written += size
                tar_records.append(
                    {"name": name, "size": size, "sha256": digest, "samples": min(shard_size, n - t * shard_size)}
                )
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for stale in old_tars:
        if stale.name not in names:
            stale.unlink(missing_ok=True)
    frame = pl.DataFrame(
        listing,
        schema={
            "sample_id": pl.Utf8,
            "tar": pl.Utf8,
            "key": pl.Utf8,
            "members": pl.List(pl.Utf8),
            "position": pl.Int64,
            "shard": pl.Int64,
            "row": pl.Int64,
        },
    )
    buf = io.BytesIO()
    frame.write_parquet(buf)
    write_bytes_atomic(out / LISTING_FILE, buf.getvalue())
    pattern = f"{prefix}-{{{0:0{digits}d}..{count - 1:0{digits}d}}}.tar" if count > 1 else (names[0] if names else "")
    skipped = (every.num_samples - n) if every is not None else 0
    meta = {
        "format": "webdataset",
        "dataset": str(root),
        "dedup": dedup,
        "modalities": list(modalities or []),
        "split": split,
        "embeddings": embeddings,
        "samples": n,
        "skipped_duplicates": skipped,
        "shard_size": shard_size,
        "pattern": pattern,
        "tars": tar_records,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    write_bytes_atomic(out / EXPORT_FILE, json.dumps(meta, indent=2, default=str).encode() + b"\n")
    return ExportReport(out, n, names, written, time.perf_counter() - started, skipped, meta)


__all__ = ["EXPORT_FILE", "FORMATS", "LISTING_FILE", "ExportReport", "export_webdataset"]
