"""Schedules and the view of runs: serve a flow with a cron schedule against the configured Prefect
server, and list deployments and recent runs (``bindset schedule``, ``bindset flows``)."""

from __future__ import annotations

import asyncio
from pathlib import Path, PurePosixPath


def serve_build(config_path: str | Path, cron: str, name: str | None = None, timezone: str = "UTC") -> None:
    """Serve ``build-dataset`` for this config on ``cron`` (blocks, like ``prefect ... serve``).

    Needs a Prefect server (``PREFECT_API_URL``): schedules live in its database."""
    from prefect.client.schemas.schedules import CronSchedule
    from prefect.deployments.runner import EntrypointType
    from prefect.settings import PREFECT_API_URL

    from flows.build_flow import build_dataset_flow, config_path_parameter
    from flows.config import load_run_config

    load_run_config(config_path)  # fail now, not at 3 a.m.
    if not PREFECT_API_URL.value():
        raise RuntimeError("scheduling needs a Prefect server: start `prefect server start` and set PREFECT_API_URL")
    path = config_path_parameter(config_path)
    build_dataset_flow.serve(
        name=name or PurePosixPath(str(config_path)).stem,
        schedule=CronSchedule(cron=cron, timezone=timezone),
        parameters={"config_path": path},
        description=f"dataset build of {path}",
        entrypoint_type=EntrypointType.MODULE_PATH,
    )


def serve_backfill(
    dataset: str, encoder: str, cron: str, checkpoint: str | None = None, name: str | None = None, timezone: str = "UTC"
) -> None:
    from prefect.client.schemas.schedules import CronSchedule
    from prefect.deployments.runner import EntrypointType

    from flows.embed_flow import embed_backfill_flow
    from flows.runtime import root_arg

    dataset = str(root_arg(dataset, resolve=True))
    embed_backfill_flow.serve(
        name=name or f"backfill-{PurePosixPath(dataset.rstrip('/')).name}",
        schedule=CronSchedule(cron=cron, timezone=timezone),
        parameters={"dataset": dataset, "encoder": encoder, "checkpoint": checkpoint},
        entrypoint_type=EntrypointType.MODULE_PATH,
    )


async def _overview(limit: int) -> dict:
    from prefect import get_client
    from prefect.client.schemas.sorting import FlowRunSort

    async with get_client() as client:
        deployments = await client.read_deployments()
        flows = {f.id: f.name for f in await client.read_flows()}
        runs = await client.read_flow_runs(limit=limit, sort=FlowRunSort.START_TIME_DESC)
    return {
        "deployments": [
            {
                "name": f"{flows.get(d.flow_id, '?')}/{d.name}",
                "schedules": [getattr(s.schedule, "cron", None) or str(s.schedule) for s in (d.schedules or [])],
                "parameters": d.parameters,
            }
            for d in deployments
        ],
        "runs": [
            {
                "flow": flows.get(r.flow_id, "?"),
                "name": r.name,
                "state": r.state.name if r.state else None,
                "start": r.start_time.isoformat() if r.start_time else None,
                "seconds": round(r.total_run_time.total_seconds(), 1) if r.total_run_time else None,
            }
            for r in runs
        ],
    }


def flows_overview(limit: int = 10) -> dict:
    return asyncio.run(_overview(limit))


def format_overview(overview: dict) -> str:
    lines = ["deployments:"]
    lines += [f"  {d['name']}  schedules={d['schedules']}" for d in overview["deployments"]] or ["  (none)"]
    lines.append("recent runs:")
    lines += [
        f"  {r['flow']}/{r['name']}  {r['state']}  start={r['start']}  {r['seconds']} s" for r in overview["runs"]
    ] or ["  (none)"]
    return "\n".join(lines)
