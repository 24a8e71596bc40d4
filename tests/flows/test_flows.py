"""Prefect flows in ephemeral mode: retries of transient failures, named permanent failures, validation."""

import os

import pytest

import storage
from flows.build_flow import build_dataset_flow, validate_dataset_flow
from pipelines.synth import synthesize
from storage import format as fmt
from storage.catalog import content_hash


@pytest.fixture(scope="module")
def llvip_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("llvip")
    synthesize(root, "llvip", 6, seed=2)
    return root


def _config(src, out, kind="local"):
    return {
        "dataset": {"out": str(out), "shard_size": 2},
        "sources": [{"layout": "llvip", "root": str(src)}],
        "executor": {"kind": kind},
    }


@pytest.fixture
def faults(tmp_path, monkeypatch):
    def set_faults(spec: str):
        monkeypatch.setenv("BINDSET_FAULTS", spec)
        monkeypatch.setenv("BINDSET_FAULTS_DIR", str(tmp_path / "faults"))

    return set_faults


def test_transient_failure_is_retried_and_run_completes(llvip_root, tmp_path, faults):
    faults("shard:1=transient")
    state = build_dataset_flow(config=_config(llvip_root, tmp_path / "ds"), return_state=True)
    assert state.is_completed(), state.message
    assert (tmp_path / "faults" / "fault-shard-1").exists(), "the injected fault never fired"
    assert state.result()["stored"] == 6
    assert storage.scan_index(tmp_path / "ds").collect().height == 6


def test_permanent_failure_names_the_shard_and_rerun_completes(llvip_root, tmp_path, faults):
    out = tmp_path / "ds"
    faults("shard:2=permanent")
    state = build_dataset_flow(config=_config(llvip_root, out), return_state=True)
    assert state.is_failed()
    from prefect.exceptions import FailedRun

    # The run ends Failed with one line (no traceback for what is not a bug), naming the shard.
    assert state.message.startswith("BuildFailed: 1 shard(s) failed after retries: shard 00002: InjectedFault")
    with pytest.raises(FailedRun, match=r"shard 00002: InjectedFault"):
        state.result()
    # Consistent: the failed shard is absent (no partial file), the others are committed and valid.
    assert not fmt.index_path(out, 2).exists() and not fmt.shard_path(out, 2).exists()
    assert storage.scan_index(out).collect().height == 4
    assert validate_dataset_flow(str(out))["uncommitted"] == ["00002"]

    os.environ.pop("BINDSET_FAULTS")
    rerun = build_dataset_flow(config=_config(llvip_root, out))
    assert rerun["shards_built"] == 1 and rerun["stored"] == 2
    reference = build_dataset_flow(config=_config(llvip_root, tmp_path / "ref"))
    assert reference["stored"] == 6
    assert content_hash(out) == content_hash(tmp_path / "ref")


def test_validate_flow_names_a_corrupt_shard(llvip_root, tmp_path):
    out = tmp_path / "ds"
    build_dataset_flow(config=_config(llvip_root, out))
    shard = fmt.shard_path(out, 1)
    data = bytearray(shard.read_bytes())
    data[-100] ^= 0xFF
    shard.write_bytes(bytes(data))
    fmt.index_path(out, 2).unlink()
    state = validate_dataset_flow(str(out), return_state=True)
    assert state.is_failed()
    with pytest.raises(RuntimeError) as err:
        state.result()
    assert "00001: shard sha256 differs" in str(err.value) and "00002: 00002.parquet absent" in str(err.value)


def test_build_flow_on_ray(llvip_root, tmp_path):
    result = build_dataset_flow(config=_config(llvip_root, tmp_path / "ds", kind="ray"))
    assert result["stored"] == 6 and result["shards_built"] == 3
    import ray

    ray.shutdown()


def test_config_errors_name_the_key(tmp_path):
    from flows.config import ConfigError, load_run_config

    cfg = tmp_path / "bad.toml"
    cfg.write_text('[dataset]\nout = "ds"\nshard_size = 0\n[[sources]]\nlayout = "llvip"\nroot = "src"\nrooot = 1\n')
    with pytest.raises(ConfigError) as err:
        load_run_config(cfg)
    assert "dataset.shard_size" in str(err.value) and "sources[0].rooot" in str(err.value)


def test_embed_backfill_flow_and_cli(llvip_root, tmp_path, capsys):
    import torch
    from safetensors.torch import save_file

    from encoders.openclip import TINY_NAME, load_openclip_model
    from flows.cli import main

    model, _ = load_openclip_model(TINY_NAME, None, torch.device("cpu"), seed=0)
    ckpt = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(ckpt))
    out = tmp_path / "ds"
    build_dataset_flow(config=_config(llvip_root, out))
    # no checkpoint and no explicit --random-weights: refused before any work (random vectors look real)
    assert main(["embed", str(out), "--encoder", f"openclip:{TINY_NAME}", "--executor", "local"]) == 2
    assert "needs --checkpoint PATH" in capsys.readouterr().err and not (out / "embeddings").exists()
    args = [
        "embed",
        str(out),
        "--encoder",
        f"openclip:{TINY_NAME}",
        "--checkpoint",
        str(ckpt),
        "--modalities",
        "image",
        "--executor",
        "local",
    ]
    assert main(args) == 0
    stores = list((out / "embeddings").iterdir())
    assert len(stores) == 1 and len(list(stores[0].glob("*.parquet"))) == 3
    assert storage.scan_embeddings(out, stores[0].name).collect().height == 6
    # A rerun has nothing left to do.
    from flows.embed_flow import embed_backfill_flow

    again = embed_backfill_flow(str(out), f"openclip:{TINY_NAME}", str(ckpt), ["image"], "local")
    assert again["shards_embedded"] == 0 and again["already_done"] == 3


def test_run_config_encoders_embed_after_the_build(llvip_root, tmp_path, capsys):
    """`bindset run` of a TOML with [[encoders]]: build, then an embed-backfill subflow per encoder;
    a rerun builds and embeds nothing. An encoder without weights is a config error naming it."""
    import torch
    from safetensors.torch import save_file

    from encoders.openclip import TINY_NAME, load_openclip_model
    from flows.cli import main
    from flows.config import ConfigError, load_run_config
    from storage.embeddings import list_encoder_ids

    model, _ = load_openclip_model(TINY_NAME, None, torch.device("cpu"), seed=0)
    ckpt = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(ckpt))
    out = tmp_path / "ds"
    toml = tmp_path / "nightly.toml"
    base = (
        f'[dataset]\nout = "{out}"\nshard_size = 2\n[[sources]]\nlayout = "llvip"\nroot = "{llvip_root}"\n'
        f'[executor]\nkind = "local"\n'
    )
    toml.write_text(base + f'[[encoders]]\nname = "openclip:{TINY_NAME}"\ncheckpoint = "{ckpt}"\n')
    assert main(["run", str(toml)]) == 0
    printed = capsys.readouterr().out
    (store,) = list_encoder_ids(out)
    assert f"encoder {store}: 3 shards embedded (6 samples), 0 already in the store" in printed
    assert storage.scan_embeddings(out, store).collect().height == 6
    assert main(["run", str(toml)]) == 0
    assert f"encoder {store}: 0 shards embedded (0 samples), 3 already in the store" in capsys.readouterr().out

    toml.write_text(base + f'[[encoders]]\nname = "openclip:{TINY_NAME}"\n')
    with pytest.raises(ConfigError, match=r"encoders\[0\].*needs checkpoint"):
        load_run_config(toml)
