"""A two-node Ray cluster on 127.0.0.1 for tests and benchmarks (the product never starts one).

Each node is a ``ray start --block`` process owned here and stopped by its pid: ``ray stop`` would
stop every Ray on the machine, other sessions' included. Each node takes its environment when it
starts (start a local S3 server first when the nodes need it), as cloud nodes take theirs from their
own role.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, proc: subprocess.Popen, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while True:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the Ray head did not start")
        time.sleep(0.2)


@contextlib.contextmanager
def loopback_nodes(
    cpus_per_node: int = 1,
    worker_env: dict | None = None,
    worker_resources: dict | None = None,
    log_dir: Path | None = None,
    seconds: float = 90,
) -> Iterator[str]:
    """Start a head and one worker node; yields the address once the head answers (the worker may
    still be joining: callers wait for it in their own way). ``worker_env`` replaces the worker
    node's environment (e.g. one without credentials); ``log_dir`` keeps each node's output."""
    ray_cli = str(Path(sys.executable).with_name("ray"))
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    worker = {**(worker_env if worker_env is not None else env), "RAY_AUTH_MODE": "disabled"}
    port = free_port()
    common = [
        "--block",
        f"--num-cpus={cpus_per_node}",
        "--object-store-memory=100000000",
        "--disable-usage-stats",
        "--node-ip-address=127.0.0.1",
    ]
    extra = ["--resources", json.dumps(worker_resources)] if worker_resources else []
    nodes = [
        (["--head", f"--port={port}", "--include-dashboard=false"], env),
        ([f"--address=127.0.0.1:{port}", *extra], worker),
    ]
    procs: list[subprocess.Popen] = []
    try:
        for i, (args, node_env) in enumerate(nodes):
            out = open(log_dir / f"ray-node-{i}.log", "w") if log_dir is not None else subprocess.DEVNULL
            procs.append(
                subprocess.Popen([ray_cli, "start", *args, *common], env=node_env, stdout=out, stderr=subprocess.STDOUT)
            )
            if i == 0:
                _wait_for_port(port, procs[0], seconds)
        yield f"127.0.0.1:{port}"
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
