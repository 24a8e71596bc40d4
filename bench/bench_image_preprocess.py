"""Benchmark: ``image_model_input`` vs a plain torchvision transforms pipeline on the same bytes.

Both decode JPEG bytes with Pillow, resize the short side to 224 (bicubic), centre crop 224 and
normalize with the CLIP statistics; the outputs are checked equal before timing. Images: the three
ImageBind sample JPEGs from ``../shared/samples/imagebind`` when present, else generated JPEGs of
similar sizes.

Usage: python bench/bench_image_preprocess.py [-n 30] [--rounds 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import io
import os
import time
from pathlib import Path

import numpy as np


def _inputs() -> list[bytes]:
    shared = Path(os.environ.get("BINDSET_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
    folder = shared / "samples" / "imagebind"
    if folder.is_dir():
        return [(folder / f"{n}_image.jpg").read_bytes() for n in ("dog", "car", "bird")]
    from PIL import Image

    rng = np.random.default_rng(0)
    out = []
    for w, h in ((640, 848), (640, 360), (640, 855)):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def _seconds(fn, inputs: list[bytes], n: int) -> float:
    t0 = time.perf_counter()
    for i in range(n):
        fn(inputs[i % len(inputs)])
    return time.perf_counter() - t0


def _rates(fns: dict, inputs: list[bytes], n: int, rounds: int) -> dict[str, float]:
    """Images/s per function: rounds alternate between the functions (so load from other
    processes hits both alike) and each keeps its median round."""
    for fn in fns.values():  # warm-up: imports, allocator
        for data in inputs:
            fn(data)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            times[name].append(_seconds(fn, inputs, n))
    return {name: n / float(np.median(t)) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=30, help="images per timed round")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds; the median is kept")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads for the baseline")
    args = parser.parse_args()

    import torch
    import torchvision.transforms as T
    from PIL import Image

    from preprocess.image import CLIP_MEAN, CLIP_STD, image_model_input

    torch.set_num_threads(args.threads)
    tf = T.Compose(
        [
            T.Resize(224, interpolation=T.InterpolationMode.BICUBIC),
            T.CenterCrop(224),
            T.ToTensor(),
            T.Normalize(CLIP_MEAN, CLIP_STD),
        ]
    )

    def baseline(data: bytes) -> np.ndarray:
        return tf(Image.open(io.BytesIO(data)).convert("RGB")).numpy()

    inputs = _inputs()
    for data in inputs:
        diff = np.abs(image_model_input(data) - baseline(data)).max()
        assert diff <= 1e-6, f"outputs differ by {diff}"

    rates = _rates({"ours": image_model_input, "baseline": baseline}, inputs, args.n, args.rounds)
    ours, base = rates["ours"], rates["baseline"]
    print(f"image_model_input       : {ours:8.1f} images/s")
    print(f"torchvision transforms  : {base:8.1f} images/s")
    print(
        f"ratio (ours / baseline) : {ours / base:8.2f}x   (outputs identical, {len(inputs)} distinct JPEGs, "
        f"median of {args.rounds} rounds x {args.n})"
    )


if __name__ == "__main__":
    main()
