"""Benchmark: what the modality registry costs on the build's hot path.

``pipelines.samples.process_sample`` finds a row's modalities, their configs and their functions in
the registry for every sample. The baseline is the same work written out by hand, as the build did
before the registry: read, decode and preprocess the image, then the thermal image, with the
functions called directly. Both run on the same LLVIP rows in ABBA-ordered rounds; the ratio is
the baseline's median round time / the registry's (1.0: no cost).

Usage: python bench/bench_registry_dispatch.py [-n 32] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path


def hand_written(rows: list[dict], cfg) -> int:
    """The pre-registry path (pipelines/samples.py before the registry), written out: the image with
    its quality figure, then thermal cropped with its box, its float16 copy and dynamic range."""
    import numpy as np

    from pipelines.sample_record import ProcessedSample, _stage
    from pipelines.samples import missing_partners, read_input
    from preprocess.crops import center_crop_box, check_same_aspect
    from preprocess.image import crop_rgb, decode_image_pil
    from preprocess.thermal import crop_thermal, decode_thermal

    stored = 0
    for row in rows:
        out = ProcessedSample()
        data, rel = read_input(row, "uri_image")
        rgb = _stage("decode", rel, decode_image_pil, data)
        box = center_crop_box(rgb.height, rgb.width, cfg.image.size)
        pixels = _stage("preprocess", rel, crop_rgb, rgb, box, cfg.image)
        out.add(
            "image",
            {"pixels": pixels},
            crop_y0=box.y0,
            crop_x0=box.x0,
            crop_y1=box.y1,
            crop_x1=box.x1,
            q_image_mean=float(pixels.mean() / 255.0),
        )
        data, rel = read_input(row, "uri_thermal")
        t01 = _stage("decode", rel, decode_thermal, data, cfg.thermal)
        _stage("preprocess", rel, check_same_aspect, "thermal", t01.shape[:2], (rgb.height, rgb.width))
        crop = _stage("preprocess", rel, crop_thermal, t01, box, cfg.thermal)
        lo, hi = np.percentile(crop, [1, 99])
        out.add("thermal", {"intensity": crop.astype(np.float16)}, q_thermal_dynamic_range=float(hi - lo))
        missing_partners(row.get("layout"), out.modalities)
        stored += int(bool(out.modalities))
    return stored


def through_registry(rows: list[dict], cfg) -> int:
    from pipelines.samples import process_sample

    return sum(int(bool(process_sample(row, cfg).modalities)) for row in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=32, help="LLVIP samples")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    from pipelines.config import BuildConfig
    from pipelines.manifest import build_manifest
    from pipelines.sources import create_source
    from pipelines.synth import synthesize

    with tempfile.TemporaryDirectory() as tmp:
        synthesize(Path(tmp) / "llvip", "llvip", args.n, seed=0)
        rows = build_manifest([create_source("llvip", Path(tmp) / "llvip")]).frame.to_dicts()
        cfg = BuildConfig()
        assert hand_written(rows, cfg) == through_registry(rows, cfg) == len(rows)  # warm-up, same work
        # ABBA order (each path first in every other round) and the median round: neither path gains
        # from running second (warm caches) or loses to a burst of load on a shared machine.
        times: dict[str, list[float]] = {"hand-written": [], "registry": []}
        paths = [("hand-written", hand_written), ("registry", through_registry)]
        for r in range(args.rounds):
            for name, fn in paths if r % 2 == 0 else paths[::-1]:
                start = time.perf_counter()
                fn(rows, cfg)
                times[name].append(time.perf_counter() - start)
        median = {k: statistics.median(v) for k, v in times.items()}
        print(f"{len(rows)} LLVIP samples, {args.rounds} rounds (image + thermal: read, decode, preprocess)")
        for name, seconds in median.items():
            print(f"  {name:13s} {seconds / len(rows) * 1000:7.3f} ms/sample (median round)")
        print(f"  registry speed vs hand-written: {median['hand-written'] / median['registry']:.3f}x")


if __name__ == "__main__":
    main()
