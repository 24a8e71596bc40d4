"""``bindset demo``: synthesize each spatial layout, build them into one dataset, summarize it."""

from __future__ import annotations

from pathlib import Path

from pipelines.build import build_dataset
from pipelines.config import BuildConfig
from pipelines.sources import create_source
from pipelines.summary import dataset_summary, format_summary
from pipelines.synth import synthesize

DEMO_LAYOUTS = ("sunrgbd", "llvip", "image-text")


def run_demo(out: str | Path, n: int = 6, seed: int = 0, progress: bool = True) -> str:
    out = Path(out).resolve()
    sources = []
    for i, layout in enumerate(DEMO_LAYOUTS):
        src_root = out / "sources" / layout
        if not src_root.exists():
            synthesize(src_root, layout, n, seed=seed + i)
        sources.append(create_source(layout, src_root, name=f"demo-{layout}"))
    dataset = out / "dataset"
    report = build_dataset(sources, dataset, BuildConfig(shard_size=8), progress=progress)
    return "\n".join(
        [
            *report.lines(),
            "",
            format_summary(dataset_summary(dataset)),
            "",
            f"dataset: {dataset}",
            f"query it: python -c \"import storage; print(storage.scan_index('{dataset}').collect())\"",
        ]
    )
