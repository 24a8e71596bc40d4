"""The ``bindset`` command line. Subcommands only parse arguments and call pipeline functions.

Every root a command takes (sources, datasets, outputs, checkpoints) is a local path or a URL
(``s3://``, ``gs://``, ``az://``, ``file://``), parsed as a string (``Path("s3://b/k")`` would be a
local folder ``s3:/b/k``). Before anything starts (a Prefect server, a flow run, Ray), a command
checks what it was given: configs, URLs, buckets and credentials; a bad one is one line on stderr
naming the file, key or URL, and exit code 2. See flows.runtime for the order of start-up.

Why one module of this size: it holds the parsers of the core commands, each a few lines of
parsing and one pipeline call; binding and curation commands have their own modules
(``flows.cli_binding``, ``flows.cli_curation``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from flows.runtime import PrefectApi, check_read, check_write, local_only, quiet_defaults, require_weights, root_arg


def _add_synth(sub) -> None:
    p = sub.add_parser("synth", help="write a synthetic copy of a dataset layout with related modalities")
    p.add_argument("out", help="local folder to write")
    p.add_argument("--layout", required=True, choices=("sunrgbd", "llvip", "audioset", "ego4d", "image-text"))
    p.add_argument("-n", type=int, default=8, help="number of samples (default 8)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_synth)


def cmd_synth(args) -> int:
    out = local_only(args.out, "synth OUT")
    from pipelines.synth import synthesize

    result = synthesize(out, args.layout, args.n, seed=args.seed)
    print(f"wrote {result.n} {args.layout} samples ({len(result.files)} files) to {out.resolve()}")
    return 0


def _add_build(sub) -> None:
    from pipelines.sources import LAYOUTS

    p = sub.add_parser("build", help="build shards from a source folder (manifest, plan, shards, commit)")
    p.add_argument("source", help="dataset root, a path or URL (for --layout generic: the CSV/Parquet table)")
    p.add_argument("--layout", required=True, choices=LAYOUTS)
    p.add_argument("--out", required=True, help="dataset to write, a directory or URL (resumed if it exists)")
    p.add_argument("--name", help="source name recorded per sample (default LAYOUT:FOLDER)")
    p.add_argument("--split", help="split for layouts that do not record one")
    p.add_argument("--shard-size", type=int, default=256)
    p.add_argument("--config", help="TOML/JSON file of preprocessing overrides")
    p.add_argument("--overwrite", action="store_true", help="rebuild a dataset whose config or sources changed")
    p.add_argument(
        "--retry-rejects",
        action="store_true",
        help="then re-attempt the rejects whose reason is transient (I/O errors, timeouts, object-store "
        "errors) as new shards; permanent rejects stay",
    )
    p.add_argument(
        "--max-reject-fraction",
        type=_reject_fraction,
        default=0.5,
        metavar="F",
        help="exit 1 with the top reasons when more than F of the samples read were rejected "
        "(default 0.5; the shards are committed either way)",
    )
    p.add_argument(
        "--keep-partial",
        action="store_true",
        help="store samples that lack a partner of their layout (e.g. AudioSet video without audio) "
        "instead of rejecting them; the summary counts them",
    )
    p.add_argument(
        "--executor",
        choices=("auto", "ray", "local"),
        default="auto",
        help="auto (default: Ray when --ray-address/RAY_ADDRESS names a cluster or more than "
        "64 samples in 2+ shards are to be built, else in-process; the output says which), "
        "ray (a local Ray, or the cluster at --ray-address/RAY_ADDRESS) or local (in-process)",
    )
    p.add_argument("--ray-address", help="address of an existing Ray cluster (default: RAY_ADDRESS, else local)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--no-prefect", action="store_true", help="plain path without Prefect, for debugging")
    p.set_defaults(func=cmd_build, uses_prefect=True)


def cmd_build(args) -> int:
    from flows.config import check_locations, load_overrides, parse_run_config

    source = {"layout": args.layout, "root": str(root_arg(args.source, resolve=True))}
    source.update({k: v for k, v in (("name", args.name), ("split", args.split)) if v})
    run_config = {
        "dataset": {
            "out": str(root_arg(args.out, resolve=True)),
            "shard_size": args.shard_size,
            "overwrite": args.overwrite,
            "retry_rejects": args.retry_rejects,
            "keep_partial": args.keep_partial,
        },
        "sources": [source],
        "preprocess": load_overrides(args.config) if args.config else {},
        "executor": {"kind": args.executor, "address": args.ray_address},
    }
    names = {
        "dataset.out": "--out",
        "sources[0].root": "SOURCE",
        "dataset.shard_size": "--shard-size",
        "executor.address": "--ray-address",
        "preprocess": f"--config {args.config}",
    }
    run = parse_run_config(run_config, None, names)
    check_locations(run, None, names)
    if args.no_prefect:
        from flows.plain import run_plain

        result = run_plain(run, progress=not args.no_progress)
    else:
        api = args.prefect_api.start()
        _connect_early(args.executor, args.ray_address)
        from flows.build_flow import build_dataset_flow

        api.wait()
        result = build_dataset_flow(config=run_config)
    _print_result(result)
    check_reject_fraction(result, args.max_reject_fraction)
    return 0


def _connect_early(kind: str, address: str | None) -> None:
    """An explicit Ray executor connects now, while the Prefect server starts; the flow's executor
    then finds Ray up (``auto`` decides inside the flow, once the plan is known)."""
    if kind == "ray":
        from pipelines.executors import create_executor

        create_executor("ray", ray_address=address).connect()


def check_reject_fraction(result: dict, limit: float | None) -> None:
    """A build that rejected more than ``limit`` of what it read finished its shards (all committed),
    but something is likely wrong with the inputs or the layout: fail with the top reasons."""
    rejected, stored = result.get("rejected", 0), result.get("stored", 0)
    if limit is None or not result.get("shards_built") or rejected + stored == 0:
        return
    fraction = rejected / (rejected + stored)
    if fraction > limit:
        from pipelines.build import BuildFailed

        top = ", ".join(f"{reason} {count}" for reason, count in list(result.get("reject_reasons", {}).items())[:3])
        raise BuildFailed(
            f"{rejected} of {rejected + stored} samples rejected ({fraction:.0%} > "
            f"--max-reject-fraction {limit:g}); top reasons: {top or 'none recorded'}. "
            "The committed shards are kept (see storage.scan_rejects)."
        )


def _reject_fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def _print_result(result: dict) -> None:
    rate = result["stored"] / result["seconds"] if result["seconds"] else 0.0
    print(f"dataset: {result['dataset']}")
    if result.get("executor"):
        print(f"executor: {result['executor']}")
    print(
        f"samples stored: {result['stored']}  rejected: {result['rejected']}  "
        f"shards built: {result['shards_built']}  ({result['seconds']:.1f} s, {rate:.1f} samples/s)"
    )
    for e in result.get("embedded", []):
        print(
            f"encoder {e['encoder_id']}: {e['shards_embedded']} shards embedded ({e['samples']} samples), "
            f"{e['already_done']} already in the store"
        )


def _add_run(sub) -> None:
    p = sub.add_parser("run", help="run the dataset build described by a TOML file once (a Prefect flow run)")
    p.add_argument("config", help="run config TOML (a path or URL)")
    p.add_argument("--no-prefect", action="store_true", help="plain path without Prefect, for debugging")
    p.set_defaults(func=cmd_run, uses_prefect=True)


def cmd_run(args) -> int:
    run = _checked_run_config(args.config)
    if args.no_prefect:
        from flows.plain import run_plain

        _print_result(run_plain(run))
        return 0
    api = args.prefect_api.start()
    _connect_early(run.executor.kind, run.executor.address)
    from flows.build_flow import build_dataset_flow, config_path_parameter

    api.wait()
    _print_result(build_dataset_flow(config_path=config_path_parameter(args.config)))
    return 0


def _checked_run_config(path: str):
    """Load a run config and check its roots, with its own [storage] options (under the command
    line's): one line naming the file and key on any problem."""
    from flows.config import check_locations, load_run_config
    from flows.runtime import apply_storage_options

    run = load_run_config(path)
    apply_storage_options(run.storage.strings())
    check_locations(run, str(path))
    return run


def _add_schedule(sub) -> None:
    p = sub.add_parser("schedule", help="serve the build of a TOML config (or a backfill) on a cron schedule")
    p.add_argument("config", help="build config TOML, or the dataset (directory or URL) with --backfill")
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
        dataset = root_arg(args.config, resolve=True)
        check_read(dataset, "dataset")
        if args.checkpoint:
            _check_checkpoint(args.checkpoint)
        serve_backfill(str(dataset), args.backfill, args.cron, args.checkpoint, args.name, args.timezone)
        return 0
    run = _checked_run_config(args.config)
    cron = args.cron or run.schedule.cron
    if cron is None:
        raise ValueError(f"{args.config} has no [schedule].cron; pass --cron")
    serve_build(args.config, cron, args.name, args.timezone)
    return 0


def _add_flows(sub) -> None:
    p = sub.add_parser("flows", help="list Prefect deployments and recent flow runs")
    p.add_argument("--limit", type=int, default=10)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_flows, uses_prefect=True)


