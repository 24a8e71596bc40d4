"""Benchmark: binding training throughput (`pipelines.binding.train.train_binding`).

Builds a small AudioSet-layout dataset (synth -> shards) with a random target store, then trains
the tiny ImageBind audio tower against it and reports optimisation steps/s and pairs/s for
`clips="random"` (one of the 3 audio clips per sample and step) and `clips="mean"` (all 3), on CPU
and, where CUDA exists, on the GPU. The first epoch also reads the inputs from HDF5 (cached after).

Baseline, same run: a bare loop of the same model, optimizer and loss on every input already in
memory as one tensor (no shards, no schedule, no checkpoints, no determinism switches), for the
same number of steps. The ratio is what `train_binding`'s bookkeeping costs.

Usage: python bench/bench_train.py [-n 192] [--epochs 5] [--batch 32] [--rounds 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch

import storage
from encoders.binding import BindingModel
from pipelines.binding.objective import param_groups, symmetric_infonce
from pipelines.binding.train import TrainConfig, train_binding
from pipelines.build import build_dataset
from pipelines.config import BuildConfig
from pipelines.sources import create_source
from pipelines.synth import synthesize
from preprocess.video import VideoConfig
from storage.embeddings import commit_embeddings


def make_dataset(root: Path, n: int) -> Path:
    synthesize(root / "src", "audioset", n, seed=0, duration=4.0, width=112, height=112, fps=10, sample_rate=16000)
    ds = root / "ds"
    build_dataset(
        [create_source("audioset", root / "src")],
        ds,
        BuildConfig(video=VideoConfig(size=112, num_crops=1), shard_size=64),
        progress=False,
    )
    rng = np.random.default_rng(0)
    index = storage.scan_index(ds).select("sample_id", "shard").collect()
    for shard in sorted(set(index["shard"].to_list())):
        ids = index.filter(pl.col("shard") == shard)["sample_id"].to_list()
        commit_embeddings(
            ds, "bench-target", shard, ids, {"image": rng.standard_normal((len(ids), 32)).astype(np.float32)}
        )
    return ds


def bare_loop_seconds(ds: Path, cfg: TrainConfig, steps: int, device: str) -> float:
    """The same optimisation on in-memory tensors: the fastest this model and loss can go here."""
    from storage.reader import DatasetReader

    index = storage.scan_index(ds).select("sample_id", "shard", "row").sort("sample_id").collect()
    with DatasetReader(ds) as reader:
        x_all = torch.from_numpy(
            np.concatenate(
                [
                    reader.read_batch(int(shard), part["row"].to_list(), "audio")
                    for (shard,), part in index.group_by(["shard"], maintain_order=True)
                ]
            )
        )
    vectors = storage.scan_embeddings(ds, "bench-target").sort("sample_id").collect()["image"].to_numpy()
    y_all = torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32))
    model = BindingModel(cfg.imagebind_config(), "audio", y_all.shape[1], seed=0).to(device).train()
    opt = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas)
    gen = torch.Generator().manual_seed(0)
    n, batch = x_all.shape[0], min(cfg.batch_size, x_all.shape[0])
    t0 = time.perf_counter()
    for _ in range(steps):
        idx = torch.randperm(n, generator=gen)[:batch]
        x = x_all[idx]
        if cfg.clips == "random":
            x = x[torch.arange(batch), torch.randint(x.shape[1], (batch,), generator=gen)]
        loss = symmetric_infonce(model(x.to(device)), y_all[idx].to(device), 0.05)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=192)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        ds = make_dataset(Path(tmp), args.n)
        print(
            f"dataset of {args.n} clips built in {time.perf_counter() - t0:.1f} s; torch threads {torch.get_num_threads()}"
        )
        for device in devices:
            for clips in ("random", "mean"):
                cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch, clips=clips, device=device, progress=False)
                # This machine's speed drifts by 10-20 % over seconds: the three measurements are
                # interleaved round by round and summed. A one-epoch run of the same setup gives, by
                # difference, the steady state of epochs 2..E (inputs cached, one checkpoint per
                # epoch) without the run's fixed start-up costs.
                whole = first_s = bare_s = 0.0
                steps = first_steps = 0
                for r in range(args.rounds):
                    result = train_binding(ds, "audio", "bench-target", Path(tmp) / f"run-{device}-{clips}-{r}", cfg)
                    first = train_binding(
                        ds,
                        "audio",
                        "bench-target",
                        Path(tmp) / f"run1-{device}-{clips}-{r}",
                        dataclasses.replace(cfg, epochs=1),
                    )
                    bare_s += bare_loop_seconds(ds, cfg, result.steps, device)
                    whole += result.seconds
                    first_s += first.seconds
                    steps += result.steps
                    first_steps += first.steps
                rate, bare = steps / whole, steps / bare_s
                steady = (steps - first_steps) / (whole - first_s)
                print(
                    f"{device:4s} clips={clips:6s}: {rate:.2f} steps/s = {rate * min(args.batch, args.n):.0f} pairs/s "
                    f"(loss {result.epoch_losses[0]:.3f} -> {result.final_loss:.3f}) | bare loop {bare:.2f} steps/s | "
                    f"ratio {rate / bare:.2f} whole run, {steady / bare:.2f} steady state (epochs 2-{args.epochs})"
                )


if __name__ == "__main__":
    main()
