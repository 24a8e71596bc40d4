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
    p.add_argument("--no-prefect", action="store_true", help="plain path without Prefect, for debugging")
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
    source = {"layout": args.layout, "root": str(Path(args.source).resolve())}
    source.update({k: v for k, v in (("name", args.name), ("split", args.split)) if v})
    run_config = {
        "dataset": {"out": str(Path(args.out).resolve()), "shard_size": args.shard_size, "overwrite": args.overwrite},
        "sources": [source],
        "preprocess": _load_overrides(args.config),
        "executor": {"kind": args.executor, "address": args.ray_address},
    }
    if args.no_prefect:
        from flows.config import parse_run_config
        from pipelines.build import build_dataset
        from pipelines.executors import create_executor

        run = parse_run_config(run_config, "bindset build")
        report = build_dataset(run.create_sources(), run.dataset.out, run.build_config(),
                               executor=create_executor(args.executor, ray_address=args.ray_address),
                               overwrite=args.overwrite, progress=not args.no_progress)
        print("\n".join(report.lines()))
        return 0
    from flows.build_flow import build_dataset_flow

    _print_result(build_dataset_flow(config=run_config))
    return 0


def _print_result(result: dict) -> None:
    rate = result["stored"] / result["seconds"] if result["seconds"] else 0.0
    print(f"dataset: {result['dataset']}")
    print(f"samples stored: {result['stored']}  rejected: {result['rejected']}  "
          f"shards built: {result['shards_built']}  ({result['seconds']:.1f} s, {rate:.1f} samples/s)")
    for e in result.get("embedded", []):
        print(f"encoder {e['encoder_id']}: {e['shards_embedded']} shards embedded ({e['samples']} samples), "
              f"{e['already_done']} already in the store")


def _add_run(sub) -> None:
    p = sub.add_parser("run", help="run the dataset build described by a TOML file once (a Prefect flow run)")
    p.add_argument("config", type=Path)
    p.add_argument("--no-prefect", action="store_true", help="plain path without Prefect, for debugging")
    p.set_defaults(func=cmd_run)


def cmd_run(args) -> int:
    from flows.build_flow import run_build

    _print_result(run_build(args.config, use_prefect=not args.no_prefect))
    return 0


def _add_schedule(sub) -> None:
    p = sub.add_parser("schedule", help="serve the build of a TOML config (or a backfill) on a cron schedule")
    p.add_argument("config", type=Path, help="build config TOML, or the dataset directory with --backfill")
    p.add_argument("--cron", help='cron expression, e.g. "0 3 * * *" (default: [schedule].cron of the config)')
    p.add_argument("--name", help="deployment name (default: the config file's stem)")
    p.add_argument("--timezone", default="UTC")
    p.add_argument("--backfill", metavar="ENCODER", help="schedule embed-backfill of this encoder instead")
    p.add_argument("--checkpoint", help="encoder checkpoint for --backfill")
    p.add_argument("--random-weights", action="store_true", help="--backfill without a checkpoint (smoke tests)")
    p.set_defaults(func=cmd_schedule)


def cmd_schedule(args) -> int:
    from flows.schedule import serve_backfill, serve_build

    if args.backfill:
        if not args.cron:
            raise ValueError("--backfill needs --cron")
        require_weights(args.backfill, args.checkpoint, args.random_weights)
        serve_backfill(str(args.config), args.backfill, args.cron, args.checkpoint, args.name, args.timezone)
        return 0
    cron = args.cron
    if cron is None:
        from flows.config import load_run_config

        cron = load_run_config(args.config).schedule.cron
        if cron is None:
            raise ValueError(f"{args.config} has no [schedule].cron; pass --cron")
    serve_build(args.config, cron, args.name, args.timezone)
    return 0


def _add_flows(sub) -> None:
    p = sub.add_parser("flows", help="list Prefect deployments and recent flow runs")
    p.add_argument("--limit", type=int, default=10)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_flows)


def cmd_flows(args) -> int:
    from flows.schedule import flows_overview, format_overview

    overview = flows_overview(args.limit)
    print(json.dumps(overview, indent=2) if args.json else format_overview(overview))
    return 0


def _add_validate(sub) -> None:
    p = sub.add_parser("validate", help="check every shard's sha256 and row count against dataset.json")
    p.add_argument("dataset", type=Path)
    p.add_argument("--no-prefect", action="store_true")
    p.set_defaults(func=cmd_validate)


