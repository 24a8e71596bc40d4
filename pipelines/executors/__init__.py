"""Executors: where shard builds and stateful workers (encoders) run. ``LocalExecutor`` in-process;
``RayExecutor`` on a Ray cluster (tasks for shards, an actor pool for workers, one connection)."""

from pipelines.executors.base import Executor, WorkerFactory
from pipelines.executors.local import LocalExecutor
from pipelines.executors.progress import ShardProgress


def create_executor(name: str = "ray", ray_address: str | None = None, **options) -> Executor:
    """``local`` (in-process) or ``ray`` (local Ray, or the cluster at ``ray_address``/RAY_ADDRESS)."""
    if name == "local":
        return LocalExecutor()
    if name == "ray":
        from pipelines.executors.ray import RayExecutor

        return RayExecutor(address=ray_address, **options)
    raise ValueError(f"unknown executor {name!r}; choose 'ray' or 'local'")


__all__ = ["Executor", "LocalExecutor", "ShardProgress", "WorkerFactory", "create_executor"]
