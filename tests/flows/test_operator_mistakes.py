"""Operator mistakes and write failures end in one line and a non-zero exit, with nothing written
(the CLI as a subprocess, as a user runs it)."""

import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.synth import synthesize
from pipelines.validate import validate_dataset

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def llvip(tmp_path_factory):
    root = tmp_path_factory.mktemp("llvip")
    synthesize(root, "llvip", 4, seed=2)
    return root


def _bindset(*args, preexec_fn=None):
    env = {**os.environ, "PREFECT_HOME": os.environ.get("PREFECT_HOME", "")}
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=preexec_fn,
    )


def _one_line_error(result, rc: int = 2) -> str:
    assert result.returncode == rc, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith("bindset build: error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def test_out_is_a_file(llvip, tmp_path):
    target = tmp_path / "not-a-dir"
    target.write_text("x")
    line = _one_line_error(_bindset("build", str(llvip), "--layout", "llvip", "--out", str(target), "--no-prefect"))
    assert f"--out {target} is a file, not a directory" in line


def test_out_with_a_missing_parent_writes_nothing(llvip, tmp_path):
    out = tmp_path / "missing" / "deeper" / "ds"
    line = _one_line_error(_bindset("build", str(llvip), "--layout", "llvip", "--out", str(out), "--no-prefect"))
    assert "parent folder" in line and "does not exist" in line
    assert not (tmp_path / "missing").exists()


def test_source_root_that_is_a_file(tmp_path):
    source = tmp_path / "photo.jpg"
    source.write_bytes(b"\xff\xd8")
    line = _one_line_error(
        _bindset("build", str(source), "--layout", "llvip", "--out", str(tmp_path / "ds"), "--no-prefect")
    )
    assert "is a file; layout llvip reads a folder" in line
    assert not (tmp_path / "ds").exists()


@pytest.mark.parametrize("prefect", [False, True], ids=["plain", "prefect"])
def test_wrong_layout_names_what_it_looked_for_and_the_layout_that_matches(llvip, tmp_path, prefect):
    out = tmp_path / "ds"
    args = ["build", str(llvip), "--layout", "sunrgbd", "--out", str(out)] + ([] if prefect else ["--no-prefect"])
    line = _one_line_error(_bindset(*args))
    assert "layout sunrgbd found no samples in" in line
    assert "it looks for <scene>/image/*.jpg" in line and "the tree matches layout llvip" in line
    assert not out.exists(), "nothing is written for a refused build"


def test_a_file_size_limit_fails_the_build_cleanly_and_a_rerun_completes(llvip, tmp_path):
    """EFBIG (RLIMIT_FSIZE, SIGXFSZ ignored: no root or mount needed) while HDF5 writes a shard: one
    line naming shard, path and reason, exit 1, no segfault, nothing committed; the Prefect server's
    own database would hit the same limit, so this runs the plain path."""
    out = tmp_path / "ds"

    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, 300_000))

    args = [
        "build",
        str(llvip),
        "--layout",
        "llvip",
        "--out",
        str(out),
        "--shard-size",
        "2",
        "--no-prefect",
        "--no-progress",
    ]
    line = _one_line_error(_bindset(*args, preexec_fn=limit_file_size), rc=1)
    assert "shard 00000: cannot write" in line and "File too large (errno 27: EFBIG)" in line
    assert not list((out / "index").glob("*.parquet")), "no shard is committed"
    rerun = _bindset(*args)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert validate_dataset(out).ok


def test_read_only_output_is_refused(llvip, tmp_path):
    """A read-only file system under --out (a read-only tmpfs: the tests run as root here, where file
    modes do not stop writes)."""
    mount_point = tmp_path / "ro"
    mount_point.mkdir()
    if os.geteuid() == 0:
        made = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(mount_point)], capture_output=True
        )
        if made.returncode != 0:
            pytest.skip(f"cannot mount a read-only tmpfs here: {made.stderr.decode().strip()}")
    else:
        mount_point.chmod(0o555)
    try:
        line = _one_line_error(
            _bindset("build", str(llvip), "--layout", "llvip", "--out", str(mount_point / "ds"), "--no-prefect")
        )
        assert "cannot be written" in line and ("read-only file system" in line or "permission denied" in line)
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", str(mount_point)], capture_output=True)


def test_retry_rejects_from_the_command_line(llvip, tmp_path):
    """A read that fails once (an injected EIO) is a transient reject; --retry-rejects recovers it."""
    flaky = sorted((llvip / "visible").rglob("*.jpg"))[0].relative_to(llvip).as_posix()
    out = tmp_path / "ds"
    args = ["build", str(llvip), "--layout", "llvip", "--out", str(out), "--no-prefect", "--no-progress"]
    env_faults = {"BINDSET_FAULTS": f"read:{flaky}=transient", "BINDSET_FAULTS_DIR": str(tmp_path / "faults")}
    first = subprocess.run(
        [sys.executable, "-m", "flows.cli", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, **env_faults},
        timeout=300,
    )
    assert first.returncode == 0 and "rejected: 1" in first.stdout, first.stdout + first.stderr
    second = subprocess.run(
        [sys.executable, "-m", "flows.cli", *args, "--retry-rejects"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, **env_faults},
        timeout=300,
    )
    assert second.returncode == 0, second.stderr[-2000:]
    import storage

    assert storage.scan_index(out).collect().height == 4
    assert storage.scan_rejects(out).collect().height == 0


def test_a_build_that_rejects_most_samples_exits_1_with_the_top_reasons(tmp_path):
    """Every visible JPEG truncated: the shards commit (rejects recorded), but the command fails."""
    src = tmp_path / "src"
    synthesize(src, "llvip", 4, seed=5)
    for jpg in (src / "visible").rglob("*.jpg"):
        jpg.write_bytes(jpg.read_bytes()[:100])
    out = tmp_path / "ds"
    result = _bindset("build", str(src), "--layout", "llvip", "--out", str(out), "--no-prefect", "--no-progress")
    line = _one_line_error(result, rc=1)
    assert "4 of 4 samples rejected (100% > --max-reject-fraction 0.5); top reasons: decode:" in line
    assert (out / "index" / "00000.parquet").exists(), "the shards are committed either way"
    relaxed = _bindset(
        "build",
        str(src),
        "--layout",
        "llvip",
        "--out",
        str(tmp_path / "ds2"),
        "--no-prefect",
        "--no-progress",
        "--max-reject-fraction",
        "1",
    )
    assert relaxed.returncode == 0, relaxed.stderr[-1000:]
