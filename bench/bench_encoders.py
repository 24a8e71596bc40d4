"""Benchmark: encoder throughput through the `Encoder` interface.

1. tiny ImageBind vision: images/s with batch_size 1 against batch_size 32 on the same inputs in the
   same run (the ratio shows what batching buys; the numbers are equal to 1e-5).
2. GPU check: where CUDA exists, a ViT-B-32-sized OpenCLIP image tower (random init: no weights can
   be downloaded) in bf16 autocast, images/s against a bare `model.encode_image` loop on the same
   batches. On a machine without CUDA it says it skipped.

Usage: python bench/bench_encoders.py [-n 128] [--gpu-n 2048] [--skip-gpu]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from encoders import create_encoder


def _timed(fn, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


def bench_tiny_imagebind(n: int) -> None:
    enc = create_encoder("imagebind:tiny", modality="vision", device="cpu")
    x = np.random.default_rng(0).standard_normal((n, 3, 224, 224)).astype(np.float32)
    enc.batch_size = 32
    enc.encode(x[:32])  # warm-up
    out32 = enc.encode(x)
    t32 = _timed(lambda: enc.encode(x))
    enc.batch_size = 1
    out1 = enc.encode(x)
    t1 = _timed(lambda: enc.encode(x))
    print(f"tiny ImageBind vision, CPU fp32, {n} images, {torch.get_num_threads()} threads")
    print(f"  batch  1: {n / t1:8.1f} images/s")
    print(f"  batch 32: {n / t32:8.1f} images/s")
    print(f"  ratio batch32/batch1: {t1 / t32:.2f}x   max |diff| {np.abs(out1 - out32).max():.2e}")


def bench_gpu(n: int) -> None:
    if not torch.cuda.is_available():
        print("GPU check: skipped (no CUDA on this machine)")
        return
    enc = create_encoder("openclip:ViT-B-32", modality="image", device="cuda", precision="bf16", batch_size=256)
    x = np.random.default_rng(0).standard_normal((n, 3, 224, 224)).astype(np.float32)
    enc.encode(x[:256])  # warm-up (cuDNN autotune, allocator)
    t_enc = _timed(lambda: enc.encode(x))

    model = enc.model
    batches = [torch.from_numpy(x[i : i + 256]) for i in range(0, n, 256)]

    def bare() -> None:
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
            outs = [model.encode_image(b.to("cuda", non_blocking=True), normalize=True).float().cpu() for b in batches]
        torch.cat(outs).numpy()

    bare()
    t_bare = _timed(bare)
    print(f"GPU check: ViT-B-32 (random init) bf16 on {torch.cuda.get_device_name()}, {n} images, batch 256")
    print(f"  Encoder.encode:         {n / t_enc:9.1f} images/s")
    print(f"  bare encode_image loop: {n / t_bare:9.1f} images/s")
    print(f"  ratio encoder/bare: {t_bare / t_enc:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=128, help="images for the tiny ImageBind run")
    ap.add_argument("--gpu-n", type=int, default=2048, help="images for the GPU check")
    ap.add_argument("--skip-gpu", action="store_true")
    args = ap.parse_args()
    bench_tiny_imagebind(args.n)
    if not args.skip_gpu:
        bench_gpu(args.gpu_n)


if __name__ == "__main__":
    main()
