"""Concurrent embeds of one store are refused like concurrent builds (naming the holder); another
store of the same dataset embeds alongside."""

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import storage
from pipelines.build import build_dataset
from pipelines.config import BuildConfig
from pipelines.embed import EncoderSpec, embed_dataset, store_id
from pipelines.sources import create_source
from pipelines.synth import synthesize
from storage import format as fmt
from storage.embeddings import embedded_shard_ids
from storage.locks import DatasetLocked

REPO = Path(__file__).resolve().parents[2]
RANDOM = EncoderSpec("openclip:bindset-tiny-clip", None, ("image",), options={"seed": 0})  # seeded random init

# The first embed, in its own process, with an encoder that blocks on its first batch until the test
# creates the `go` file: it holds the store's lock for as long as the test needs.
SLOW_EMBED = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from pipelines.embed import EncoderSpec, embed_dataset

    root, started, go = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    create = EncoderSpec.create

    def slow_create(self):
        encoders = create(self)
        for encoder in encoders.values():
            encode = encoder.encode

            def waiting(batch, encode=encode):
                started.touch()
                while not go.exists():
                    time.sleep(0.02)
                return encode(batch)

            encoder.encode = waiting
        return encoders

    EncoderSpec.create = slow_create
    spec = EncoderSpec("openclip:bindset-tiny-clip", None, ("image",), options={"seed": 0})
    report = embed_dataset(root, spec, executor="local", progress=False)
    print(len(report.embedded))
""")


def _wait_for(condition, proc, what: str, seconds: float = 90.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"the first embed exited ({proc.returncode}) before {what}: {proc.stderr.read()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def dataset(tmp_path):
    synthesize(tmp_path / "src", "llvip", 4, seed=0)
    build_dataset(
        [create_source("llvip", tmp_path / "src")], tmp_path / "ds", BuildConfig(shard_size=2), progress=False
    )
    return tmp_path / "ds"


@pytest.fixture
def other_checkpoint(tmp_path):
    """A second model (a checkpoint file: its hash makes another store id)."""
    import torch
    from safetensors.torch import save_file

    from encoders.openclip import TINY_NAME, load_openclip_model

    model, _ = load_openclip_model(TINY_NAME, None, torch.device("cpu"), seed=1)
    path = tmp_path / "tiny-clip.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def test_a_second_embed_of_the_same_store_is_refused_and_another_store_runs_alongside(
    dataset, other_checkpoint, tmp_path
):
    encoder_id = store_id(RANDOM.create())
    other = EncoderSpec("openclip:bindset-tiny-clip", str(other_checkpoint), ("image",))
    other_id = store_id(other.create())
    assert other_id != encoder_id

    started, go = tmp_path / "started", tmp_path / "go"
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_EMBED, str(dataset), str(started), str(go)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for(started.exists, proc, "its first batch")
        assert (dataset / fmt.LOCKS_DIR / f"embed-{encoder_id}.lock").exists()
        with pytest.raises(DatasetLocked, match=rf"is locked: embed-{encoder_id} by pid {proc.pid} on .*started"):
            embed_dataset(dataset, RANDOM, executor="local", progress=False)
        # another store of the same dataset: its own lock, embedded while the first still runs
        report = embed_dataset(dataset, other, executor="local", progress=False)
        assert report.encoder_id == other_id and [s.shard_id for s in report.embedded] == [0, 1]
        assert proc.poll() is None and embedded_shard_ids(dataset, encoder_id) == []
        go.touch()
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert out.split() == ["2"]
    finally:
        go.touch()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # the lock is released with the first embed: the same store is now complete, nothing left to do
    again = embed_dataset(dataset, RANDOM, executor="local", progress=False)
    assert again.embedded == [] and again.already_done == 2
    for encoder in (encoder_id, other_id):
        assert storage.scan_embeddings(dataset, encoder).collect().height == 4