def cmd_flows(args) -> int:
    api = args.prefect_api.start()
    from flows.schedule import flows_overview, format_overview

    api.wait()
    overview = flows_overview(args.limit)
    print(json.dumps(overview, indent=2) if args.json else format_overview(overview))
    return 0


def _add_validate(sub) -> None:
    p = sub.add_parser("validate", help="check every shard's sha256 and row count against dataset.json")
    p.add_argument("dataset", help="dataset directory or URL")
    p.add_argument("--no-prefect", action="store_true")
    p.set_defaults(func=cmd_validate, uses_prefect=True)


def cmd_validate(args) -> int:
    dataset = root_arg(args.dataset, resolve=True)
    check_read(dataset, "dataset")
    if args.no_prefect:
        from pipelines.validate import validate_dataset

        report = validate_dataset(dataset)
        print("\n".join(report.lines()))
        return 0 if report.ok else 1
    api = args.prefect_api.start()
    from flows.build_flow import validate_dataset_flow

    api.wait()
    state = validate_dataset_flow(str(dataset), return_state=True)
    print(state.result(raise_on_failure=False) if state.is_completed() else f"validation failed: {state.message}")
    return 0 if state.is_completed() else 1


def _add_embed(sub) -> None:
    p = sub.add_parser("embed", help="embed committed shards that lack this encoder's store (a backfill)")
    p.add_argument("dataset", help="dataset directory or URL")
    p.add_argument(
        "--encoder",
        required=True,
        help='e.g. "openclip:ViT-H-14", "imagebind:huge", "binding:tiny" (with --checkpoint)',
    )
    p.add_argument("--checkpoint", help="weights file (.pt/.pth/.bin/.safetensors), a path or URL; no hub downloads")
    p.add_argument("--modalities", nargs="+", default=["image"], help="dataset modalities to embed (default image)")
    p.add_argument(
        "--executor",
        choices=("auto", "ray", "local"),
        default="ray",
        help="ray (default), local (in-process), or auto (Ray when a cluster is configured or there are several GPUs)",
    )
    p.add_argument("--ray-address")
    p.add_argument("--actors", type=int, help="Ray actors (default: one per GPU, else one)")
    p.add_argument("--random-weights", action="store_true", help="no checkpoint: a seeded random init (smoke tests)")
    p.add_argument("--no-prefect", action="store_true")
    p.set_defaults(func=cmd_embed, uses_prefect=True)


