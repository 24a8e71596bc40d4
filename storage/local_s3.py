"""A throwaway S3 server on loopback (moto in server mode) for tests and benchmarks.

moto comes with the ``dev`` extra only; nothing in the product imports this module. Tests start one
server per session (tests/conftest.py), benchmarks one per run; both point every client (obstore,
Polars, boto3) at it through the environment with dummy credentials, so nothing reaches the network.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

#: the environment of a client of the local server: dummy keys, plain HTTP, no instance metadata
CLIENT_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "AWS_ALLOW_HTTP": "true",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def start(log: Path | None = None, timeout_s: float = 30.0) -> tuple[subprocess.Popen, str]:
    """Start ``moto_server`` on a free 127.0.0.1 port; (process, endpoint URL) once it answers.
    ``log`` receives its request log (one line per request: what benchmarks count)."""
    moto = shutil.which("moto_server") or str(Path(sys.executable).with_name("moto_server"))
    if not Path(moto).exists():
        raise FileNotFoundError("moto_server is not installed (pip install -e '.[dev]')")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    stderr = open(log, "w") if log is not None else subprocess.DEVNULL
    proc = subprocess.Popen([moto, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=stderr)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            urllib.request.urlopen(endpoint, timeout=1).close()
            return proc, endpoint
        except Exception:  # noqa: BLE001 - not up yet
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"moto_server did not start on {endpoint}") from None
            time.sleep(0.2)


def use(endpoint: str, environ: dict | None = None) -> None:
    """Point the clients of this process (and of the processes it starts) at ``endpoint``."""
    env = os.environ if environ is None else environ
    env.update(CLIENT_ENV)
    env["AWS_ENDPOINT_URL"] = endpoint


def upload_tree(client, local: Path, bucket: str, prefix: str) -> str:
    """Upload every file under ``local`` to ``s3://bucket/prefix/`` with the same relative keys."""
    for f in sorted(Path(local).rglob("*")):
        if f.is_file():
            client.upload_file(str(f), bucket, f"{prefix}/{f.relative_to(local).as_posix()}")
    return f"s3://{bucket}/{prefix}"
