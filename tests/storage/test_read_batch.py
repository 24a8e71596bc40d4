"""Batched reads (the embed step's path) equal per-sample reads, for every modality."""

import numpy as np
import pytest

import storage
from pipelines.build import build_dataset
from pipelines.config import BuildConfig
from pipelines.sources import create_source
from pipelines.synth import synthesize
from storage.reader import DatasetReader
from storage.shard import ShardReader


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    root = tmp_path_factory.mktemp("batch")
    layouts = {"sunrgbd": {}, "llvip": {}, "image-text": {}, "audioset": {"duration": 4.0}, "ego4d": {"duration": 8.0}}
    for layout, options in layouts.items():
        synthesize(root / layout, layout, 1 if layout == "ego4d" else 3, seed=5, **options)
    build_dataset(
        [create_source(layout, root / layout) for layout in layouts],
        root / "ds",
        BuildConfig(shard_size=5),
        progress=False,
    )
    return root / "ds"


def test_read_batch_equals_stacked_single_reads_for_every_modality(mixed):
    index = storage.scan_index(mixed).select("shard", "row", "modalities").collect()
    seen = set()
    with DatasetReader(mixed) as reader:
        for (shard,), part in index.group_by(["shard"], maintain_order=True):
            for modality in ("image", "depth", "thermal", "text", "video", "audio", "imu"):
                rows = [r for r, m in zip(part["row"], part["modalities"]) if modality in m]
                if not rows:
                    continue
                seen.add(modality)
                # consecutive rows (one slice), and the same rows reversed (a fancy read, caller's order kept)
                for order in (rows, rows[::-1]):
                    batch = reader.read_batch(shard, order, modality)
                    single = np.stack([reader.read(shard, r)[modality] for r in order])
                    assert batch.dtype == single.dtype and batch.shape == single.shape
                    np.testing.assert_array_equal(batch, single)
    assert seen == {"image", "depth", "thermal", "text", "video", "audio", "imu"}


def test_read_stored_rows_rejects_bad_rows(mixed):
    with ShardReader(mixed, 0) as shard:
        group = shard.index["modalities"][0][0]
        with pytest.raises(IndexError, match="out of range"):
            shard.read_stored_rows([0, len(shard)], group)
        with pytest.raises(ValueError, match="must not repeat"):
            shard.read_stored_rows([1, 0, 1], group)
        with pytest.raises(KeyError, match="stores no 'nothing'"):
            shard.read_stored_rows([0], "nothing")
