"""Failpoints: deliberate, named failures for resilience tests and drills, off unless configured.

``BINDSET_FAULTS="shard:1=transient,shard:3=permanent"`` makes shard 1 fail once (a marker file in
``BINDSET_FAULTS_DIR`` remembers it failed, so a retry, in any process, succeeds) and shard 3 fail
every time. ``shard:*=slow`` delays every shard by ``BINDSET_FAULTS_DELAY_S`` seconds (default 1), so
a drill can kill a build while it is surely mid-way. Environment-driven so it crosses process boundaries (Ray workers, Prefect runs).
"""

from __future__ import annotations

import os
from pathlib import Path


class InjectedFault(RuntimeError):
    pass


class InjectedIOError(OSError):
    """An injected I/O failure (EIO), as a flaky disk or network read raises it."""


def _faults() -> dict[str, str]:
    spec = os.environ.get("BINDSET_FAULTS", "")
    out = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        point, _, kind = item.partition("=")
        out[point] = kind or "permanent"
    return out


def check(point: str, key: object) -> None:
    faults = _faults()
    kind = faults.get(f"{point}:{key}") or faults.get(f"{point}:*")
    if kind is None:
        return
    if kind == "slow":
        import time

        time.sleep(float(os.environ.get("BINDSET_FAULTS_DELAY_S", "1")))
        return
    if kind == "transient":
        marker = Path(os.environ.get("BINDSET_FAULTS_DIR", ".")) / f"fault-{point}-{key}"
        if marker.exists():
            return
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
        raise InjectedFault(f"injected transient failure at {point} {key}")
    raise InjectedFault(f"injected permanent failure at {point} {key}")


def check_io(point: str, key: object) -> None:
    """Like ``check``, but the failure is an ``OSError(EIO)``: what a flaky read looks like."""
    try:
        check(point, key)
    except InjectedFault as exc:
        import errno

        raise InjectedIOError(errno.EIO, str(exc)) from None
