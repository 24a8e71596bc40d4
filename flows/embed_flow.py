"""Prefect flow ``embed-backfill``: embed the committed shards that lack an encoder's store file."""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from pipelines.embed import EmbedReport, EncoderSpec, embed_dataset


@task(name="embed-shards", retries=2, retry_delay_seconds=[2.0, 10.0], cache_policy=NO_CACHE)
def embed_task(
    dataset: str, spec: EncoderSpec, executor: str, ray_address: str | None, actors: int | None
) -> EmbedReport:
    # Shards already committed by an earlier attempt are skipped: a retry only does what is missing.
    return embed_dataset(dataset, spec, executor=executor, ray_address=ray_address, actors=actors, progress=False)


@flow(name="embed-backfill")
def embed_backfill_flow(
    dataset: str,
    encoder: str,
    checkpoint: str | None = None,
    modalities: list[str] | None = None,
    executor: str = "ray",
    ray_address: str | None = None,
    actors: int | None = None,
) -> dict:
    from flows.executor_choice import embed_executor_kind

    spec = EncoderSpec(encoder, checkpoint, tuple(modalities or ("image",)))
    executor = embed_executor_kind(executor, ray_address)
    report = embed_task(dataset, spec, executor, ray_address, actors)
    for line in report.lines():
        get_run_logger().info(line)
    rows = sum(s.rows for s in report.embedded)
    table = "\n".join(f"| {s.shard_id:05d} | {s.rows} | {s.seconds:.1f} |" for s in report.embedded) or "| - | 0 | - |"
    create_markdown_artifact(
        f"# Embedding backfill\n\n- dataset: `{dataset}`\n- encoder id: `{report.encoder_id}`\n"
        f"- shards embedded: {len(report.embedded)} ({rows} samples), already done: {report.already_done}\n"
        f"- wall time: {report.seconds:.1f} s\n\n| shard | samples | seconds |\n|---|---|---|\n{table}\n",
        key="embed-backfill-summary",
    )
    return {
        "encoder_id": report.encoder_id,
        "shards_embedded": len(report.embedded),
        "samples": rows,
        "already_done": report.already_done,
        "seconds": report.seconds,
    }