def _check_checkpoint(checkpoint: str) -> None:
    from storage.location import as_location

    location = as_location(checkpoint)
    check_read(location, "checkpoint")
    if not location.is_file():
        raise FileNotFoundError(f"checkpoint {checkpoint} is not a file")


def cmd_embed(args) -> int:
    require_weights(args.encoder, args.checkpoint, args.random_weights)
    dataset = str(root_arg(args.dataset, resolve=True))
    check_read(dataset, "dataset")
    check_write(dataset, "dataset")  # the store is written into the dataset
    if args.checkpoint:
        _check_checkpoint(args.checkpoint)
    from flows.executor_choice import embed_executor_kind

    if args.no_prefect:
        from pipelines.embed import EncoderSpec, embed_dataset

        report = embed_dataset(
            dataset,
            EncoderSpec(args.encoder, args.checkpoint, tuple(args.modalities)),
            executor=embed_executor_kind(args.executor, args.ray_address),
            ray_address=args.ray_address,
            actors=args.actors,
        )
        print("\n".join(report.lines()))
        return 0
    api = args.prefect_api.start()
    _connect_early(args.executor, args.ray_address)
    from flows.embed_flow import embed_backfill_flow

    api.wait()
    result = embed_backfill_flow(
        dataset, args.encoder, args.checkpoint, list(args.modalities), args.executor, args.ray_address, args.actors
    )
    print(
        f"encoder {result['encoder_id']}: {result['shards_embedded']} shards embedded "
        f"({result['samples']} samples), {result['already_done']} already in the store"
    )
    return 0


