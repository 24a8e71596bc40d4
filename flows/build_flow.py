"""Prefect flows: ``build-dataset``, ``validate-dataset`` (and ``embed-backfill`` in flows.embed_flow).

Flows only compose pipeline functions. Shards run as Ray tasks *called from* Prefect tasks (one
Prefect task run per shard, ``RayExecutor.build_one``) rather than through prefect-ray's
RayTaskRunner: the dataset lock, resume state and ``dataset.json`` must stay with one driver process
(the flow), Ray keeps retrying worker/node death on its own, Prefect retries application errors with
backoff, and the same executor serves ``--no-prefect`` builds, so both paths build shards identically.

How many shards are in flight is the executor's decision (``Executor.in_flight_limit()``: 2 x the
cluster's CPUs on Ray, one in-process), the same bound ``--no-prefect`` keeps. The flow learns it
once the executor is connected and opens a ``ThreadPoolTaskRunner`` of exactly that many threads
for the shard tasks, feeding it one shard per finished one. Each thread waits on one Ray task, so
threads equal shards in flight; a fixed pool (it was 4) capped every cluster at 4 shards. Chosen
over submitting Ray tasks without threads and recording finished shards as task runs afterwards:
then Prefect would only log work it did not run, and its retries, task states and timings would
describe bookkeeping instead of the shard build. A waiting thread costs a stack and no CPU; the
feeding keeps the driver's memory flat however many shards the plan holds.
"""

from __future__ import annotations

from concurrent.futures import FIRST_COMPLETED
from concurrent.futures import wait as wait_any
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.states import Failed
from prefect.task_runners import ThreadPoolTaskRunner

from flows.config import RunConfig, load_run_config, parse_run_config
from flows.embed_flow import embed_backfill_flow
from flows.executor_choice import choose_executor
from flows.plain import embed_arguments, run_plain
from flows.runtime import apply_storage_options
from pipelines.build import BuildFailed, BuildReport, BuildSession, build_shard
from pipelines.plan import ShardSpec
from pipelines.validate import validate_dataset
from storage.shard import ShardSummary


def _expected_failures() -> tuple[type[BaseException], ...]:
    from pipelines.build import ConfigMismatch
    from pipelines.manifest import NoSamplesFound
    from storage.locks import DatasetLocked
    from storage.object_store import LocationError, StoreError
    from storage.shard import ShardWriteError

    return (
        BuildFailed,
        ShardWriteError,
        NoSamplesFound,
        ConfigMismatch,
        DatasetLocked,
        LocationError,
        StoreError,
        FileNotFoundError,
        NotADirectoryError,
        PermissionError,
    )


EXPECTED_FAILURES = _expected_failures()
#: the failures of work (exit 1) among them; the others are mistakes in the inputs (exit 2)
WORK_FAILURES = ("BuildFailed", "ShardWriteError")

SHARD_RETRIES = 2
SHARD_RETRY_DELAYS = [1.0, 4.0]  # backoff between attempts, seconds


@task(
    name="build-shard",
    retries=SHARD_RETRIES,
    retry_delay_seconds=SHARD_RETRY_DELAYS,
    cache_policy=NO_CACHE,
    task_run_name="shard-{spec.shard_id:05d}",
)
def build_shard_task(root: Any, spec: ShardSpec, config, executor) -> dict:
    if executor is None or executor.in_process:
        summary = build_shard(root, spec, config)
    else:
        summary = executor.build_one(root, spec, config)
    get_run_logger().info(
        "shard %05d: %d stored, %d rejected in %.1f s", spec.shard_id, summary.stored, summary.rejected, summary.seconds
    )
    return summary.to_dict()


def build_markdown(report: BuildReport, failed: list[str], executor: str = "") -> str:
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
| executor | {executor} |
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


