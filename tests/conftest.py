import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_candidate() -> Path:
    """Where the shared samples and references are looked for: $BINDSET_SHARED, else ../shared."""
    return Path(os.environ.get("BINDSET_SHARED", REPO.parent / "shared"))


def shared_root() -> Path | None:
    candidate = shared_candidate()
    return candidate if (candidate / "samples").is_dir() else None


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The one fixture for ../shared (real media and ImageBind references); skips when it is absent."""
    root = shared_root()
    if root is None:
        pytest.skip(
            f"../shared not found ({shared_candidate()} has no samples/): real-media parity tests need the "
            "shared samples and references (set BINDSET_SHARED to their folder)"
        )
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
    from pipelines.executors.loopback import free_port

    return free_port()


def loopback_ray_cluster(cpus_per_node: int = 1, worker_env: dict | None = None, worker_resources: dict | None = None):
    """Head + one worker node on 127.0.0.1 (pipelines.executors.loopback), the driver connected once
    both are alive; yields the address. Start the S3 server first when the nodes need it."""
    import contextlib
    import time

    from pipelines.executors.loopback import loopback_nodes

    @contextlib.contextmanager
    def cluster():
        ray = pytest.importorskip("ray")
        if ray.is_initialized():
            ray.shutdown()
        with loopback_nodes(cpus_per_node, worker_env, worker_resources) as address:
            os.environ["RAY_AUTH_MODE"] = "disabled"
            ray.init(address=address, configure_logging=False, log_to_driver=False)
            try:
                deadline = time.monotonic() + 60
                while len([n for n in ray.nodes() if n["Alive"]]) < 2:
                    assert time.monotonic() < deadline, "second Ray node did not join"
                    time.sleep(0.3)
                yield address
            finally:
                ray.shutdown()

    return cluster()


@pytest.fixture(scope="session")
def _ray_nodes(s3_server):
    """The session's two-node loopback cluster, started once (after the S3 server, so both nodes
    take its endpoint and keys from their own environment, as cloud nodes take their role's)."""
    with loopback_ray_cluster() as address:
        yield address


@pytest.fixture
def ray_cluster(_ray_nodes):
    """The address of the session's two-node Ray cluster, the driver connected to it. Other tests
    start and stop a private local Ray: a test using this fixture is reconnected to the cluster."""
    import ray

    connected = ray.is_initialized() and ray.get_runtime_context().gcs_address == _ray_nodes
    if not connected:
        if ray.is_initialized():
            ray.shutdown()
        ray.init(address=_ray_nodes, configure_logging=False, log_to_driver=False)
    return _ray_nodes
