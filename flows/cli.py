"""The ``bindset`` command line. Subcommands only parse arguments and call pipeline functions."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

SPATIAL_LAYOUTS = ("sunrgbd", "llvip", "image-text")


def _add_synth(sub) -> None:
    p = sub.add_parser("synth", help="write a synthetic copy of a dataset layout with related modalities")
    p.add_argument("out", type=Path)
    p.add_argument("--layout", required=True, choices=("sunrgbd", "llvip", "audioset", "ego4d", "image-text"))
    p.add_argument("-n", type=int, default=8, help="number of samples (default 8)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_synth)


def cmd_synth(args) -> int:
    from pipelines.synth import synthesize

    result = synthesize(args.out, args.layout, args.n, seed=args.seed)
    print(f"wrote {result.n} {args.layout} samples ({len(result.files)} files) to {Path(args.out).resolve()}")
    return 0


def _add_build(sub) -> None:
    from pipelines.sources import LAYOUTS

    p = sub.add_parser("build", help="build shards from a source folder (manifest, plan, shards, commit)")
    p.add_argument("source", type=Path, help="dataset root (for --layout generic: the CSV/Parquet table)")
    p.add_argument("--layout", required=True, choices=LAYOUTS)
    p.add_argument("--out", required=True, type=Path, help="dataset directory to write (resumed if it exists)")
    p.add_argument("--name", help="source name recorded per sample (default LAYOUT:FOLDER)")
    p.add_argument("--split", help="split for layouts that do not record one")
    p.add_argument("--shard-size", type=int, default=256)
    p.add_argument("--config", type=Path, help="TOML/JSON file of preprocessing overrides")
    p.add_argument("--overwrite", action="store_true", help="rebuild a dataset whose config or sources changed")
    p.add_argument("--executor", choices=("ray", "local"), default="ray",
                   help="ray (default: a local Ray, or the cluster at --ray-address/RAY_ADDRESS) or local (in-process)")
    p.add_argument("--ray-address", help="address of an existing Ray cluster (default: RAY_ADDRESS, else local)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_build)


def _load_overrides(path: Path | None) -> dict:
    if path is None:
        return {}
    text = path.read_text()
    if path.suffix == ".json":
        return json.loads(text)
    import tomllib

    return tomllib.loads(text)


def cmd_build(args) -> int:
    from pipelines.build import build_dataset
    from pipelines.config import BuildConfig
    from pipelines.executors import create_executor
    from pipelines.sources import create_source

    options = {k: v for k, v in (("name", args.name), ("split", args.split)) if v}
    source = create_source(args.layout, args.source, **options)
    config = BuildConfig.from_dict({**_load_overrides(args.config), "shard_size": args.shard_size})
    executor = create_executor(args.executor, ray_address=args.ray_address)
    report = build_dataset([source], args.out, config, executor=executor, overwrite=args.overwrite,
                           progress=not args.no_progress)
    print("\n".join(report.lines()))
    return 0


def _add_preprocess(sub) -> None:
    p = sub.add_parser("preprocess", help="write the model-ready float32 tensor of one file (.npy)")
    p.add_argument("file", type=Path)
    p.add_argument("--modality", required=True, choices=("image", "depth", "thermal", "audio", "video", "imu"))
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--depth-encoding", default="sunrgbd", choices=("sunrgbd", "millimetres", "metres"))
    p.add_argument("--sensor", default="kv1", help="depth sensor, for default fx and baseline (kv1, kv2, realsense, xtion)")
    p.add_argument("--fx", type=float, help="focal length in pixels (default: the sensor's)")
    p.add_argument("--intrinsics", type=Path, help="SUN RGB-D intrinsics.txt to read fx from")
    p.add_argument("--baseline", type=float, help="stereo baseline in metres (default: the sensor's)")
    p.add_argument("--rgb-size", help="HxW of the RGB partner, so depth/thermal use its crop box")
    p.add_argument("--anchor", type=float, help="IMU: window centre in seconds (default: the middle)")
    p.add_argument("--preset", default="imagebind", choices=("imagebind", "imu2clip"), help="IMU preset")
    p.set_defaults(func=cmd_preprocess)


def cmd_preprocess(args) -> int:
    import numpy as np

    from pipelines.single import model_input_for_file

    tensor = model_input_for_file(
        args.file,
        args.modality,
        depth_encoding=args.depth_encoding,
        sensor=args.sensor,
        fx=args.fx,
        intrinsics=args.intrinsics,
        baseline=args.baseline,
        rgb_size=tuple(int(v) for v in args.rgb_size.lower().split("x")) if args.rgb_size else None,
        anchor_s=args.anchor,
        imu_preset=args.preset,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.save(args.out, tensor)
    print(f"{args.file} -> {args.out} {list(tensor.shape)} {tensor.dtype}")
    return 0


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="synthesize a few samples of each spatial layout, build and summarize them")
    p.add_argument("--out", type=Path, default=Path("bindset-demo"))
    p.add_argument("-n", type=int, default=6, help="samples per layout")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo)


def cmd_demo(args) -> int:
    from pipelines.demo import run_demo

    print(run_demo(args.out, n=args.n, seed=args.seed))
    return 0


def _add_inspect(sub) -> None:
    p = sub.add_parser("inspect", help="summarize a dataset with Polars")
    p.add_argument("dataset", type=Path)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_inspect)


def cmd_inspect(args) -> int:
    from pipelines.summary import dataset_summary, format_summary

    summary = dataset_summary(args.dataset)
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bindset", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_synth, _add_build, _add_preprocess, _add_demo, _add_inspect):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        # User errors: one clear line, no traceback. Bugs (other exceptions) keep their traceback.
        print(f"bindset {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
