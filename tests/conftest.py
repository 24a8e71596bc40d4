import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_root() -> Path | None:
    candidate = Path(os.environ.get("BINDSET_SHARED", REPO.parent / "shared"))
    return candidate if (candidate / "samples").is_dir() else None


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    root = shared_root()
    if root is None:
        pytest.skip("../shared not found: real-media parity tests need the shared samples and references")
    return root


def pytest_configure(config):
    # Prefect in tests: a private, throwaway home, ephemeral API unless a test starts a server,
    # no analytics (tests never touch the network).
    import tempfile

    home = tempfile.mkdtemp(prefix="bindset-prefect-")
    os.environ.setdefault("PREFECT_HOME", home)
    os.environ.pop("PREFECT_API_URL", None)
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    os.environ["RAY_AUTH_MODE"] = "disabled"


# -- a real S3 server on loopback (moto in server mode), started once per test session -------------


class S3Server:
    """moto's S3 server on 127.0.0.1; the environment points every client (obstore, Polars, boto3)
    at it with dummy credentials, so nothing reaches the network."""

    def __init__(self, endpoint: str, process):
        self.endpoint = endpoint
        self.process = process
        self._count = 0

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def new_bucket(self, prefix: str = "bindset") -> str:
        import uuid

        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def upload_tree(self, local: Path, bucket: str, prefix: str) -> str:
        """Every file under ``local`` to ``s3://bucket/prefix/`` with the same relative keys."""
        from storage.local_s3 import upload_tree

        return upload_tree(self.client(), local, bucket, prefix)

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        paginator = self.client().get_paginator("list_objects_v2")
        return sorted(
            o["Key"] for page in paginator.paginate(Bucket=bucket, Prefix=prefix) for o in page.get("Contents", [])
        )


@pytest.fixture(scope="session")
def s3_server():
    from storage import local_s3

    try:
        proc, endpoint = local_s3.start()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    saved = {k: os.environ.get(k) for k in [*local_s3.CLIENT_ENV, "AWS_ENDPOINT_URL"]}
    local_s3.use(endpoint)
    try:
        yield S3Server(endpoint, proc)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except Exception:
            proc.kill()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture
def s3_bucket(s3_server) -> str:
    """A fresh, empty bucket on the session's S3 server."""
    return s3_server.new_bucket()


# -- a two-node Ray cluster on loopback ------------------------------------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def loopback_ray_cluster(cpus_per_node: int = 1, worker_env: dict | None = None, worker_resources: dict | None = None):
    """Head + one worker node on 127.0.0.1, the driver connected; yields the address.

    Each node is a ``ray start --block`` process this helper owns and stops by its pid (``ray stop``
    would stop every Ray on the machine). Each node takes its environment when it starts (start the S3
    server first when the nodes need it), as cloud nodes take theirs from their own role;
    ``worker_env`` replaces the worker node's environment (e.g. one without credentials)."""
    import contextlib
    import json
    import socket
    import subprocess
    import sys
    import time

    def wait_for_port(port: int, proc: subprocess.Popen, seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    return
            assert proc.poll() is None and time.monotonic() < deadline, "Ray head did not start"
            time.sleep(0.2)

    @contextlib.contextmanager
    def cluster():
        ray = pytest.importorskip("ray")
        ray_cli = str(Path(sys.executable).with_name("ray"))
        env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
        port = _free_port()
        common = [
            "--block",
            f"--num-cpus={cpus_per_node}",
            "--object-store-memory=100000000",
            "--disable-usage-stats",
            "--node-ip-address=127.0.0.1",
        ]
        extra = ["--resources", json.dumps(worker_resources)] if worker_resources else []
        procs: list[subprocess.Popen] = []
        if ray.is_initialized():
            ray.shutdown()
        try:
            procs.append(
                subprocess.Popen(
                    [ray_cli, "start", "--head", f"--port={port}", "--include-dashboard=false", *common],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
            wait_for_port(port, procs[0])
            worker = {**(worker_env if worker_env is not None else env), "RAY_AUTH_MODE": "disabled"}
            procs.append(
                subprocess.Popen(
                    [ray_cli, "start", f"--address=127.0.0.1:{port}", *extra, *common],
                    env=worker,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
            os.environ["RAY_AUTH_MODE"] = "disabled"
            address = f"127.0.0.1:{port}"
            ray.init(address=address, configure_logging=False, log_to_driver=False)
            deadline = time.monotonic() + 60
            while len([n for n in ray.nodes() if n["Alive"]]) < 2:
                assert time.monotonic() < deadline, "second Ray node did not join"
                time.sleep(0.3)
            yield address
        finally:
            ray.shutdown()
            for proc in reversed(procs):
                proc.terminate()
            for proc in procs:
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()

    return cluster()
