"""Benchmark: RGB-D build throughput and shard write bandwidth, each against a baseline in the same run.

1. rgbd build: ``build_shard`` (decode, aligned crops, compact HDF5 shard) vs a naive per-sample script
   (ImageBind-style float transforms with torchvision, one float32 .npy per sample).
2. shard write: ShardWriter (HDF5, one chunk per sample, fsync + atomic commit) vs writing the same
   bytes raw with numpy (one np.save per array into one directory, fsync'd).

Usage: python bench/bench_build.py [-n 48]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def naive_rgbd(rows: list[dict], out_dir: Path) -> None:
    import torch
    import torchvision.transforms as T
    from PIL import Image

    tf = T.Compose(
        [
            T.Resize(224, interpolation=T.InterpolationMode.BICUBIC),
            T.CenterCrop(224),
            T.ToTensor(),
            T.Normalize((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
        ]
    )
    for i, row in enumerate(rows):
        root = Path(row["root"])
        rgb = tf(Image.open(root / row["uri_image"]).convert("RGB"))
        raw = np.asarray(Image.open(root / row["uri_depth"])).astype(np.uint16)
        mm = ((raw >> 3) | (raw << 13)).astype(np.float32)
        depth = torch.from_numpy(mm / 1000.0)
        disp = torch.where(depth > 0, row["baseline_m"] * row["fx"] / depth.clamp(0.01, 50.0), torch.zeros(()))
        disp = T.CenterCrop(224)(T.Resize(224, interpolation=T.InterpolationMode.NEAREST)(disp[None]))
        np.save(out_dir / f"{i}_rgb.npy", rgb.numpy())
        np.save(out_dir / f"{i}_depth.npy", disp.numpy())


def bench_build(n: int) -> None:
    from pipelines.build import build_shard
    from pipelines.config import BuildConfig
    from pipelines.manifest import build_manifest
    from pipelines.plan import ShardSpec
    from pipelines.sources import create_source
    from pipelines.synth import synthesize

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        synthesize(tmp / "src", "sunrgbd", n, seed=0)
        rows = build_manifest([create_source("sunrgbd", tmp / "src")]).frame.to_dicts()
        spec = ShardSpec(0, tuple(rows))
        (tmp / "naive").mkdir()
        t0 = time.perf_counter()
        naive_rgbd(rows, tmp / "naive")
        naive_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        summary = build_shard(tmp / "ds", spec, BuildConfig(shard_size=n))
        ours_s = time.perf_counter() - t0
        assert summary.stored == n, summary
        print(
            f"rgbd build  n={n}: bindset {n / ours_s:7.1f} samples/s | naive per-sample {n / naive_s:7.1f} samples/s"
            f" | ratio {naive_s / ours_s:.2f}x"
        )
        naive_bytes = sum(p.stat().st_size for p in (tmp / "naive").iterdir())
        print(
            f"            bytes on disk: bindset {summary.bytes_written / 1e6:.1f} MB | naive {naive_bytes / 1e6:.1f} MB"
        )


def bench_write(n: int) -> None:
    from storage.shard import ShardWriter

    rng = np.random.default_rng(0)
    samples = [
        {
            "image/pixels": rng.integers(0, 255, (3, 224, 224), dtype=np.uint8),
            "depth/disparity": rng.random((1, 224, 224)).astype(np.float16),
            "depth/valid": rng.random((1, 224, 224)) > 0.1,
        }
        for _ in range(n)
    ]
    total = sum(a.nbytes for s in samples for a in s.values())
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        with ShardWriter(tmp / "ds", 0, n) as w:
            for i, s in enumerate(samples):
                w.write(s, {"sample_id": str(i), "modalities": ["image", "depth"]})
            w.commit()
        ours = time.perf_counter() - t0
        raw_dir = tmp / "raw"
        raw_dir.mkdir()
        t0 = time.perf_counter()
        for i, s in enumerate(samples):
            for k, a in s.items():
                path = raw_dir / f"{i}_{k.replace('/', '_')}.npy"
                with open(path, "wb") as fh:
                    np.save(fh, a)
        fd = os.open(raw_dir, os.O_RDONLY)
        for p in raw_dir.iterdir():
            with open(p, "rb") as fh:
                os.fsync(fh.fileno())
        os.close(fd)
        raw = time.perf_counter() - t0
    print(
        f"shard write n={n}: bindset {total / ours / 1e6:7.1f} MB/s | raw numpy {total / raw / 1e6:7.1f} MB/s"
        f" | ratio {raw / ours:.2f}x (>1: faster than raw)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=48)
    args = parser.parse_args()
    bench_build(args.n)
    bench_write(max(args.n, 200))
