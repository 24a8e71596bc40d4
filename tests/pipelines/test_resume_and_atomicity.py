"""Determinism, atomic commits under SIGKILL, resume, config changes and concurrent builds."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipelines.build import ConfigMismatch, build_dataset
from pipelines.config import BuildConfig
from pipelines.sources import create_source
from pipelines.synth import synthesize
from storage import format as fmt
from storage import scan_index
from storage.catalog import content_hash, load_catalog
from storage.locks import DatasetLocked


@pytest.fixture(scope="module")
def sun_source(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sun")
    synthesize(root, "sunrgbd", 12, seed=3)
    return root


def _build(src: Path, out: Path, shard_size: int = 3, **kw):
    return build_dataset([create_source("sunrgbd", src)], out, BuildConfig(shard_size=shard_size), progress=False, **kw)


def test_same_source_twice_gives_identical_shards_and_index(sun_source, tmp_path):
    a = _build(sun_source, tmp_path / "a")
    b = _build(sun_source, tmp_path / "b")
    assert a.stored == b.stored == 12
    assert content_hash(tmp_path / "a") == content_hash(tmp_path / "b")
    ia = scan_index(tmp_path / "a").collect()
    ib = scan_index(tmp_path / "b").collect()
    assert ia.equals(ib)
    assert ia["sample_id"].n_unique() == 12


def test_rerun_builds_nothing_and_changed_config_is_refused(sun_source, tmp_path):
    _build(sun_source, tmp_path / "ds")
    again = _build(sun_source, tmp_path / "ds")
    assert again.summaries == [] and again.skipped_shards == 4
    with pytest.raises(ConfigMismatch, match="--overwrite"):
        _build(sun_source, tmp_path / "ds", shard_size=5)
    rebuilt = _build(sun_source, tmp_path / "ds", shard_size=5, overwrite=True)
    assert rebuilt.stored == 12 and rebuilt.planned_shards == 3
    assert load_catalog(tmp_path / "ds")["config"]["shard_size"] == 5


def test_grown_sources_append_new_shards_and_keep_committed_ones(tmp_path):
    src = tmp_path / "src"
    synthesize(src, "sunrgbd", 6, seed=3)
    first = _build(src, tmp_path / "ds", shard_size=4)
    assert first.planned_shards == 2
    before = {p.name: p.read_bytes() for p in (tmp_path / "ds" / fmt.SHARDS_DIR).iterdir()}
    synthesize(tmp_path / "more", "sunrgbd", 9, seed=3)  # samples 0..5 identical, 6..8 new
    for scene in (tmp_path / "more").glob("*/*/*"):
        target = src / scene.relative_to(tmp_path / "more")
        if not target.exists():
            scene.rename(target)
    grown = _build(src, tmp_path / "ds", shard_size=4)
    assert grown.skipped_shards == 2 and [s.shard_id for s in grown.summaries] == [2]
    assert grown.stored == 3
    after = {p.name: p.read_bytes() for p in (tmp_path / "ds" / fmt.SHARDS_DIR).iterdir()}
    assert all(after[name] == data for name, data in before.items())
    assert scan_index(tmp_path / "ds").collect()["sample_id"].n_unique() == 9
    # Removing a source sample is a change the dataset cannot absorb silently.
    import shutil

    shutil.rmtree(next(p for p in src.glob("*/*/*") if p.is_dir()))
    with pytest.raises(ConfigMismatch, match="gone from the sources"):
        _build(src, tmp_path / "ds", shard_size=4)


def _wait_for(predicate, timeout: float = 120.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "flows.cli", *args]


def test_sigkill_mid_shard_leaves_no_partial_shard_and_rerun_completes(sun_source, tmp_path):
    out = tmp_path / "ds"
    proc = subprocess.Popen(
        _cli(
            "build",
            str(sun_source),
            "--layout",
            "sunrgbd",
            "--out",
            str(out),
            "--shard-size",
            "2",
            "--executor",
            "local",
            "--no-progress",
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    # Kill once one shard is committed and the next one is being written in _tmp.
    _wait_for(
        lambda: len(list((out / fmt.INDEX_DIR).glob("*.parquet"))) >= 1 and any((out / fmt.TMP_DIR).glob("*/*.h5")),
        what="a committed shard and one in progress",
    )
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    committed = sorted(p.stem for p in (out / fmt.INDEX_DIR).glob("*.parquet"))
    assert 1 <= len(committed) < 6
    # Every visible index has its complete shard; nothing half-written is visible.
    for name in committed:
        assert (out / fmt.SHARDS_DIR / f"{name}.h5").exists()
    assert scan_index(out).collect().height == 2 * len(committed)

    report = _build(sun_source, out, shard_size=2)
    assert report.skipped_shards == len(committed)
    assert len(report.summaries) == 6 - len(committed)
    assert sorted(s.shard_id for s in report.summaries) == [i for i in range(6) if f"{i:05d}" not in committed]
    reference = tmp_path / "ref"
    _build(sun_source, reference, shard_size=2)
    assert content_hash(out) == content_hash(reference)
    assert not (out / fmt.TMP_DIR).exists() or not any((out / fmt.TMP_DIR).iterdir())
    assert len(load_catalog(out)["shards"]) == 6


def test_second_concurrent_build_is_refused_naming_the_holder(sun_source, tmp_path):
    out = tmp_path / "ds"
    proc = subprocess.Popen(
        _cli(
            "build",
            str(sun_source),
            "--layout",
            "sunrgbd",
            "--out",
            str(out),
            "--shard-size",
            "1",
            "--executor",
            "local",
            "--no-progress",
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for(lambda: (out / fmt.LOCKS_DIR / "build.lock").exists(), what="the first build's lock")
        with pytest.raises(DatasetLocked, match=rf"pid {proc.pid} on "):
            _build(sun_source, out, shard_size=1)
    finally:
        proc.kill()
        proc.wait()
    # The dead holder's lock is stale: the next build takes it over and completes.
    _build(sun_source, out, shard_size=1)
    assert scan_index(out).collect().height == 12
