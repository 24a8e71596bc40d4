"""Benchmark: images/s through `bindset embed` (shard reading, prefetch, store commit) against a bare
loop of open_clip's `model.encode_image` on the same batches already in memory, same run.
Goal: ratio >= 0.9 (pipeline overhead at most 10%).

Usage: python bench/bench_embed.py [-n 96] [--model ViT-B-32] [--batch 32]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    from encoders.openclip import load_openclip_model
    from pipelines.build import build_dataset
    from pipelines.config import BuildConfig
    from pipelines.embed import EncoderSpec, embed_dataset
    from pipelines.sources import create_source
    from pipelines.synth import synthesize
    from storage import open_dataset, scan_index

    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=96)
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        synthesize(tmp / "src", "image-text", args.n, seed=0)
        ds = tmp / "ds"
        build_dataset([create_source("image-text", tmp / "src")], ds, BuildConfig(shard_size=32), progress=False)
        ids = scan_index(ds).collect()["sample_id"].to_list()
        with open_dataset(ds) as reader:
            images = np.stack([reader[i]["image"] for i in ids])
        batches = [torch.from_numpy(images[s : s + args.batch]) for s in range(0, len(images), args.batch)]
        model, _ = load_openclip_model(args.model, None, torch.device("cpu"), seed=0)
        spec = EncoderSpec(f"openclip:{args.model}", None, ("image",), batch_size=args.batch)
        with torch.inference_mode():
            model.encode_image(batches[0][:2])  # warm up both paths' kernels
        from pipelines.embed import embed_shard, store_id
        from storage.shard import committed_shard_ids

        encoders = spec.create()  # loaded once, as each Ray actor does
        bare, ours, steady = [], [], []
        for _ in range(2):  # alternate to share the machine's noise fairly
            t0 = time.perf_counter()
            with torch.inference_mode():
                for b in batches:
                    model.encode_image(b, normalize=True)
            bare.append(time.perf_counter() - t0)
            shutil.rmtree(ds / "embeddings", ignore_errors=True)
            t0 = time.perf_counter()
            report = embed_dataset(ds, spec, executor="local", progress=False)
            ours.append(time.perf_counter() - t0)
            assert sum(s.rows for s in report.embedded) == args.n
            t0 = time.perf_counter()
            for shard in committed_shard_ids(ds):
                embed_shard(ds, shard, encoders, store_id(encoders))
            steady.append(time.perf_counter() - t0)
        b, o, st = min(bare), min(ours), min(steady)
        print(f"embed {args.n} images ({args.model}, batch {args.batch}, CPU): bare encode_image loop {args.n / b:.1f} img/s")
        print(f"  bindset embed, whole command (model load included): {args.n / o:.1f} img/s | ratio {b / o:.2f}")
        print(f"  bindset embed, per-shard steady state (model loaded once): {args.n / st:.1f} img/s | ratio {b / st:.2f}")


if __name__ == "__main__":
    main()
