"""The per-shard build step: decode, preprocess and write one shard, bad samples to rejects.

``build_shard`` is a plain function of (dataset root, shard spec, config): executors (local, Ray) and
Prefect tasks only decide where it runs; ``pipelines.build`` drives a whole dataset with them.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Callable

from pipelines import faults
from pipelines.config import BuildConfig
from pipelines.plan import ShardSpec
from pipelines.samples import InputPrefetch, SampleError, is_transient, missing_partners, process_sample
from preprocess.registry import uri_columns
from storage.location import Location, as_location, is_url
from storage.shard import ShardSummary, ShardWriter


class QualityFilterFailed(ValueError):
    """A sample decoded fine but fails a configured quality filter (counted like a reject)."""


def build_shard(
    root: str | Path | Location, spec: ShardSpec, config: BuildConfig, on_sample: Callable[[], None] | None = None
) -> ShardSummary:
    """Decode, preprocess and write one shard; bad samples become rejects, good ones are all kept.
    ``root`` is a local directory or a URL: the shard goes straight there from wherever this runs."""
    started = time.perf_counter()
    faults.check("shard", spec.shard_id)
    writer = ShardWriter(as_location(root), spec.shard_id, capacity=max(len(spec), 1)).open()
    remote_inputs = any(is_url(row.get("root")) for row in spec.rows)
    prefetch = InputPrefetch(spec.rows) if remote_inputs else contextlib.nullcontext()
    try:
        with prefetch:
            partial = _build_rows(writer, spec, config, prefetch if remote_inputs else None, on_sample)
        summary = writer.commit()
    except BaseException:
        writer.abort()
        raise
    return ShardSummary(**{**summary.to_dict(), "seconds": time.perf_counter() - started, "partial": partial})


def _build_rows(
    writer: ShardWriter,
    spec: ShardSpec,
    config: BuildConfig,
    prefetch: InputPrefetch | None,
    on_sample: Callable[[], None] | None,
) -> int:
    """Process and write every row; returns how many stored samples lack a partner (keep_partial)."""
    partial = 0
    for position, row in enumerate(spec.rows):
        if prefetch is not None:
            prefetch.advance(position)
        try:
            sample = process_sample(row, config)
        except SampleError as err:
            writer.reject(row["sample_id"], err.stage, err.cause, err.input_path, transient=is_transient(err.cause))
        else:
            failed = config.filters.failures(sample.fields)
            if failed:
                first_uri = next((row[c] for c in uri_columns().values() if row.get(c)), "")
                writer.reject(row["sample_id"], "filter", QualityFilterFailed("; ".join(failed)), first_uri)
            else:
                writer.write(sample.arrays, {**_index_fields(row), **sample.fields, "modalities": sample.modalities})
                partial += bool(missing_partners(row.get("layout"), sample.modalities))
        if on_sample is not None:
            on_sample()
    return partial


_COPIED = (
    "sample_id",
    "source",
    "layout",
    "split",
    "caption",
    "label",
    "sensor",
    "fx",
    "baseline_m",
    "fps",
    "anchor_s",
)


def _index_fields(row: dict) -> dict:
    # Path columns come from the registry at call time: a modality registered later has one too.
    return {k: row.get(k) for k in (*_COPIED, *uri_columns().values())}