def cmd_validate(args) -> int:
    if args.no_prefect:
        from pipelines.validate import validate_dataset

        report = validate_dataset(args.dataset)
        print("\n".join(report.lines()))
        return 0 if report.ok else 1
    from flows.build_flow import validate_dataset_flow

    state = validate_dataset_flow(str(args.dataset.resolve()), return_state=True)
    print(state.result(raise_on_failure=False) if state.is_completed() else f"validation failed: {state.message}")
    return 0 if state.is_completed() else 1


def _add_embed(sub) -> None:
    p = sub.add_parser("embed", help="embed committed shards that lack this encoder's store (a backfill)")
    p.add_argument("dataset", type=Path)
    p.add_argument("--encoder", required=True, help='e.g. "openclip:ViT-H-14" or "imagebind:huge"')
    p.add_argument("--checkpoint", help="local weights file (.pt/.pth/.bin/.safetensors); none are downloaded")
    p.add_argument("--modalities", nargs="+", default=["image"], help="dataset modalities to embed (default image)")
    p.add_argument("--executor", choices=("ray", "local"), default="ray")
    p.add_argument("--ray-address")
    p.add_argument("--actors", type=int, help="Ray actors (default: one per GPU, else one)")
    p.add_argument("--random-weights", action="store_true", help="no checkpoint: a seeded random init (smoke tests)")
    p.add_argument("--no-prefect", action="store_true")
    p.set_defaults(func=cmd_embed)


def require_weights(encoder: str, checkpoint: str | None, random_weights: bool, option: str = "--checkpoint") -> None:
    """Embeddings of random weights look like any others: ask for them explicitly."""
    if checkpoint is None and not random_weights:
        raise ValueError(f"{encoder} needs {option} PATH, a local weights file (nothing is downloaded); "
                         f"pass --random-weights to use a seeded random init instead (smoke tests only)")


def cmd_embed(args) -> int:
    require_weights(args.encoder, args.checkpoint, args.random_weights)
    dataset = str(args.dataset.resolve())
    if args.no_prefect:
        from pipelines.embed import EncoderSpec, embed_dataset

        report = embed_dataset(dataset, EncoderSpec(args.encoder, args.checkpoint, tuple(args.modalities)),
                               executor=args.executor, ray_address=args.ray_address, actors=args.actors)
        print("\n".join(report.lines()))
        return 0
    from flows.embed_flow import embed_backfill_flow

    result = embed_backfill_flow(dataset, args.encoder, args.checkpoint, list(args.modalities), args.executor,
                                 args.ray_address, args.actors)
    print(f"encoder {result['encoder_id']}: {result['shards_embedded']} shards embedded "
          f"({result['samples']} samples), {result['already_done']} already in the store")
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
    p = sub.add_parser("demo", help="synthesize a few samples of each spatial layout, build and summarize them "
                                   "(--bind: the emergent zero-shot demonstration)")
    p.add_argument("--out", type=Path, default=Path("bindset-demo"))
    p.add_argument("-n", type=int, default=6, help="samples per layout")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--executor", choices=("ray", "local"), default="ray")
    p.add_argument("--no-prefect", action="store_true", help="plain path without Prefect, for debugging")
    p.add_argument("--bind", action="store_true",
                   help="instead: train a tiny CLIP, bind audio to its images only, report audio->text zero-shot")
    p.add_argument("--pairs", type=int, help="--bind: image-audio videos to generate (default 240)")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args) -> int:
    if args.bind:
        from pipelines.bind_demo import run_bind_demo

        out = args.out if args.out != Path("bindset-demo") else Path("bindset-bind-demo")
        report = run_bind_demo(out, seed=args.seed, n_pairs=args.pairs, progress=True)
        print("\n".join(report["summary"]))
        print(f"{report['n_train']} training pairs, {report['n_held_out']} held out; "
              f"{report['timings_s']['total']:.0f} s; figures in {out / 'report.json'}")
        print("redo the evaluation or search from the command line:")
        print("\n".join(f"  {c}" for c in report["commands"]))
        return 0
    from flows.demo import run_demo

    print(run_demo(args.out, n=args.n, seed=args.seed, executor=args.executor, use_prefect=not args.no_prefect))
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
    from flows.cli_binding import add_eval, add_report, add_search, add_train

    for add in (_add_synth, _add_build, _add_embed, _add_run, _add_schedule, _add_flows, _add_validate, _add_preprocess,
                _add_demo, _add_inspect, add_report, add_train, add_eval, add_search):
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
