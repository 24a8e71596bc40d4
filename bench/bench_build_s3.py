"""Benchmark: a build into object storage against the same build into a local directory, in one run.

Starts moto's S3 server on loopback (its request log is the request counter), uploads one synthetic
LLVIP tree to a bucket, then alternates builds (local sources -> local dataset, s3 sources -> s3
dataset; in-process executor, so both measure the same decode and write work) and prints samples/s of
each and the ratio (target >= 0.8). Then counts the object-store requests a build makes per shard,
at two shard sizes, to show they do not grow with samples per shard (source reads are one GET per
input file, whatever the shard size).

Usage: python bench/bench_build_s3.py [-n 64] [--rounds 3]
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def start_moto(log: Path) -> tuple[subprocess.Popen, str]:
    from storage import local_s3

    proc, endpoint = local_s3.start(log)
    local_s3.use(endpoint)
    return proc, endpoint


_REQUEST = re.compile(r'"(GET|PUT|POST|HEAD|DELETE) /([^/ ?]+)/([^ ?]*)(\?[^ ]*)? HTTP')


def count_requests(log: Path, bucket: str, since: int) -> tuple[Counter, int]:
    """(requests by (method, area), new log offset), where area is the dataset subfolder or 'src'."""
    text = log.read_text(errors="replace")
    counts: Counter = Counter()
    for m in _REQUEST.finditer(text[since:]):
        if m.group(2) != bucket:
            continue
        key = m.group(3)
        area = "src" if key.startswith("src/") else key.split("/")[1] if key.count("/") >= 1 else key
        counts[(m.group(1), area)] += 1
    return counts, len(text)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    import boto3

    from pipelines.build import build_dataset
    from pipelines.config import BuildConfig
    from pipelines.executors import LocalExecutor
    from pipelines.sources import create_source
    from pipelines.synth import synthesize
    from storage.local_s3 import upload_tree

    tmp = Path(tempfile.mkdtemp(prefix="bench-s3-"))
    log = tmp / "moto.log"
    proc, endpoint = start_moto(log)
    try:
        src = tmp / "src"
        synthesize(src, "llvip", args.n, seed=0)
        bucket = "bench-build"
        client = boto3.client("s3", endpoint_url=endpoint)
        client.create_bucket(Bucket=bucket)
        upload_tree(client, src, bucket, "src")
        shard = 16

        def local_build(i: int) -> float:
            out = tmp / f"local-{i}"
            t = time.perf_counter()
            build_dataset(
                [create_source("llvip", src, name="llvip")],
                out,
                BuildConfig(shard_size=shard),
                executor=LocalExecutor(),
                progress=False,
            )
            return time.perf_counter() - t

        def s3_build(i: int) -> float:
            t = time.perf_counter()
            build_dataset(
                [create_source("llvip", f"s3://{bucket}/src", name="llvip")],
                f"s3://{bucket}/ds-{i}",
                BuildConfig(shard_size=shard),
                executor=LocalExecutor(),
                progress=False,
            )
            return time.perf_counter() - t

        local_build(-1)  # warm imports and caches for both
        local_s, s3_s = [], []
        for i in range(args.rounds):  # alternate: this machine's speed wanders over seconds
            local_s.append(local_build(i))
            s3_s.append(s3_build(i))
        lr, sr = args.n / statistics.median(local_s), args.n / statistics.median(s3_s)
        print(f"build {args.n} LLVIP samples, shards of {shard}, in-process, {args.rounds} alternating rounds")
        print(f"  local -> local : {lr:6.1f} samples/s  (runs {', '.join(f'{t:.2f}' for t in local_s)} s)")
        print(f"  s3    -> s3    : {sr:6.1f} samples/s  (runs {', '.join(f'{t:.2f}' for t in s3_s)} s)")
        print(f"  ratio s3/local : {sr / lr:.2f}x (median of rounds; target >= 0.8)")

        print("object-store requests per build (moto's request log):")
        offset = len(log.read_text(errors="replace"))
        for size in (4, 16):
            out = f"s3://{bucket}/req-{size}"
            build_dataset(
                [create_source("llvip", f"s3://{bucket}/src", name="llvip")],
                out,
                BuildConfig(shard_size=size),
                executor=LocalExecutor(),
                progress=False,
            )
            counts, offset = count_requests(log, bucket, offset)
            shards = -(-args.n // size)
            per_shard = {
                area: sum(v for (m, a), v in counts.items() if a == area) / shards
                for area in ("shards", "index", "rejects")
            }
            src_gets = counts[("GET", "src")]
            total = sum(counts.values())
            print(
                f"  shard size {size:3d}: {shards:3d} shards, {total} requests; per shard: "
                + ", ".join(f"{k} {v:.1f}" for k, v in per_shard.items())
                + f"; source GETs per sample {src_gets / args.n:.2f}"
            )
    finally:
        proc.terminate()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
