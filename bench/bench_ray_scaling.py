"""Benchmark: build throughput on Ray with 1 and with 2 workers (sunrgbd and audioset layouts).

Each run starts a fresh local Ray limited to N CPUs, builds the same synthetic source into a new
dataset, and reports samples/s; the speedup is 2-worker over 1-worker throughput in the same run.

Usage: python bench/bench_ray_scaling.py [-n 64] [--shard-size 4]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def run(layout: str, src: Path, out: Path, cpus: int, shard_size: int) -> float:
    import ray

    from pipelines.build import build_dataset
    from pipelines.config import BuildConfig
    from pipelines.executors.ray import RayExecutor
    from pipelines.sources import create_source

    ray.init(address="local", num_cpus=cpus, include_dashboard=False, object_store_memory=100 * 1024**2,
             configure_logging=False, log_to_driver=False)
    try:
        # Warm the workers (imports of torch/PyAV) so both runs measure steady-state building.
        ray.get([ray.remote(lambda: __import__("pipelines.temporal")).remote() for _ in range(cpus)])
        t0 = time.perf_counter()
        report = build_dataset([create_source(layout, src)], out, BuildConfig(shard_size=shard_size),
                               executor=RayExecutor(spread=True), progress=False)
        seconds = time.perf_counter() - t0
    finally:
        ray.shutdown()
    return report.stored / seconds


def main() -> None:
    from pipelines.synth import synthesize

    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=64)
    parser.add_argument("--shard-size", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for layout, n in (("sunrgbd", args.n), ("audioset", max(8, args.n // 4))):
            src = tmp / f"src-{layout}"
            synthesize(src, layout, n, seed=0)
            one = run(layout, src, tmp / f"{layout}-1", 1, args.shard_size)
            two = run(layout, src, tmp / f"{layout}-2", 2, args.shard_size)
            print(f"{layout:9s} n={n}: 1 worker {one:6.1f} samples/s | 2 workers {two:6.1f} samples/s"
                  f" | speedup {two / one:.2f}x")


if __name__ == "__main__":
    main()
