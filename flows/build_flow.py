"""Prefect flows: ``build-dataset``, ``validate-dataset`` (and ``embed-backfill`` in flows.embed_flow).

Flows only compose pipeline functions. Shards run as Ray tasks *called from* Prefect tasks (one
Prefect task per shard, ``RayExecutor.build_one``) rather than through prefect-ray's RayTaskRunner:
the dataset lock, resume state and ``dataset.json`` must stay with one driver process (the flow), Ray
keeps retrying worker/node death on its own, Prefect retries application errors with backoff, and the
same RayExecutor serves ``--no-prefect`` builds — so both paths build shards identically.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

from flows.config import RunConfig, load_run_config, parse_run_config
from flows.embed_flow import embed_backfill_flow
from pipelines.build import BuildReport, BuildSession, build_shard
from pipelines.plan import ShardSpec
from pipelines.validate import validate_dataset
from storage.shard import ShardSummary

SHARD_RETRIES = 2
SHARD_RETRY_DELAYS = [1.0, 4.0]  # backoff between attempts, seconds


def _executor(run: RunConfig):
    from pipelines.executors import create_executor

    kwargs = {"max_in_flight": run.executor.max_in_flight} if run.executor.kind == "ray" else {}
    return create_executor(run.executor.kind, ray_address=run.executor.address, **kwargs)


@task(name="build-shard", retries=SHARD_RETRIES, retry_delay_seconds=SHARD_RETRY_DELAYS, cache_policy=NO_CACHE,
      task_run_name="shard-{spec.shard_id:05d}")
def build_shard_task(root: Path, spec: ShardSpec, config, executor) -> dict:
    if executor is None:
        summary = build_shard(root, spec, config)
    else:
        summary = executor.build_one(root, spec, config)
    get_run_logger().info("shard %05d: %d stored, %d rejected in %.1f s", spec.shard_id, summary.stored,
                          summary.rejected, summary.seconds)
    return summary.to_dict()


def build_markdown(report: BuildReport, failed: list[str]) -> str:
    rate = report.stored / report.seconds if report.seconds else 0.0
    rows = "\n".join(f"| {k} | {v} |" for k, v in report.reject_reasons().items()) or "| (none) | 0 |"
    problems = "\n".join(f"- {p}" for p in report.manifest_problems) or "- none"
    failures = "\n".join(f"- {f}" for f in failed) or "- none"
    return f"""# Dataset build

| | |
|---|---|
| dataset | `{report.root}` |
| samples stored | {report.stored} |
| samples rejected | {report.rejected} |
| shards built / already committed / planned | {len(report.summaries)} / {report.skipped_shards} / {report.planned_shards} |
| wall time | {report.seconds:.1f} s |
| throughput | {rate:.1f} samples/s |

## Rejects by reason
| stage:error | count |
|---|---|
{rows}

## Manifest problems
{problems}

## Failed shards
{failures}
"""


def _load(config_path: str | None, config: dict | None) -> RunConfig:
    if (config_path is None) == (config is None):
        raise ValueError("pass exactly one of config_path or config")
    return load_run_config(config_path) if config_path else parse_run_config(config)


@flow(name="build-dataset", task_runner=ThreadPoolTaskRunner(max_workers=4))
def build_dataset_flow(config_path: str | None = None, config: dict[str, Any] | None = None) -> dict:
    """Manifest, plan, shard tasks on Ray (or in-process), commit, summary artifact."""
    logger = get_run_logger()
    run = _load(config_path, config)
    executor = _executor(run) if run.executor.kind == "ray" else None
    with BuildSession(run.create_sources(), run.dataset.out, run.build_config(), run.dataset.overwrite) as session:
        logger.info("dataset %s: %d shards planned, %d to build", session.root, len(session.plan), len(session.todo))
        if executor is not None and session.todo:
            executor.connect()
            executor.check_root_reachable(session.root)
        futures = [build_shard_task.submit(session.root, spec, session.config, executor) for spec in session.todo]
        failed = []
        for spec, future in zip(session.todo, futures):
            future.wait()
            if future.state.is_completed():
                session.record(ShardSummary.from_dict(future.result()))
            else:
                try:
                    future.result()
                except Exception as exc:  # the reason goes into the failure message
                    failed.append(f"shard {spec.shard_id:05d}: {type(exc).__name__}: {exc}")
    report = session.report
    create_markdown_artifact(build_markdown(report, failed), key="build-dataset-summary",
                             description=f"build of {report.root}")
    for line in report.lines():
        logger.info(line)
    if failed:
        raise RuntimeError(f"{len(failed)} shard(s) failed after retries: " + "; ".join(failed)
                           + ". Committed shards are kept; rerun to build the rest.")
    # The config's encoders, each an embed-backfill subflow run: only shards lacking its store
    embedded = [embed_backfill_flow(str(report.root), **_embed_arguments(run, enc)) for enc in run.encoders]
    return {"dataset": str(report.root), "stored": report.stored, "rejected": report.rejected,
            "shards_built": len(report.summaries), "seconds": report.seconds, "embedded": embedded}


def _embed_arguments(run: RunConfig, encoder) -> dict[str, Any]:
    return {"encoder": encoder.name, "checkpoint": str(encoder.checkpoint) if encoder.checkpoint else None,
            "modalities": list(encoder.modalities or ["image"]), "executor": run.executor.kind,
            "ray_address": run.executor.address}


@flow(name="validate-dataset")
def validate_dataset_flow(dataset: str) -> dict:
    report = validate_dataset(dataset)
    logger = get_run_logger()
    for line in report.lines():
        logger.info(line)
    body = "\n".join(f"- {line}" for line in report.lines())
    create_markdown_artifact(f"# Validation of `{dataset}`\n\n{body}\n", key="validate-dataset-summary")
    if not report.ok:
        raise RuntimeError("dataset is inconsistent: " + "; ".join(report.missing + report.corrupt))
    return {"checked": report.checked, "uncommitted": report.uncommitted}


def run_build(config_path: str | Path, use_prefect: bool = True, progress: bool = True) -> dict:
    """``bindset run``: through the Prefect flow by default, or the plain path (``--no-prefect``)."""
    if use_prefect:
        return build_dataset_flow(config_path=str(Path(config_path).resolve()))
    from pipelines.build import build_dataset

    run = load_run_config(config_path)
    started = time.perf_counter()
    report = build_dataset(run.create_sources(), run.dataset.out, run.build_config(), executor=_executor(run),
                           overwrite=run.dataset.overwrite, progress=progress)
    embedded = []
    for encoder in run.encoders:
        from pipelines.embed import EncoderSpec, embed_dataset

        args = _embed_arguments(run, encoder)
        done = embed_dataset(report.root, EncoderSpec(args["encoder"], args["checkpoint"], tuple(args["modalities"])),
                             executor=args["executor"], ray_address=args["ray_address"], progress=progress)
        embedded.append({"encoder_id": done.encoder_id, "shards_embedded": len(done.embedded),
                         "samples": sum(s.rows for s in done.embedded), "already_done": done.already_done,
                         "seconds": done.seconds})
    return {"dataset": str(report.root), "stored": report.stored, "rejected": report.rejected,
            "shards_built": len(report.summaries), "seconds": time.perf_counter() - started, "embedded": embedded}
