"""Benchmark: binding training throughput (`pipelines.train.train_binding`).

Builds a small AudioSet-layout dataset (synth -> shards) with a random target store, then trains
the tiny ImageBind audio tower against it and reports optimisation steps/s and pairs/s for
`clips="random"` (one of the 3 audio clips per sample and step) and `clips="mean"` (all 3), on CPU
and, where CUDA exists, on the GPU. The first epoch also reads the inputs from HDF5 (cached after).

Usage: python bench/bench_train.py [-n 64] [--epochs 5] [--batch 32]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch

import storage
from pipelines.build import build_dataset
from pipelines.config import BuildConfig
from pipelines.sources import create_source
from pipelines.synth import synthesize
from pipelines.train import TrainConfig, train_binding
from preprocess.video import VideoConfig
from storage.embeddings import commit_embeddings


def make_dataset(root: Path, n: int) -> Path:
    synthesize(root / "src", "audioset", n, seed=0, duration=4.0, width=112, height=112, fps=10, sample_rate=16000)
    ds = root / "ds"
    build_dataset([create_source("audioset", root / "src")], ds,
                  BuildConfig(video=VideoConfig(size=112, num_crops=1), shard_size=64), progress=False)
    rng = np.random.default_rng(0)
    index = storage.scan_index(ds).select("sample_id", "shard").collect()
    for shard in sorted(set(index["shard"].to_list())):
        ids = index.filter(pl.col("shard") == shard)["sample_id"].to_list()
        commit_embeddings(ds, "bench-target", shard, ids, {"image": rng.standard_normal((len(ids), 32)).astype(np.float32)})
    return ds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--batch", type=int, default=32)
    args = ap.parse_args()
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        ds = make_dataset(Path(tmp), args.n)
        print(f"dataset of {args.n} clips built in {time.perf_counter() - t0:.1f} s; torch threads {torch.get_num_threads()}")
        for device in devices:
            for clips in ("random", "mean"):
                cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch, clips=clips, device=device, progress=False)
                out = Path(tmp) / f"run-{device}-{clips}"
                result = train_binding(ds, "audio", "bench-target", out, cfg)
                rate = result.steps / result.seconds
                print(f"{device:4s} clips={clips:6s}: {result.steps} steps in {result.seconds:.1f} s = {rate:.2f} steps/s, "
                      f"{rate * min(args.batch, args.n):.0f} pairs/s (loss {result.epoch_losses[0]:.3f} -> "
                      f"{result.final_loss:.3f})")


if __name__ == "__main__":
    main()
