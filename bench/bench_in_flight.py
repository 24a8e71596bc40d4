"""Shards in flight on an 8-CPU Ray cluster: the default (Prefect) path against `--no-prefect`.

A loopback cluster of two nodes (`ray start --block --num-cpus=4` each, 100 MB object stores,
RAY_AUTH_MODE=disabled) builds the same synthetic LLVIP sources (1280x1024 visible + infrared pairs,
about 0.1 s of CPU per sample, so a shard of 12 runs for seconds) twice through the CLI, as a
user runs it: `bindset build ... --executor ray --ray-address HEAD` (the build-dataset flow, a
temporary Prefect server) and the same with `--no-prefect`. While each runs, the bench polls the
dataset's `_tmp/` folder: a shard being built holds its open HDF5 file there (the writer opens it
before the first sample and publishes it at commit), so the number of those files is the number of
shards running at that moment, whichever process drives them. Each shard task takes one CPU, so 8 is
the most any path can run here; the driver keeps up to `in_flight_limit()` (2 x 8 = 16) submitted.

    python bench/bench_in_flight.py                  # about 3 minutes on 2 cores
    python bench/bench_in_flight.py --repo /tmp/old  # another checkout (same venv), e.g. before the fix

Measured here (288 samples, 24 shards of 12; peak / mean shards running, wall s):

    checkout             default (Prefect flow)   --no-prefect
    before (45ecb05)     4 / 2.6, 75.0 s          8 / 3.8, 36.8 s
    after                8 / 3.2, 47.4 s          8 / 3.9, 26.1 s

The flow's remaining wall-time gap is Prefect's per-task-run API traffic (create, running,
completed, logs) to a server that shares the 2 cores with 8 Ray workers, and its start-up.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).with_name("ray"))


@contextlib.contextmanager
def loopback_cluster(cpus_per_node: int, log_dir: Path):
    """Head + one worker node on 127.0.0.1 (pipelines.executors.loopback), both joined."""
    from pipelines.executors.loopback import loopback_nodes

    with loopback_nodes(cpus_per_node, log_dir=log_dir) as address:
        env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
        _wait_for_nodes(address, 2, env)
        yield address


def _wait_for_nodes(address: str, n: int, env: dict, seconds: float = 90) -> None:
    probe = (
        "import ray, sys; ray.init(address=sys.argv[1], configure_logging=False, log_to_driver=False); "
        "print(sum(1 for x in ray.nodes() if x['Alive']), int(ray.cluster_resources().get('CPU', 0)))"
    )
    deadline = time.monotonic() + seconds
    while True:
        out = subprocess.run([sys.executable, "-c", probe, address], env=env, capture_output=True, text=True)
        nodes, _, cpus = out.stdout.strip().partition(" ")
        if out.returncode == 0 and nodes == str(n):
            print(f"cluster {address}: {nodes} nodes, {cpus} CPUs")
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"the second Ray node did not join: {out.stdout} {out.stderr[-500:]}")
        time.sleep(1)


class RunningShards:
    """Polls `<dataset>/_tmp/*/*.h5`: the shards being built at each moment."""

    def __init__(self, dataset: Path, every_s: float = 0.02):
        self.tmp = dataset / "_tmp"
        self.every_s = every_s
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.is_set():
            try:
                n = sum(1 for _ in self.tmp.glob("*/*.h5"))
            except OSError:
                n = 0
            self.samples.append((time.monotonic(), n))
            time.sleep(self.every_s)

    def __enter__(self) -> "RunningShards":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak(self) -> int:
        return max((n for _, n in self.samples), default=0)

    def busy_mean(self) -> float:
        """Mean number running between the first and the last moment any shard ran."""
        busy = [i for i, (_, n) in enumerate(self.samples) if n]
        if not busy:
            return 0.0
        window = self.samples[busy[0] : busy[-1] + 1]
        return sum(n for _, n in window) / len(window)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", type=Path, default=REPO, help="checkout to run (default: this one)")
    parser.add_argument("--samples", type=int, default=288)
    parser.add_argument("--shard-size", type=int, default=12)
    parser.add_argument("--layout", default="llvip")
    parser.add_argument("--cpus-per-node", type=int, default=4)
    opts = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-in-flight-"))
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "RAY_ADDRESS", "PYTHONPATH")}
    env.update(
        PREFECT_HOME=str(work / "prefect-home"),
        PYTHONPATH=str(opts.repo),
        RAY_AUTH_MODE="disabled",
        RAY_USAGE_STATS_ENABLED="0",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
    )
    src = work / "src"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "flows.cli",
            "synth",
            str(src),
            "--layout",
            opts.layout,
            "-n",
            str(opts.samples),
            "--seed",
            "0",
        ],
        cwd=opts.repo,
        env=env,
        check=True,
        capture_output=True,
    )
    shards = -(-opts.samples // opts.shard_size)
    results = {}
    with loopback_cluster(opts.cpus_per_node, work) as address:
        cluster_cpus = 2 * opts.cpus_per_node
        for name, extra in (("default (Prefect flow)", []), ("--no-prefect", ["--no-prefect"])):
            out = work / f"ds-{len(results)}"
            cmd = [
                sys.executable,
                "-m",
                "flows.cli",
                "build",
                str(src),
                "--layout",
                opts.layout,
                "--out",
                str(out),
                "--shard-size",
                str(opts.shard_size),
                "--executor",
                "ray",
                "--ray-address",
                address,
                "--no-progress",
                *extra,
            ]
            started = time.perf_counter()
            with RunningShards(out) as running, open(work / f"build-{len(results)}.log", "w") as log:
                proc = subprocess.run(cmd, cwd=opts.repo, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=1200)
            seconds = time.perf_counter() - started
            if proc.returncode != 0:
                raise SystemExit(f"{name} build failed; see {work}")
            results[name] = (running.peak, running.busy_mean(), seconds)
    print(
        f"{opts.samples} {opts.layout} samples in {shards} shards of {opts.shard_size}, {cluster_cpus}-CPU loopback "
        f"cluster (2 nodes x {opts.cpus_per_node}), {opts.repo}; logs in {work}"
    )
    print(f"{'path':24s} {'peak running':>13s} {'mean running':>13s} {'wall s':>7s}")
    for name, (peak, mean, seconds) in results.items():
        print(f"{name:24s} {peak:13d} {mean:13.1f} {seconds:7.1f}")
    (a, _, _), (b, _, _) = results.values()
    print(
        f"peak shards running: default {a}, --no-prefect {b}: "
        f"{'within one of each other' if abs(a - b) <= 1 else 'NOT within one'} (cluster CPUs: {cluster_cpus})"
    )


if __name__ == "__main__":
    main()
