"""Bad inputs fail before anything starts: one line naming the key or URL, exit code 2, no traceback,
no Prefect database, server or flow run. The CLI runs as a user runs it, in a subprocess."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.synth import synthesize


@pytest.fixture(scope="module")
def llvip_src(tmp_path_factory):
    root = tmp_path_factory.mktemp("llvip-src")
    synthesize(root, "llvip", 4, seed=3)
    return root


def _bindset(args: list[str], home: Path, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**(env if env is not None else os.environ), "PREFECT_HOME": str(home)}
    env.pop("PREFECT_API_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120
    )


def _refused(proc: subprocess.CompletedProcess, home: Path, *expected: str) -> str:
    """Exit 2, one line on stderr holding every expected piece, and no Prefect state created."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("bindset ") and ": error: " in lines[0]
    for piece in expected:
        assert piece in lines[0], (piece, lines[0])
    assert not (home / "prefect.db").exists(), "a Prefect server started (its database exists)"
    return lines[0]


def _toml(path: Path, body: str) -> Path:
    path.write_text(body)
    return path


def test_misspelt_run_config_key(llvip_src, tmp_path):
    cfg = _toml(tmp_path / "bad.toml", f'[dataset]\nout = "ds"\n[[sources]]\nlayout = "llvip"\nrooot = "{llvip_src}"\n')
    line = _refused(
        _bindset(["run", str(cfg)], tmp_path / "ph", tmp_path),
        tmp_path / "ph",
        "bad.toml",
        "sources[0].rooot",
        "unknown key",
    )
    assert "sources[0].root: missing" in line


def test_wrong_types_name_key_and_value(llvip_src, tmp_path):
    cfg = _toml(
        tmp_path / "bad.toml",
        f'[dataset]\nout = "ds"\nshard_size = "big"\n[[sources]]\nlayout = "llvip"\nroot = "{llvip_src}"\n',
    )
    _refused(
        _bindset(["run", str(cfg)], tmp_path / "ph", tmp_path),
        tmp_path / "ph",
        "bad.toml",
        "dataset.shard_size = 'big'",
    )
    overrides = _toml(tmp_path / "pre.toml", '[depth]\nmax_depth_m = "ten"\n')
    _refused(
        _bindset(
            ["build", str(llvip_src), "--layout", "llvip", "--out", str(tmp_path / "ds"), "--config", str(overrides)],
            tmp_path / "ph",
            tmp_path,
        ),
        tmp_path / "ph",
        "pre.toml",
        "depth.max_depth_m = 'ten'",
        "expected float",
    )


@pytest.mark.parametrize("url", ["s3:/x", "s3://", "gs://ab/ds", "ftp://host/ds"])
def test_malformed_or_unsupported_url(llvip_src, tmp_path, url):
    proc = _bindset(["build", str(llvip_src), "--layout", "llvip", "--out", url], tmp_path / "ph", tmp_path)
    _refused(proc, tmp_path / "ph", url)
    assert not (tmp_path / "s3:").exists(), "the URL became a local folder"


def test_malformed_url_in_run_config(llvip_src, tmp_path):
    cfg = _toml(
        tmp_path / "bad.toml", f'[dataset]\nout = "s3:/x"\n[[sources]]\nlayout = "llvip"\nroot = "{llvip_src}"\n'
    )
    _refused(
        _bindset(["run", str(cfg)], tmp_path / "ph", tmp_path), tmp_path / "ph", "bad.toml", "dataset.out", "s3:/x"
    )


def test_missing_bucket(s3_server, llvip_src, tmp_path):
    url = "s3://no-such-bucket-xyz/ds"
    proc = _bindset(["build", str(llvip_src), "--layout", "llvip", "--out", url], tmp_path / "ph", tmp_path)
    _refused(proc, tmp_path / "ph", "--out", url, "does not exist")
    cfg = _toml(
        tmp_path / "bad.toml",
        f'[dataset]\nout = "{tmp_path / "ds"}"\n[[sources]]\nlayout = "llvip"\nroot = "s3://no-such-bucket-xyz/src"\n',
    )
    _refused(
        _bindset(["run", str(cfg)], tmp_path / "ph", tmp_path),
        tmp_path / "ph",
        "bad.toml",
        "sources[0].root",
        "s3://no-such-bucket-xyz",
    )
    assert not (tmp_path / "ds").exists(), "the output was touched before the sources were checked"


