"""`--retry-rejects`: transient rejects (an injected EIO on read) are recovered into new shards,
permanent ones (a truncated JPEG) stay; and the recorded plan keeps appended samples in their own
shards across reruns."""

import shutil

import polars as pl
import pytest

from pipelines.build import build_dataset
from pipelines.config import BuildConfig
from pipelines.executors import LocalExecutor
from pipelines.sources import create_source
from pipelines.synth import synthesize
from storage import format as fmt
from storage import scan_index, scan_rejects
from storage.catalog import load_catalog


@pytest.fixture
def llvip(tmp_path):
    root = tmp_path / "src"
    synthesize(root, "llvip", 6, seed=3)
    return root


def _build(src, out, **kwargs):
    return build_dataset(
        [create_source("llvip", src, name="llvip")],
        out,
        BuildConfig(shard_size=4),
        executor=LocalExecutor(),
        progress=False,
        **kwargs,
    )


def test_transient_rejects_are_recovered_and_permanent_ones_stay(llvip, tmp_path, monkeypatch):
    visible = sorted((llvip / "visible").rglob("*.jpg"))
    flaky = visible[1].relative_to(llvip).as_posix()
    truncated = visible[4]
    truncated.write_bytes(truncated.read_bytes()[:200])
    monkeypatch.setenv("BINDSET_FAULTS", f"read:{flaky}=transient")
    monkeypatch.setenv("BINDSET_FAULTS_DIR", str(tmp_path / "faults"))
    out = tmp_path / "ds"

    first = _build(llvip, out)
    assert first.stored == 4 and first.rejected == 2
    rejects = scan_rejects(out).collect().sort("input_path")
    by_path = dict(zip(rejects["input_path"], rejects["transient"]))
    assert by_path[flaky] is True, "an EIO on read is transient"
    assert by_path[truncated.relative_to(llvip).as_posix()] is False, "a truncated file is permanent"

    second = _build(llvip, out, retry_rejects=True)  # the injected fault fires once, as a flaky read does
    assert second.retried == 1 and second.stored == 1
    assert any("retried 1 transient rejects: 1 recovered, 0 still rejected" in line for line in second.lines())
    assert [s.shard_id for s in second.summaries] == [2], "recovered samples go to a new shard"
    index = scan_index(out).collect()
    assert index.height == 5 and index["sample_id"].n_unique() == 5
    standing = scan_rejects(out).collect()
    assert standing["input_path"].to_list() == [truncated.relative_to(llvip).as_posix()]
    assert scan_rejects(out, standing=False).collect().height == 2, "the history keeps the first attempt"
    manifest = pl.read_parquet(out / fmt.MANIFEST_FILE)
    assert manifest.filter(pl.col("uri_image") == flaky)["shard"].to_list() == [2]
    assert load_catalog(out)["planned_shards"] == 3

    third = _build(llvip, out, retry_rejects=True)  # nothing transient is left
    assert third.summaries == [] and third.retried == 0


def test_appended_samples_keep_their_planned_shard_across_reruns(llvip, tmp_path):
    out = tmp_path / "ds"
    _build(llvip, out)  # 6 samples: shards 0 (4) and 1 (2)
    for sub in ("visible", "infrared"):  # two new pairs under new names
        for i, src in enumerate(sorted((llvip / sub / "train").glob("*.jpg"))[:2]):
            shutil.copy(src, src.with_name(f"new{i}.jpg"))
    grown = _build(llvip, out)
    assert [s.shard_id for s in grown.summaries] == [2], "appended samples get a shard of their own"
    # The next rerun reads the plan back instead of re-chunking the grown manifest (which would put
    # the appended samples into committed shard 1 and never build shard 2 after a crash).
    (out / fmt.INDEX_DIR / "00002.parquet").unlink()
    rerun = _build(llvip, out)
    assert [s.shard_id for s in rerun.summaries] == [2]
    assert scan_index(out).collect()["sample_id"].n_unique() == 8
