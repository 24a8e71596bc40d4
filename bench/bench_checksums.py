"""Benchmark: what per-chunk Fletcher-32 checksums cost, write and read, against the same shard layout
without them, in one run (goal: at least 0.95x on both).

Writes a shard of realistic compact samples (uint8 RGB 3x224x224 + float16 disparity + bool mask,
as the rgbd layout stores them) with HDF5 one-sample chunks, with and without ``fletcher32``,
alternating rounds (this machine's speed wanders), then reads every sample back one by one as the
loader does. Files go through the OS page cache, so the numbers isolate HDF5 + checksum CPU cost.

Usage: python bench/bench_checksums.py [-n 512] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def make_samples(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "image/pixels": rng.integers(0, 256, size=(n, 3, 224, 224), dtype=np.uint8),
        "depth/disparity": rng.random((n, 1, 224, 224), dtype=np.float32).astype(np.float16),
        "depth/valid": rng.random((n, 1, 224, 224)) > 0.1,
    }


def write(path: Path, samples: dict[str, np.ndarray], checksums: bool) -> float:
    n = next(iter(samples.values())).shape[0]
    t = time.perf_counter()
    with h5py.File(path, "w", libver="v110", track_order=False) as h5:
        dsets = {
            k: h5.create_dataset(
                k, shape=v.shape, dtype=v.dtype, chunks=(1, *v.shape[1:]), fletcher32=checksums, track_times=False
            )
            for k, v in samples.items()
        }
        for row in range(n):  # one sample at a time, as the build writes them
            for k, v in samples.items():
                dsets[k][row] = v[row]
    return time.perf_counter() - t


def read(path: Path) -> float:
    t = time.perf_counter()
    with h5py.File(path, "r") as h5:
        keys = list(h5.keys())
        dsets = [h5[g][name] for g in keys for name in h5[g].keys()]
        n = dsets[0].shape[0]
        for row in range(n):  # one sample at a time, as the loader reads them
            for d in dsets:
                d[row]
    return time.perf_counter() - t


def pipeline(n: int, rounds: int) -> None:
    """The same cost where users meet it: a build (decode + preprocess + write) and model-ready reads."""
    import storage.shard as shard_module
    from pipelines.build import build_dataset
    from pipelines.config import BuildConfig
    from pipelines.executors import LocalExecutor
    from pipelines.sources import create_source
    from pipelines.synth import synthesize
    from storage.loader import ShardDataset
    from storage.reader import DatasetReader

    checksummed = shard_module._create_chunked

    def unchecked(h5, key, shape, dtype):
        return h5.create_dataset(key, shape=shape, dtype=dtype, chunks=(1, *shape[1:]), track_times=False)

    build_s = {False: [], True: []}
    read_s = {False: [], True: []}
    loader_s = {False: [], True: []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        synthesize(tmp / "src", "llvip", n, seed=0)
        for r in range(rounds):
            for checksums in (False, True) if r % 2 == 0 else (True, False):
                shard_module._create_chunked = checksummed if checksums else unchecked
                out = tmp / f"ds-{r}-{int(checksums)}"
                t = time.perf_counter()
                build_dataset(
                    [create_source("llvip", tmp / "src")],
                    out,
                    BuildConfig(shard_size=n),
                    executor=LocalExecutor(),
                    progress=False,
                )
                build_s[checksums].append(time.perf_counter() - t)
                with DatasetReader(out) as reader:
                    rows = reader.index.height
                    t = time.perf_counter()
                    for row in range(rows):
                        reader.read(0, row)
                    read_s[checksums].append(time.perf_counter() - t)
                # What training sees: the loader with its default shuffle, in-process.
                dataset = ShardDataset(out, shuffle=True, seed=r)
                t = time.perf_counter()
                count = sum(1 for _ in dataset)
                loader_s[checksums].append(time.perf_counter() - t)
                assert count == n
        shard_module._create_chunked = checksummed
    for name, table in (("build", build_s), ("model-ready read", read_s), ("ShardDataset", loader_s)):
        plain, summed = statistics.median(table[False]), statistics.median(table[True])
        print(
            f"  {name:16s}: without {n / plain:7.1f} samples/s, with Fletcher-32 {n / summed:7.1f} samples/s, "
            f"ratio {plain / summed:.2f}x"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    samples = make_samples(args.n)
    mb = sum(v.nbytes for v in samples.values()) / 1e6
    times = {("write", c): [] for c in (False, True)} | {("read", c): [] for c in (False, True)}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for checksums in (False, True) if r % 2 == 0 else (True, False):
                path = Path(tmp) / f"shard-{int(checksums)}.h5"
                times[("write", checksums)].append(write(path, samples, checksums))
                times[("read", checksums)].append(read(path))
    print(f"{args.n} rgbd samples ({mb:.0f} MB), one chunk per sample, {args.rounds} alternating rounds (median)")
    for op in ("write", "read"):
        plain, summed = statistics.median(times[(op, False)]), statistics.median(times[(op, True)])
        print(
            f"  {op:5s}: without checksums {mb / plain:7.1f} MB/s, with Fletcher-32 {mb / summed:7.1f} MB/s, "
            f"ratio {plain / summed:.2f}x (goal >= 0.95)"
        )
    print(f"in the pipeline: {args.n // 8} LLVIP samples, one shard, {args.rounds} alternating rounds (median)")
    pipeline(args.n // 8, args.rounds)


if __name__ == "__main__":
    main()
