"""Against a real `prefect server` on 127.0.0.1 (temporary PREFECT_HOME, SQLite): schedule the build
flow with cron, trigger a run, see it complete with its artifact and its dataset; stop cleanly."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

import storage
from pipelines.synth import synthesize

PREFECT = str(Path(sys.executable).with_name("prefect"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory):
    home = tmp_path_factory.mktemp("prefect-home")
    port = _free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
    }
    env.pop("PREFECT_API_URL", None)
    log = open(home / "server.log", "w")
    proc = subprocess.Popen(
        [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/api"

    def healthy():
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                return r.status == 200
        except OSError:
            return proc.poll() is not None and pytest.fail(
                f"prefect server exited: {(home / 'server.log').read_text()}"
            )

    try:
        _wait(healthy, 120, "the Prefect server to become healthy")
        yield {"url": url, "env": {**env, "PREFECT_API_URL": url}}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
    assert proc.returncode is not None


def _api(url: str, path: str, body: dict) -> list | dict:
    """POST to the server's REST API; a busy SQLite server answers 503 now and then: retry those."""
    for attempt in range(10):
        req = urllib.request.Request(
            f"{url}{path}", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as exc:
            if exc.code != 503 or attempt == 9:
                raise AssertionError(f"POST {path}: {exc.code} {exc.read()[:500]!r}") from exc
            time.sleep(1.0)


def test_scheduled_build_runs_with_artifact_and_dataset(prefect_server, tmp_path):
    url, env = prefect_server["url"], prefect_server["env"]
    synthesize(tmp_path / "src", "llvip", 4, seed=9)
    config = tmp_path / "nightly.toml"
    config.write_text(
        '[dataset]\nout = "ds"\nshard_size = 2\n\n[[sources]]\nlayout = "llvip"\nroot = "src"\n\n'
        '[executor]\nkind = "local"\n\n[schedule]\ncron = "0 3 * * *"\n'
    )
    serve = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "schedule", str(config), "--name", "nightly"],
        env=env,
        cwd=tmp_path,
        stdout=open(tmp_path / "serve.log", "w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deployment = _wait(lambda: next(iter(_api(url, "/deployments/filter", {})), None), 120, "the served deployment")
        assert deployment["name"] == "nightly"
        assert [s["schedule"]["cron"] for s in deployment["schedules"]] == ["0 3 * * *"]
        assert deployment["parameters"]["config_path"] == str(config.resolve())

        run = _api(url, f"/deployments/{deployment['id']}/create_flow_run", {})

        def finished():
            state = _api(url, "/flow_runs/filter", {"flow_runs": {"id": {"any_": [run["id"]]}}})[0]["state"]
            return state if state["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") else None

        state = _wait(finished, 300, "the triggered flow run")
        assert state["type"] == "COMPLETED", (tmp_path / "serve.log").read_text()[-3000:]
        artifacts = _api(
            url,
            "/artifacts/filter",
            {"artifacts": {"key": {"any_": ["build-dataset-summary"]}}, "flow_runs": {"id": {"any_": [run["id"]]}}},
        )
        assert artifacts and "samples stored | 4" in artifacts[0]["data"]
        assert storage.scan_index(tmp_path / "ds").collect().height == 4

        overview = subprocess.run(
            [sys.executable, "-m", "flows.cli", "flows", "--json"], env=env, capture_output=True, text=True, timeout=120
        )
        listed = json.loads(overview.stdout)
        assert any(d["name"] == "build-dataset/nightly" for d in listed["deployments"])
        assert any(r["state"] == "Completed" for r in listed["runs"])
    finally:
        os.killpg(serve.pid, signal.SIGINT)
        try:
            serve.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(serve.pid, signal.SIGKILL)
            serve.wait()
