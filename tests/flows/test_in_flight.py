"""The build flow keeps exactly as many shards in flight as the executor allows
(``Executor.in_flight_limit()``, the bound ``--no-prefect`` keeps), one Prefect task run per shard."""

import threading
import time

import pytest

import flows.build_flow as build_flow
from flows.executor_choice import AutoExecutor, choose_executor
from pipelines.build import build_shard
from pipelines.executors import LocalExecutor
from pipelines.executors.base import Executor
from pipelines.synth import synthesize


class CountingExecutor(Executor):
    """Builds in-process but slowly, counting shards in flight at once."""

    name = "counting"

    def __init__(self, limit: int):
        self.limit = limit
        self.now = self.peak = self.calls = 0
        self.lock = threading.Lock()

    def in_flight_limit(self) -> int:
        return self.limit

    def build_one(self, root, spec, config):
        with self.lock:
            self.now += 1
            self.calls += 1
            self.peak = max(self.peak, self.now)
        try:
            time.sleep(0.4)
            return build_shard(root, spec, config)
        finally:
            with self.lock:
                self.now -= 1

    def run_shards(self, root, specs, config, on_sample=None):
        raise AssertionError("the flow submits shards itself")

    def map_on_workers(self, *args, **kwargs):
        raise NotImplementedError


@pytest.fixture(scope="module")
def llvip_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("llvip")
    synthesize(root, "llvip", 8, seed=5)
    return root


def test_flow_keeps_in_flight_limit_shards_in_flight(llvip_root, tmp_path, monkeypatch):
    limit = 3
    executor = CountingExecutor(limit)
    monkeypatch.setattr(build_flow, "choose_executor", lambda *a, **k: (executor, "counting (test)"))
    config = {
        "dataset": {"out": str(tmp_path / "ds"), "shard_size": 1},
        "sources": [{"layout": "llvip", "root": str(llvip_root)}],
    }
    state = build_flow.build_dataset_flow(config=config, return_state=True)
    result = state.result()
    assert result["stored"] == 8 and result["shards_built"] == 8 and executor.calls == 8
    assert executor.peak == limit, f"{executor.peak} shards in flight, the executor allows {limit}"
    assert result["executor"] == "counting (test)"
    assert _task_runs(state) == 8


def _task_runs(state) -> int:
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
        )
    return len([r for r in runs if r.name.startswith("shard-")])


def test_auto_executor_choice(monkeypatch):
    from pipelines.plan import ShardSpec

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    small = [ShardSpec(0, tuple({"sample_id": str(i)} for i in range(4)))]
    many = [ShardSpec(i, tuple({"sample_id": f"{i}-{j}"} for j in range(40))) for i in range(3)]
    executor, why = choose_executor("auto", specs=small)
    assert isinstance(executor, LocalExecutor) and why.startswith("local (auto: 1 shard(s), 4 samples")
    executor, why = choose_executor("auto", specs=many)
    assert executor.name == "ray" and why.startswith("ray (auto: 3 shards, 120 samples")
    executor, why = choose_executor("auto", address="10.0.0.1:6379", specs=small)
    assert executor.name == "ray" and "10.0.0.1:6379" in why
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.2:6379")
    assert choose_executor("auto", specs=small)[0].name == "ray"
    assert choose_executor("local", specs=many)[0].name == "local"
    assert choose_executor("ray", specs=small)[0].name == "ray"
    # Nothing to build: an explicit Ray executor is made but never connects.
    auto = AutoExecutor("ray")
    assert list(auto.run_shards("/nowhere", [], None)) == [] and auto.chosen.name == "ray"


def test_train_choices_come_from_the_registry_without_torch():
    """`bindset train --modality` lists the registry's bindable modalities; building the parsers
    imports no torch (the CLI answers --help and refuses bad input fast)."""
    import subprocess
    import sys

    probe = (
        "import sys; from flows.cli import make_parser; make_parser(); torch = 'torch' in sys.modules; "
        "from preprocess.registry import bindable_names; print(sorted(bindable_names()), torch)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['audio', 'depth', 'imu', 'thermal'] False"