def test_missing_credentials(s3_server, s3_bucket, llvip_src, tmp_path):
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE")
    }
    # No instance metadata either: obstore does not read AWS_EC2_METADATA_DISABLED, so its metadata
    # endpoint is pointed at a closed loopback port (nothing leaves the machine).
    env.update(
        AWS_EC2_METADATA_DISABLED="true",
        AWS_METADATA_ENDPOINT="http://127.0.0.1:9",
        AWS_CONFIG_FILE=str(tmp_path / "none"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
    )
    proc = _bindset(
        ["build", str(llvip_src), "--layout", "llvip", "--out", f"s3://{s3_bucket}/ds"],
        tmp_path / "ph",
        tmp_path,
        env=env,
    )
    _refused(proc, tmp_path / "ph", f"s3://{s3_bucket}", "credentials")
    assert s3_server.keys(s3_bucket) == []


def test_bad_storage_option_and_missing_source(tmp_path):
    proc = _bindset(["inspect", str(tmp_path), "--storage-option", "aws_region"], tmp_path / "ph", tmp_path)
    _refused(proc, tmp_path / "ph", "--storage-option 'aws_region'", "key=value")
    proc = _bindset(
        ["build", str(tmp_path / "nope"), "--layout", "llvip", "--out", str(tmp_path / "ds")], tmp_path / "ph", tmp_path
    )
    _refused(proc, tmp_path / "ph", "SOURCE", "does not exist")


def test_successful_build_is_quiet_and_recorded(llvip_src, tmp_path):
    """The default path with nothing preset: no ERROR line (the server's telemetry heartbeat fails
    offline unless the CLI turns it off), the temporary server records the run, the auto executor
    says what it chose, and the output root is a URL-free local folder."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in ("PREFECT_SERVER_ANALYTICS_ENABLED", "DO_NOT_TRACK", "RAY_USAGE_STATS_ENABLED", "PREFECT_LOGGING_LEVEL")
    }
    proc = _bindset(
        ["build", str(llvip_src), "--layout", "llvip", "--out", str(tmp_path / "ds")],
        tmp_path / "ph",
        tmp_path,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert "ERROR" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert "Beginning flow run" in proc.stderr
    assert "executor: local (auto: 1 shard(s), 4 samples to build" in proc.stdout
    assert "samples stored: 4" in proc.stdout
    assert (tmp_path / "ph" / "prefect.db").exists()


def test_urls_stay_urls_and_storage_options_layer(tmp_path):
    """Roots in a run config keep their URL (pydantic's Path would make s3://b/k a folder s3:/b/k);
    --storage-option wins over the config's [storage] options."""
    from flows.config import load_run_config
    from flows.runtime import apply_storage_options, set_cli_storage_options
    from storage.location import as_location

    cfg = _toml(
        tmp_path / "run.toml",
        '[dataset]\nout = "s3://bkt-one/ds"\n[[sources]]\nlayout = "llvip"\n'
        'root = "gs://bkt-two/src"\n[[sources]]\nlayout = "llvip"\nroot = "rel"\n'
        '[storage]\noptions = { aws_region = "eu-west-1", aws_allow_http = true }\n',
    )
    run = load_run_config(cfg)
    assert run.dataset.out == "s3://bkt-one/ds" and run.sources[0].root == "gs://bkt-two/src"
    assert run.sources[1].root == str(tmp_path / "rel")  # relative to the file
    assert run.executor.kind == "auto"
    try:
        set_cli_storage_options({"aws_region": "us-east-2"})
        apply_storage_options(run.storage.strings())
        assert as_location(run.dataset.out).options == {"aws_region": "us-east-2", "aws_allow_http": "true"}
    finally:
        set_cli_storage_options({})


@pytest.mark.parametrize("path", ["default", "--no-prefect"])
@pytest.mark.parametrize(
    "body, expected",
    [
        ('[image]\nsize = "big"\n', "image.size = 'big'"),
        ('[thermal]\npercentiles = ["a", 99]\n', "thermal.percentiles.0 = 'a'"),
    ],
)
def test_bad_preprocessing_values_fail_before_the_build(llvip_src, tmp_path, path, body, expected):
    overrides = _toml(tmp_path / "pre.toml", body)
    args = ["build", str(llvip_src), "--layout", "llvip", "--out", str(tmp_path / "ds"), "--config", str(overrides)]
    proc = _bindset(args + ([path] if path != "default" else []), tmp_path / "ph", tmp_path)
    _refused(proc, tmp_path / "ph", "pre.toml", expected)
    assert not (tmp_path / "ds").exists(), "the build started"


def test_bad_preprocessing_value_in_run_config(llvip_src, tmp_path):
    cfg = _toml(
        tmp_path / "bad.toml",
        f'[dataset]\nout = "ds"\n[[sources]]\nlayout = "llvip"\nroot = "{llvip_src}"\n'
        '[preprocess.thermal]\npercentiles = ["a", 99]\n',
    )
    _refused(_bindset(["run", str(cfg)], tmp_path / "ph", tmp_path), tmp_path / "ph", "bad.toml", "thermal.percentiles")
