"""Builds on a real two-node Ray cluster on loopback (head + worker started with `ray start`)."""

import os
import signal
import subprocess
import sys
import time

import pytest

ray = pytest.importorskip("ray")

from pipelines.build import build_dataset  # noqa: E402
from pipelines.config import BuildConfig  # noqa: E402
from pipelines.executors import LocalExecutor  # noqa: E402
from pipelines.executors.ray import RayExecutor  # noqa: E402
from pipelines.sources import create_source  # noqa: E402
from pipelines.synth import synthesize  # noqa: E402
from storage import format as fmt  # noqa: E402
from storage.catalog import content_hash, load_catalog  # noqa: E402


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("src")
    synthesize(root / "sun", "sunrgbd", 16, seed=11)
    return root


def _sun(sources):
    return [create_source("sunrgbd", sources / "sun")]


def test_two_node_build_equals_local_build(ray_cluster, sources, tmp_path):
    cfg = BuildConfig(shard_size=2)
    build_dataset(_sun(sources), tmp_path / "local", cfg, executor=LocalExecutor(), progress=False)
    report = build_dataset(_sun(sources), tmp_path / "ray", cfg, executor=RayExecutor(max_in_flight=4), progress=False)
    assert report.stored == 16
    shards = load_catalog(tmp_path / "ray")["shards"]
    assert len({entry["node_id"] for entry in shards.values()}) == 2, "shards were not built on both nodes"
    local_shards = load_catalog(tmp_path / "local")["shards"]
    for name, entry in shards.items():
        assert entry["sha256"] == local_shards[name]["sha256"], name
        assert entry["index_sha256"] == local_shards[name]["index_sha256"], name
    assert content_hash(tmp_path / "ray") == content_hash(tmp_path / "local")


def test_sigkilled_worker_is_retried_and_dataset_is_complete(ray_cluster, sources, tmp_path):
    cfg = BuildConfig(shard_size=8)
    reference = tmp_path / "ref"
    build_dataset(_sun(sources), reference, cfg, executor=LocalExecutor(), progress=False)
    out = tmp_path / "ds"
    killed = []

    def kill_one_worker():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not killed:
            found = subprocess.run(["pgrep", "-f", "ray::_build_shard_task"], capture_output=True, text=True)
            pids = [int(p) for p in found.stdout.split()]
            if pids and any((out / fmt.TMP_DIR).glob("*/*.h5")):
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])
            time.sleep(0.01)

    import threading

    killer = threading.Thread(target=kill_one_worker)
    killer.start()
    report = build_dataset(_sun(sources), out, cfg, executor=RayExecutor(max_retries=3), progress=False)
    killer.join()
    assert killed, "no shard-building worker was found to kill"
    assert report.stored == 16
    assert content_hash(out) == content_hash(reference)


def test_killed_driver_rerun_gives_the_uninterrupted_content(ray_cluster, sources, tmp_path):
    cfg_args = ["--shard-size", "2", "--executor", "ray", "--ray-address", ray_cluster, "--no-progress"]
    out = tmp_path / "ds"
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    cmd = [sys.executable, "-m", "flows.cli", "build", str(sources / "sun"), "--layout", "sunrgbd", "--out", str(out)]
    proc = subprocess.Popen([*cmd, *cfg_args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while len(list((out / fmt.INDEX_DIR).glob("*.parquet"))) < 2:
        assert time.monotonic() < deadline and proc.poll() is None, "build did not commit shards"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert len(list((out / fmt.INDEX_DIR).glob("*.parquet"))) < 8
    rerun = subprocess.run([*cmd, *cfg_args], env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    reference = tmp_path / "ref"
    build_dataset(_sun(sources), reference, BuildConfig(shard_size=2), executor=LocalExecutor(), progress=False)
    assert content_hash(out) == content_hash(reference)
    import storage

    ids = storage.scan_index(out).collect()["sample_id"]
    assert ids.len() == 16 and ids.n_unique() == 16


def test_unreachable_root_is_named(ray_cluster, tmp_path, monkeypatch):
    executor = RayExecutor()
    import pipelines.executors.ray as ray_mod

    # A node that cannot see the root: the probe reads a different path than the driver wrote.
    monkeypatch.setattr(ray_mod, "_probe_root_task", lambda root, token: ("node-x", False, "No such file"))
    with pytest.raises(RuntimeError, match="not reachable from every Ray node"):
        executor.check_root_reachable(tmp_path)