def run_shard_tasks(session: BuildSession, executor, limit: int, specs: list[ShardSpec] | None = None) -> list[str]:
    """One ``build-shard`` task run per shard to build (``specs``, default the session's todo), at most
    ``limit`` at once; each summary is recorded as its shard commits. Returns the failures (after
    Prefect's retries), one line each."""
    failed: list[str] = []
    todo = list(reversed(session.todo if specs is None else specs))
    with ThreadPoolTaskRunner(max_workers=limit) as runner:
        in_flight: dict = {}
        while todo or in_flight:
            while todo and len(in_flight) < limit:
                spec = todo.pop()
                future = runner.submit(
                    build_shard_task,
                    {"root": session.root, "spec": spec, "config": session.config, "executor": executor},
                )
                in_flight[future.wrapped_future] = (spec, future)
            done, _ = wait_any(list(in_flight), return_when=FIRST_COMPLETED)
            for inner in done:
                spec, future = in_flight.pop(inner)
                future.wait()  # done: this only takes the final state from the finished thread
                state = future.state
                if state.is_completed():
                    session.record(ShardSummary.from_dict(future.result()))
                    continue
                try:
                    future.result()
                except Exception as exc:  # the reason goes into the failure message
                    failed.append(f"shard {spec.shard_id:05d}: {type(exc).__name__}: {exc}")
                else:
                    failed.append(f"shard {spec.shard_id:05d}: {state.name}")
    return failed


@flow(name="build-dataset")
def build_dataset_flow(config_path: str | None = None, config: dict[str, Any] | None = None):
    """Manifest, plan, shard tasks on Ray (or in-process), commit, summary artifact.

    A mistake in the inputs that only the build can see (a layout that matches nothing, a dataset
    built with another config or locked by another build) or a build whose shards failed ends the
    run in a Failed state carrying one line, not an exception: the run is recorded as failed, and
    neither the log nor the terminal gets a traceback for what is not a bug."""
    try:
        return _build_dataset(config_path, config)
    except EXPECTED_FAILURES as exc:
        return Failed(message=f"{type(exc).__name__}: {' '.join(str(exc).split())}")


def _build_dataset(config_path: str | None, config: dict[str, Any] | None) -> dict:
    logger = get_run_logger()
    run = _load(config_path, config)
    apply_storage_options(run.storage.strings())
    with BuildSession(run.create_sources(), run.dataset.out, run.build_config(), run.dataset.overwrite) as session:
        executor, chosen = choose_executor(
            run.executor.kind, run.executor.address, run.executor.max_in_flight, session.todo
        )
        limit = 1
        if session.todo:
            executor.connect()
            executor.check_root_reachable(session.root)
            limit = executor.in_flight_limit()
        logger.info(
            "dataset %s: %d shards planned, %d to build; executor %s, up to %d shards in flight",
            session.root,
            len(session.plan),
            len(session.todo),
            chosen,
            limit,
        )
        failed = run_shard_tasks(session, executor, limit)
        if run.dataset.retry_rejects and not failed:
            retries = session.plan_retries()
            if retries:
                executor.connect()
                logger.info("retrying %d transient rejects in %d new shard(s)", session.report.retried, len(retries))
                failed = run_shard_tasks(session, executor, executor.in_flight_limit(), retries)
    report = session.report
    create_markdown_artifact(
        build_markdown(report, failed, chosen), key="build-dataset-summary", description=f"build of {report.root}"
    )
    for line in report.lines():
        logger.info(line)
    if failed:
        raise BuildFailed(
            f"{len(failed)} shard(s) failed after retries: "
            + "; ".join(failed)
            + ". Committed shards are kept; rerun to build the rest."
        )
    # The config's encoders, each an embed-backfill subflow run: only shards lacking its store
    embedded = [embed_backfill_flow(str(report.root), **embed_arguments(run, enc)) for enc in run.encoders]
    return report.result(report.seconds, embedded, chosen)


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
        return build_dataset_flow(config_path=config_path_parameter(config_path))
    return run_plain(load_run_config(config_path), progress=progress)


def config_path_parameter(config_path: str | Path) -> str:
    """The flow run's parameter: an absolute path (or the URL), so a deployment finds the file."""
    from storage.location import is_url

    return str(config_path) if is_url(str(config_path)) else str(Path(config_path).resolve())
