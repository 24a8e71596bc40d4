"""Benchmark: `bindset inspect` (Polars lazy queries over the index) on a 1,000,000-row index vs the
same summary computed with pandas, in the same run.

Usage: python bench/bench_inspect.py [--rows 1000000] [--shards 100]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl


def make_index(root: Path, rows: int, shards: int) -> None:
    from storage import format as fmt
    from storage.catalog import new_catalog, write_catalog
    from storage.schema import index_frame

    rng = np.random.default_rng(0)
    per = rows // shards
    (root / fmt.INDEX_DIR).mkdir(parents=True)
    catalog = new_catalog({}, [], rows, "", shards)
    sources = np.array(["sun", "llvip", "audioset", "ego4d"])
    for s in range(shards):
        src = sources[rng.integers(0, 4, per)]
        frame = pl.concat(
            [
                index_frame([]),
                pl.DataFrame(
                    {
                        "sample_id": [f"{s:05d}-{i}" for i in range(per)],
                        "shard": np.full(per, s, np.int32),
                        "row": np.arange(per, dtype=np.int32),
                        "source": src,
                        "layout": src,
                        "split": np.where(rng.random(per) < 0.8, "train", "test"),
                        "modalities": [
                            ["image", "depth"]
                            if x == "sun"
                            else ["image", "thermal"]
                            if x == "llvip"
                            else ["video", "audio"]
                            if x == "audioset"
                            else ["video", "imu"]
                            for x in src
                        ],
                        "q_depth_valid_fraction": np.where(src == "sun", rng.random(per), np.nan).astype(np.float32),
                        "q_audio_silence_fraction": np.where(src == "audioset", rng.random(per), np.nan).astype(
                            np.float32
                        ),
                        "q_image_mean": rng.random(per).astype(np.float32),
                    }
                ).with_columns(pl.col(pl.Float32).fill_nan(None)),
            ],
            how="diagonal_relaxed",
        )
        frame.select(index_frame([]).columns).cast(index_frame([]).schema).write_parquet(
            root / fmt.INDEX_DIR / f"{s:05d}.parquet"
        )
        catalog["shards"][f"{s:05d}"] = {"rows": per, "bytes": 0}
    write_catalog(root, catalog)


def pandas_summary(root: Path) -> dict:
    import pandas as pd

    df = pd.concat([pd.read_parquet(p) for p in sorted((root / "index").glob("*.parquet"))], ignore_index=True)
    out = {
        "samples": len(df),
        "by_source_split": df.groupby(["source", "split"]).size().to_dict(),
        "by_modality": df["modalities"].explode().value_counts().to_dict(),
    }
    for col in [c for c in df.columns if c.startswith("q_")]:
        s = df[col].dropna()
        if len(s):
            out[col] = (s.mean(), s.quantile(0.05), s.median(), s.quantile(0.95))
    return out


def main() -> None:
    from pipelines.summary import dataset_summary

    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--shards", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "ds"
        t0 = time.perf_counter()
        make_index(root, args.rows, args.shards)
        print(f"wrote a {args.rows}-row index in {args.shards} files in {time.perf_counter() - t0:.1f} s")
        t0 = time.perf_counter()
        ours = dataset_summary(root)
        polars_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        theirs = pandas_summary(root)
        pandas_s = time.perf_counter() - t0
        assert ours["samples"] == theirs["samples"] == args.rows
        print(
            f"inspect {args.rows} rows: bindset (Polars) {polars_s:.2f} s | pandas {pandas_s:.2f} s"
            f" | ratio {pandas_s / polars_s:.1f}x"
        )


if __name__ == "__main__":
    main()
