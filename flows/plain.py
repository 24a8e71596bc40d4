"""The build of a run config without Prefect (``--no-prefect``): the same session, executor choice,
shard step and encoders as the ``build-dataset`` flow, in a plain loop."""

from __future__ import annotations

import time
from typing import Any

from flows.config import RunConfig
from flows.executor_choice import AutoExecutor, embed_executor_kind
from flows.runtime import apply_storage_options


def embed_arguments(run: RunConfig, encoder) -> dict[str, Any]:
    """The ``embed-backfill`` arguments of one of the config's [[encoders]]."""
    return {
        "encoder": encoder.name,
        "checkpoint": str(encoder.checkpoint) if encoder.checkpoint else None,
        "modalities": list(encoder.modalities or ["image"]),
        "executor": embed_executor_kind(run.executor.kind, run.executor.address),
        "ray_address": run.executor.address,
    }


def run_plain(run: RunConfig, progress: bool = True) -> dict:
    from pipelines.build import build_dataset

    apply_storage_options(run.storage.strings())
    started = time.perf_counter()
    executor = AutoExecutor(run.executor.kind, run.executor.address, run.executor.max_in_flight)
    report = build_dataset(
        run.create_sources(),
        run.dataset.out,
        run.build_config(),
        executor=executor,
        overwrite=run.dataset.overwrite,
        progress=progress,
        retry_rejects=run.dataset.retry_rejects,
    )
    embedded = []
    for encoder in run.encoders:
        from pipelines.embed import EncoderSpec, embed_dataset

        args = embed_arguments(run, encoder)
        done = embed_dataset(
            report.root,
            EncoderSpec(args["encoder"], args["checkpoint"], tuple(args["modalities"])),
            executor=args["executor"],
            ray_address=args["ray_address"],
            progress=progress,
        )
        embedded.append(
            {
                "encoder_id": done.encoder_id,
                "shards_embedded": len(done.embedded),
                "samples": sum(s.rows for s in done.embedded),
                "already_done": done.already_done,
                "seconds": done.seconds,
            }
        )
    # Wall time of the command: the build and the embeds after it.
    return report.result(time.perf_counter() - started, embedded, executor.description)
