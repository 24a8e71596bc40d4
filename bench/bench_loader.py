"""Benchmark: ``storage.loader.ShardDataset`` vs reading the same model-ready tensors from raw .npy.

One run builds a synthetic SUN RGB-D dataset (RGB + depth), dumps every sample's model-ready
tensors (``image [3,224,224] float32``, ``depth [1,224,224] float32``, ``depth_valid`` bool) to
per-sample ``.npy`` files, checks both paths return equal tensors, then times full epochs of a
``DataLoader`` with 2 workers over each (shuffled, same batch size, same collate). Epochs alternate
between the two (so load from other processes hits both alike); each keeps its median epoch. The
first epoch of each is a warm-up (worker start, page cache).

The shard path reads compact uint8 pixels / float16 disparity from HDF5 and normalizes on the fly;
the .npy path reads float32 tensors 2.7x larger and only stacks them.

Usage: python bench/bench_loader.py [-n 128] [--shard-size 32] [--batch-size 16] [--epochs 3]
       [--workers 2] [--augment] [--dir DIR]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

KEYS = ("image", "depth", "depth_valid")


class NpyDataset(Dataset):
    """Map-style: one sample = one .npy file per tensor."""

    def __init__(self, folder: Path, sample_ids: list[str]):
        self.folder = folder
        self.sample_ids = sample_ids

    def __len__(self) -> int:
        return len(self.sample_ids)

    def __getitem__(self, i: int) -> dict:
        sid = self.sample_ids[i]
        out = {"sample_id": sid}
        for key in KEYS:
            out[key] = torch.from_numpy(np.load(self.folder / f"{sid}.{key}.npy"))
        return out


def _build(work: Path, n: int, shard_size: int) -> Path:
    from pipelines.build import build_dataset
    from pipelines.config import BuildConfig
    from pipelines.sources import create_source
    from pipelines.synth import synthesize

    ds = work / "ds"
    if not (ds / "dataset.json").exists():
        t0 = time.perf_counter()
        synthesize(work / "src", "sunrgbd", n, seed=0)
        report = build_dataset(
            [create_source("sunrgbd", work / "src")], ds, BuildConfig(shard_size=shard_size), progress=False
        )
        print(f"built {report.stored} samples in {len(report.summaries)} shards ({time.perf_counter() - t0:.1f} s)")
    return ds


def _dump_npy(ds: Path, folder: Path) -> list[str]:
    from storage.reader import DatasetReader

    folder.mkdir(parents=True, exist_ok=True)
    ids = []
    with DatasetReader(ds) as reader:
        for sid in reader.index["sample_id"].to_list():
            sample = reader[sid]
            for key in KEYS:
                np.save(folder / f"{sid}.{key}.npy", sample[key])
            ids.append(sid)
    return ids


def _epoch(loader: DataLoader) -> tuple[float, int]:
    t0 = time.perf_counter()
    n = 0
    for batch in loader:
        n += len(batch["sample_id"])
    return time.perf_counter() - t0, n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=128, help="samples in the synthetic dataset")
    parser.add_argument("--shard-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per path (after one warm-up)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--augment", action="store_true", help="time the loader with the default augmentations")
    parser.add_argument("--dir", type=Path, default=None, help="work folder (reused between runs); default: temp")
    args = parser.parse_args()

    from preprocess.augment import AugmentConfig
    from storage.loader import ShardDataset, collate

    with tempfile.TemporaryDirectory(prefix="bench-loader-") as tmp:
        work = args.dir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        ds_root = _build(work, args.n, args.shard_size)
        ids = _dump_npy(ds_root, work / "npy")
        shards = ShardDataset(
            ds_root,
            modalities=["image", "depth"],
            shuffle=True,
            seed=0,
            augment=AugmentConfig() if args.augment else None,
            train=args.augment,
        )
        npy = NpyDataset(work / "npy", ids)

        # Same tensors on both paths (without augmentation).
        check = ShardDataset(ds_root, modalities=["image", "depth"], shuffle=False)
        first = next(iter(check))
        ref = npy[ids.index(first["sample_id"])]
        assert all(torch.equal(first[k], ref[k]) for k in KEYS), "loader and .npy tensors differ"

        def shard_loader(epoch: int) -> DataLoader:
            shards.set_epoch(epoch)
            return DataLoader(shards, batch_size=args.batch_size, num_workers=args.workers, collate_fn=collate)

        def npy_loader(epoch: int) -> DataLoader:
            g = torch.Generator().manual_seed(epoch)
            return DataLoader(
                npy, batch_size=args.batch_size, num_workers=args.workers, shuffle=True, generator=g, collate_fn=collate
            )

        times: dict[str, list[float]] = {"shards (HDF5)": [], "raw .npy": []}
        for epoch in range(args.epochs + 1):
            for name, make in (("shards (HDF5)", shard_loader), ("raw .npy", npy_loader)):
                seconds, n = _epoch(make(epoch))
                assert n == len(ids), f"{name}: {n} samples in an epoch, expected {len(ids)}"
                if epoch > 0:
                    times[name].append(seconds)

        rates = {name: len(ids) / float(np.median(t)) for name, t in times.items()}
        shard_mb = sum(p.stat().st_size for p in (ds_root / "shards").glob("*.h5")) / 1e6
        npy_mb = sum(p.stat().st_size for p in (work / "npy").glob("*.npy")) / 1e6
        print(
            f"{len(ids)} samples (image + depth), batch {args.batch_size}, {args.workers} workers, "
            f"{args.epochs} timed epochs{', augmented' if args.augment else ''}; torch threads {torch.get_num_threads()}"
        )
        print(f"  on disk: shards {shard_mb:.1f} MB, .npy {npy_mb:.1f} MB")
        for name, rate in rates.items():
            print(f"  {name:14s} {rate:8.1f} samples/s")
        print(f"  ratio shards / .npy: {rates['shards (HDF5)'] / rates['raw .npy']:.2f}")


if __name__ == "__main__":
    main()
