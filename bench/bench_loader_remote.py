"""Benchmark: ``ShardDataset`` streaming from ``s3://`` (through the local shard cache) vs the same
dataset on local disk.

One run builds a synthetic SUN RGB-D dataset (RGB + depth), starts an S3 server on loopback
(``moto_server``, dummy credentials, nothing leaves the machine), uploads the dataset file for file,
and times full epochs of a 2-worker ``DataLoader`` (shuffled, model-ready tensors) over three paths:

- ``local``: the dataset directory, shards opened in place;
- ``s3 warm``: the URL with a cache directory that already holds every shard (a later epoch);
- ``s3 cold``: the URL with an empty cache directory each epoch (the first epoch on a new machine:
  every shard is fetched, verified and cached while the workers read, prefetching ahead).

Rounds interleave the three (rotating their order, so load from other processes hits all alike);
each path keeps its median epoch, after one warm-up round. Targets: warm >= 0.9x local, cold >= 0.5x.

Requests: the cache counts the GETs it issues. A pass reading every row of every shard through
``ShardReader`` on a cold cache, for two shard sizes (the same samples), shows one GET per shard,
independent of the samples a shard holds. (Opening a dataset also lists and reads ``index/`` and
``dataset.json`` once, in the main process.)

Usage: python bench/bench_loader_remote.py [-n 128] [--shard-size 32] [--batch-size 16] [--rounds 3]
       [--workers 2] [--dir DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _build(work: Path, n: int, shard_size: int, name: str) -> Path:
    from pipelines.build import build_dataset
    from pipelines.config import BuildConfig
    from pipelines.executors import LocalExecutor
    from pipelines.sources import create_source
    from pipelines.synth import synthesize

    ds = work / name
    if not (ds / "dataset.json").exists():
        t0 = time.perf_counter()
        if not (work / "src").exists():
            synthesize(work / "src", "sunrgbd", n, seed=0)
        report = build_dataset(
            [create_source("sunrgbd", work / "src")],
            ds,
            BuildConfig(shard_size=shard_size),
            executor=LocalExecutor(),
            progress=False,
        )
        print(
            f"built {name}: {report.stored} samples in {len(report.summaries)} shards "
            f"({time.perf_counter() - t0:.1f} s)"
        )
    return ds


def _start_s3() -> subprocess.Popen:
    from storage import local_s3

    proc, endpoint = local_s3.start()
    local_s3.use(endpoint)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that `finally` stops the server
    return proc


def _upload(local: Path, bucket: str, prefix: str) -> str:
    from storage.location import as_location

    root = as_location(f"s3://{bucket}/{prefix}")
    for f in sorted(local.rglob("*")):
        if f.is_file() and not f.relative_to(local).parts[0].startswith("_"):
            (root / f.relative_to(local).as_posix()).upload(f)
    return root.url


def _epoch(ds, batch_size: int, workers: int) -> tuple[float, int]:
    from torch.utils.data import DataLoader

    from storage.loader import collate

    t0 = time.perf_counter()
    n = 0
    for batch in DataLoader(ds, batch_size=batch_size, num_workers=workers, collate_fn=collate):
        n += len(batch["sample_id"])
    return time.perf_counter() - t0, n


def _count_requests(url: str, shards: int, cache_dir: Path) -> tuple[int, int, int]:
    """(GETs, shards, rows) reading every row of every shard on a cold cache."""
    from storage.cache import ShardCache
    from storage.shard import ShardReader

    shutil.rmtree(cache_dir, ignore_errors=True)
    cache = ShardCache(cache_dir)
    rows = 0
    for shard in range(shards):
        with ShardReader(url, shard, cache=cache) as reader:
            for row in range(len(reader)):
                reader.read_stored(row)
                rows += 1
    return cache.stats["requests"], shards, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=128, help="samples in the synthetic dataset")
    parser.add_argument("--shard-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (after one warm-up round)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--dir", type=Path, default=None, help="work folder (datasets reused between runs)")
    args = parser.parse_args()

    import torch

    from storage.catalog import load_catalog
    from storage.loader import ShardDataset

    with tempfile.TemporaryDirectory(prefix="bench-loader-remote-") as tmp:
        work = args.dir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        local = _build(work, args.n, args.shard_size, "ds")
        small_size = max(1, args.shard_size // 4)
        small = _build(work, args.n, small_size, f"ds-{small_size}")
        server = _start_s3()
        try:
            import boto3

            bucket = "bench-loader"
            boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"]).create_bucket(Bucket=bucket)
            t0 = time.perf_counter()
            url = _upload(local, bucket, "ds")
            small_url = _upload(small, bucket, f"ds-{small_size}")
            print(f"uploaded to {url} and {small_url} ({time.perf_counter() - t0:.1f} s)")

            cache_root = work / "caches"
            shutil.rmtree(cache_root, ignore_errors=True)
            common = dict(modalities=["image", "depth"], shuffle=True, seed=0)
            paths = {
                "local": lambda: ShardDataset(local, **common),
                "s3 warm": lambda: ShardDataset(url, cache_dir=cache_root / "warm", **common),
                "s3 cold": lambda: ShardDataset(url, cache_dir=cache_root / "cold", **common),
            }
            datasets = {name: make() for name, make in paths.items()}
            n = datasets["local"].num_samples
            times: dict[str, list[float]] = {name: [] for name in paths}
            names = list(paths)
            for r in range(args.rounds + 1):
                order = names[r % len(names) :] + names[: r % len(names)]
                for name in order:
                    if name == "s3 cold":
                        shutil.rmtree(cache_root / "cold", ignore_errors=True)  # nothing cached
                    ds = datasets[name]
                    ds.set_epoch(r)
                    seconds, got = _epoch(ds, args.batch_size, args.workers)
                    assert got == n, f"{name}: {got} samples in an epoch, expected {n}"
                    if r > 0:  # round 0 warms page cache, workers, and the warm cache directory
                        times[name].append(seconds)

            shard_mb = sum(p.stat().st_size for p in (local / "shards").glob("*.h5")) / 1e6
            shards = len(load_catalog(local)["shards"])
            print(
                f"{n} samples (image + depth) in {shards} shards ({shard_mb:.1f} MB), batch {args.batch_size}, "
                f"{args.workers} workers, {args.rounds} timed rounds; torch threads {torch.get_num_threads()}"
            )
            rates = {name: n / float(np.median(t)) for name, t in times.items()}
            for name, rate in rates.items():
                spread = ", ".join(f"{n / s:.0f}" for s in times[name])
                print(f"  {name:8s} {rate:8.1f} samples/s   (epochs: {spread})")
            print(f"  ratio s3 warm / local: {rates['s3 warm'] / rates['local']:.2f}   (target >= 0.9)")
            print(f"  ratio s3 cold / local: {rates['s3 cold'] / rates['local']:.2f}   (target >= 0.5)")

            print("object-store GETs for shard data, reading every row of every shard on a cold cache:")
            for name, u, root in ((f"{args.shard_size}/shard", url, local), (f"{small_size}/shard", small_url, small)):
                gets, count, rows = _count_requests(u, len(load_catalog(root)["shards"]), cache_root / "count")
                print(
                    f"  {name:9s} {gets:3d} GETs for {count:3d} shards and {rows} samples: "
                    f"{gets / count:.2f} per shard, {gets / rows:.3f} per sample"
                )
        finally:
            server.terminate()
            server.wait(timeout=10)


if __name__ == "__main__":
    main()
