"""Executors: where shard builds run. ``LocalExecutor`` in-process; ``RayExecutor`` on a Ray cluster."""

from pipelines.executors.base import Executor
from pipelines.executors.local import LocalExecutor
from pipelines.executors.progress import ShardProgress

__all__ = ["Executor", "LocalExecutor", "ShardProgress"]