def _add_preprocess(sub) -> None:
    p = sub.add_parser("preprocess", help="write the model-ready float32 tensor of one file (.npy)")
    p.add_argument("file", help="local input file")
    from preprocess.registry import uri_columns

    p.add_argument("--modality", required=True, choices=tuple(uri_columns()))
    p.add_argument("--out", required=True, help="local .npy file to write")
    p.add_argument("--depth-encoding", default="sunrgbd", choices=("sunrgbd", "millimetres", "metres"))
    p.add_argument(
        "--sensor", default="kv1", help="depth sensor, for default fx and baseline (kv1, kv2, realsense, xtion)"
    )
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

    source, out = local_only(args.file, "preprocess FILE"), local_only(args.out, "--out")
    tensor = model_input_for_file(
        source,
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
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, tensor)
    print(f"{source} -> {out} {list(tensor.shape)} {tensor.dtype}")
    return 0


def _add_demo(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="synthesize a few samples of each spatial layout, build and summarize them "
        "(--bind: the emergent zero-shot demonstration)",
    )
    p.add_argument("--out", default="bindset-demo", help="local folder (default bindset-demo)")
    p.add_argument("-n", type=int, default=6, help="samples per layout")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--executor", choices=("auto", "ray", "local"), default="auto")
    p.add_argument("--no-prefect", action="store_true", help="plain path without Prefect, for debugging")
    p.add_argument(
        "--bind",
        action="store_true",
        help="instead: train a tiny CLIP, bind audio to its images only, report audio->text zero-shot",
    )
    p.add_argument("--pairs", type=int, help="--bind: image-audio videos to generate (default 240)")
    p.set_defaults(func=cmd_demo, uses_prefect=True)


def cmd_demo(args) -> int:
    out = local_only(args.out, "demo --out")
    if args.bind:
        from pipelines.binding.demo import run_bind_demo

        out = out if args.out != "bindset-demo" else Path("bindset-bind-demo")
        report = run_bind_demo(out, seed=args.seed, n_pairs=args.pairs, progress=True)
        print("\n".join(report["summary"]))
        print(
            f"{report['n_train']} training pairs, {report['n_held_out']} held out; "
            f"{report['timings_s']['total']:.0f} s; figures in {out / 'report.json'}"
        )
        print("redo the evaluation or search from the command line:")
        print("\n".join(f"  {c}" for c in report["commands"]))
        return 0
    check_write(out, "demo --out")
    api = args.prefect_api.start() if not args.no_prefect else None
    _connect_early(args.executor, None)
    from flows.demo import run_demo

    if api is not None:
        api.wait()
    print(run_demo(out, n=args.n, seed=args.seed, executor=args.executor, use_prefect=not args.no_prefect))
    return 0


def _add_inspect(sub) -> None:
    p = sub.add_parser("inspect", help="summarize a dataset with Polars")
    p.add_argument("dataset", help="dataset directory or URL")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_inspect)


def cmd_inspect(args) -> int:
    dataset = root_arg(args.dataset)
    check_read(dataset, "dataset")
    from pipelines.summary import dataset_summary, format_summary

    summary = dataset_summary(dataset)
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bindset", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    from flows.cli_binding import add_eval, add_report, add_search, add_train
    from flows.cli_curation import add_dedup, add_export, add_index

    for add in (
        _add_synth,
        _add_build,
        _add_embed,
        _add_run,
        _add_schedule,
        _add_flows,
        _add_validate,
        _add_preprocess,
        _add_demo,
        _add_inspect,
        add_report,
        add_train,
        add_eval,
        add_search,
        add_dedup,
        add_index,
        add_export,
    ):
        add(sub)
    for command in sub.choices.values():
        command.add_argument(
            "--storage-option",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="object-store option (obstore/Polars keys: aws_region, aws_endpoint, "
            "aws_allow_http...), repeatable; over the environment and a config's [storage]",
        )
    return parser


