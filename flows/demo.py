"""``bindset demo``: synthesize each spatial layout, build them into one dataset through the
build-dataset flow, summarize it."""

from __future__ import annotations

from pathlib import Path

from pipelines.build import build_dataset
from pipelines.config import BuildConfig
from pipelines.sources import create_source
from pipelines.summary import dataset_summary, format_summary
from pipelines.synth import synthesize

DEMO_LAYOUTS = ("sunrgbd", "llvip", "image-text")


def run_demo(
    out: str | Path, n: int = 6, seed: int = 0, progress: bool = True, executor: str = "auto", use_prefect: bool = True
) -> str:
    """Synthesize, then build through the ``build-dataset`` Prefect flow (a temporary Prefect server;
    ``auto``: in-process for the demo's few samples, Ray with ``executor="ray"``), or the plain path
    without Prefect."""
    out = Path(out).resolve()
    sources = []
    for i, layout in enumerate(DEMO_LAYOUTS):
        src_root = out / "sources" / layout
        if not (src_root / ".complete").exists():
            synthesize(src_root, layout, n, seed=seed + i)
            (src_root / ".complete").touch()
        sources.append({"layout": layout, "root": str(src_root), "name": f"demo-{layout}"})
    dataset = out / "dataset"
    run_config = {"dataset": {"out": str(dataset), "shard_size": 8}, "sources": sources, "executor": {"kind": executor}}
    if use_prefect:
        from flows.build_flow import build_dataset_flow

        result = build_dataset_flow(config=run_config)
        lines = [
            f"built {result['stored']} samples ({result['rejected']} rejected) in {result['seconds']:.1f} s "
            f"through the build-dataset Prefect flow; executor {result['executor']}"
        ]
    else:
        from flows.executor_choice import AutoExecutor

        chosen = AutoExecutor(executor)
        report = build_dataset(
            [create_source(s["layout"], s["root"], name=s["name"]) for s in sources],
            dataset,
            BuildConfig(shard_size=8),
            executor=chosen,
            progress=progress,
        )
        lines = [*report.lines(), f"executor: {chosen.description}"]
    return "\n".join(
        [
            *lines,
            "",
            format_summary(dataset_summary(dataset)),
            "",
            f"dataset: {dataset}",
            f"query it: python -c \"import storage; print(storage.scan_index('{dataset}').collect())\"",
        ]
    )