#: what a user can fix: one line, no traceback (OSError covers missing files, denied access and
#: object-store errors; ValueError covers configs and URLs). Other exceptions are bugs and keep theirs.
USER_ERRORS = (ValueError, OSError, RuntimeError)


def user_error(exc: BaseException) -> bool:
    """One of USER_ERRORS, or a flow run that ended Failed with its one-line reason (FailedRun,
    matched by name: importing Prefect here would slow every command's start)."""
    return isinstance(exc, USER_ERRORS) or type(exc).__name__ == "FailedRun"


def failed_work(exc: BaseException) -> bool:
    """The inputs were fine but the work failed (a full disk, shards failing after retries): exit 1,
    where a bad input exits 2. Checked by module, not imported here: the parser stays light. A flow
    run ends Failed with "<ErrorType>: <message>" (flows.build_flow)."""
    build, shard = sys.modules.get("pipelines.build"), sys.modules.get("storage.shard")
    kinds = tuple(k for k in (getattr(build, "BuildFailed", None), getattr(shard, "ShardWriteError", None)) if k)
    if kinds and isinstance(exc, kinds):
        return True
    return type(exc).__name__ == "FailedRun" and str(exc).startswith(("BuildFailed:", "ShardWriteError:"))


def _flow_message(exc: BaseException) -> str:
    """A failed flow run's message without the error type the flow put in front."""
    text = one_line(exc)
    head = text.split(" ", 1)[0]
    if type(exc).__name__ == "FailedRun" and head.endswith(":") and head[:-1].isidentifier():
        return text.split(": ", 1)[1]
    return text


def one_line(exc: BaseException) -> str:
    text = " ".join(part.strip() for part in str(exc).splitlines() if part.strip())
    return text or type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    """``bindset ARGS``. Called without ``argv`` (the ``bindset`` program, ``python -m flows.cli``),
    the process exits here, once its exit handlers have run (``exit_now``)."""
    quiet_defaults()  # before Prefect or Ray is imported: both read their settings at import
    from preprocess.registry import PluginError, modalities

    try:
        modalities()  # the registry, with the user's plugin modules: the parser's choices come from it
    except PluginError as exc:
        print(f"bindset: error: {exc}", file=sys.stderr)
        if argv is None:
            exit_now(2)
        return 2
    args = make_parser().parse_args(argv)
    wants_prefect = (
        getattr(args, "uses_prefect", False)
        and not getattr(args, "no_prefect", False)
        and not getattr(args, "bind", False)
    )
    # The temporary Prefect server imports itself while this process checks its inputs; it serves
    # nothing until a command calls start() after its checks.
    args.prefect_api = PrefectApi.prepare() if wants_prefect else PrefectApi()
    try:
        from flows.runtime import set_cli_storage_options
        from storage.location import parse_storage_options

        set_cli_storage_options(parse_storage_options(args.storage_option))
        rc = args.func(args)
    except Exception as exc:  # noqa: BLE001 - user errors become one line; bugs keep their traceback
        if not user_error(exc):
            raise
        print(f"bindset {args.command}: error: {' '.join(_flow_message(exc).split())}", file=sys.stderr)
        rc = 1 if failed_work(exc) else 2
    if argv is None:
        exit_now(rc)
    return rc


def exit_now(rc: int) -> None:
    """End the process as the interpreter would, minus its final teardown: the steps of
    ``Py_FinalizeEx`` that anyone can observe (``threading._shutdown``: thread exit hooks, where
    Prefect drains its log and event workers, and joining non-daemon threads; then the ``atexit``
    handlers: Ray shuts down, the temporary Prefect server stops, logging flushes), a flush of
    stdout/stderr, and ``os._exit``. Deallocating every module of torch, Prefect and Ray one by one
    took 1-2.5 s of each command here, and nothing of it is observable (mypy ends the same way)."""
    import atexit
    import os
    import threading

    threading._shutdown()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc)


if __name__ == "__main__":
    sys.exit(main())  # main() without argv ends the process itself
