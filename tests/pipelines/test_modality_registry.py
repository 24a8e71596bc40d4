"""A modality defined in this file alone (a 1-channel "event" image, cropped with its RGB partner)
goes through a generic CSV source, the build, the shard and index, the loader (with augmentation),
inspect and report, with no edit to the package: everything derives from the registry."""

from __future__ import annotations

import dataclasses
import io
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import polars as pl
import pytest
from PIL import Image

import storage
from pipelines.build import build_dataset
from pipelines.config import BuildConfig
from pipelines.sources import create_source
from preprocess.crops import apply_crop, check_same_aspect
from preprocess.registry import (
    BuiltModality,
    ModalitySpec,
    StoredArray,
    get_modality,
    modality_names,
    register_modality,
    unregister_modality,
)


@dataclass(frozen=True)
class EventConfig:
    size: int = 224
    mean: float = 0.5
    std: float = 0.25


def _decode_event(data: bytes, cfg: EventConfig, row: dict) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        if img.mode != "L":
            raise ValueError(f"an event frame is 1-channel, got mode {img.mode}")
        return np.asarray(img, dtype=np.float32) / np.float32(255.0)


def _preprocess_event(frame01: np.ndarray, cfg: EventConfig, row: dict, frame) -> BuiltModality:
    check_same_aspect("event", frame01.shape, (frame.height, frame.width))
    crop = apply_crop(frame01, frame.box, cfg.size, "bilinear")
    return BuiltModality({"counts": crop[None].astype(np.float16)}, {"q_event_activity": float(crop.mean())})


def _event_ready(stored, cfg: EventConfig) -> dict[str, np.ndarray]:
    return {"event": (np.asarray(stored["event/counts"], np.float32) - cfg.mean) / cfg.std}


EVENT = ModalitySpec(
    name="event",
    kind="spatial",
    stored=(StoredArray("counts", "float16", "[1,S,S]"),),
    config=EventConfig,
    model_ready=_event_ready,
    decode=_decode_event,
    preprocess=_preprocess_event,
    crop_resample="bilinear",
    crop_clip=(0.0, 1.0),
    quality={"q_event_activity": "mean event activity [0,1]"},
    missing_reason="no event frame",
)


@pytest.fixture
def event_modality():
    register_modality(EVENT)
    yield EVENT
    unregister_modality("event")


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _event_source(root: Path, n: int = 5) -> Path:
    """RGB frames and, beside each, an event frame that is the RGB's own grey level: after the
    shared crop, the stored event must equal the grey of the stored RGB crop (alignment check)."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        h, w = (90 + 10 * i, 120 + 10 * i)
        base = rng.integers(0, 255, (h // 10 + 1, w // 10 + 1, 3), dtype=np.uint8)
        rgb = Image.fromarray(base).resize((w, h), Image.BILINEAR)  # smooth: resampling agrees
        (root / f"rgb{i}.png").write_bytes(_png(rgb))
        (root / f"ev{i}.png").write_bytes(_png(rgb.convert("L")))
        rows.append({"image": f"rgb{i}.png", "event": f"ev{i}.png", "caption": f"scene {i}"})
    (root / "bad.png").write_bytes(b"not a png")
    (root / "rgbx.png").write_bytes(_png(Image.new("RGB", (120, 90))))
    (root / "tall.png").write_bytes(_png(Image.new("L", (40, 90))))  # wrong aspect for its RGB
    rows += [
        {"image": "rgb0.png", "event": "bad.png", "caption": "corrupt event"},
        {"image": "rgbx.png", "event": "tall.png", "caption": "misaligned event"},
    ]
    pl.DataFrame(rows).write_csv(root / "pairs.csv")
    return root / "pairs.csv"


def test_registered_modality_runs_through_every_room(event_modality, tmp_path):
    assert "event" in modality_names("spatial") and get_modality("event") is EVENT
    src = tmp_path / "src"
    src.mkdir()
    table = _event_source(src)
    ds = tmp_path / "ds"
    config = BuildConfig.from_dict({"shard_size": 4, "event": {"std": 0.5}})
    assert config.section("event") == EventConfig(std=0.5)
    report = build_dataset([create_source("generic", table)], ds, config, progress=False)
    assert report.stored == 5 and report.rejected == 2

    # shard and index: the spec's layout, its path column, its quality figure
    index = storage.scan_index(ds).collect()
    assert sorted(index["uri_event"].to_list()) == [f"ev{i}.png" for i in range(5)]
    assert all(set(m) == {"image", "event", "text"} for m in index["modalities"].to_list())
    assert index["q_event_activity"].null_count() == 0
    from storage.format import shard_path

    with h5py.File(shard_path(ds, int(index["shard"][0]))) as h5:
        assert h5["event/counts"].dtype == np.float16 and h5["event/counts"].shape[1:] == (1, 224, 224)
    rejects = storage.scan_rejects(ds).collect()
    reasons = dict(zip(rejects["input_path"], rejects["stage"]))
    assert reasons == {"bad.png": "decode", "tall.png": "preprocess"}
    assert "aspect" in rejects.filter(pl.col("input_path") == "tall.png")["message"][0]

    # the dataset records the override; the reader normalizes with it; the crop is the RGB's
    from storage.reader import DatasetReader

    with DatasetReader(ds) as reader:
        assert reader.config["event"]["std"] == 0.5
        for sample_id in index["sample_id"].to_list():
            ready = reader[sample_id]
            grey = _grey01(reader, sample_id)
            np.testing.assert_allclose(ready["event"][0] * 0.5 + 0.5, grey, atol=0.03)

    # loader: selects by the new modality, yields it, augments it with the image's crop
    from preprocess.augment import AugmentConfig
    from storage.loader import ShardDataset

    plain = list(ShardDataset(ds, modalities=["event"], shuffle=False))
    assert len(plain) == 5 and all(s["event"].shape == (1, 224, 224) for s in plain)
    augmented = ShardDataset(ds, modalities=["image", "event"], augment=AugmentConfig(size=96, erase_prob=0.0))
    for sample in augmented:
        assert sample["event"].shape == (1, 96, 96) and sample["image"].shape == (3, 96, 96)
        assert float(sample["event"].min()) >= (0.0 - 0.5) / 0.5 - 1e-6  # clipped to [0,1] before normalizing

    # inspect and report
    from pipelines.report import write_report
    from pipelines.summary import dataset_summary, format_summary

    summary = dataset_summary(ds)
    text = format_summary(summary)
    assert "event" in text and "event_activity" in text
    html = write_report(ds, tmp_path / "report", n=2)
    page = Path(html).read_text()
    assert "mean event activity" in page or "q_event_activity" in page
    assert len(list((tmp_path / "report").glob("*.png"))) >= 2


def _grey01(reader, sample_id: str) -> np.ndarray:
    """The stored RGB crop of a sample as Pillow's grey level in [0,1]."""
    from preprocess.image import ImageConfig

    rgb = reader[sample_id]["image"]  # normalized [3,S,S]
    cfg = ImageConfig()
    pixels = rgb * np.asarray(cfg.std, np.float32)[:, None, None] + np.asarray(cfg.mean, np.float32)[:, None, None]
    return (pixels * np.asarray([0.299, 0.587, 0.114], np.float32)[:, None, None]).sum(0)


def test_unknown_key_of_a_registered_modality_is_named(event_modality):
    with pytest.raises(ValueError, match=r"event\.gain"):
        BuildConfig.from_dict({"event": {"gain": 2}})
    with pytest.raises(ValueError, match=r"event\.std = 'wide'"):
        BuildConfig.from_dict({"event": {"std": "wide"}})


def test_unregistered_modality_is_refused_by_name():
    with pytest.raises(ValueError, match="unknown modality 'event'"):
        get_modality("event")
    with pytest.raises(ValueError, match="unknown build config key"):
        BuildConfig.from_dict({"event": {"std": 0.5}})


def test_a_bug_in_a_modality_stops_the_shard_instead_of_becoming_a_reject(tmp_path):
    def buggy(frame01, cfg, row, frame):
        return BuiltModality({"counts": frame01.nonexistent_attribute})  # AttributeError: a bug

    register_modality(dataclasses.replace(EVENT, preprocess=buggy))
    try:
        src = tmp_path / "src"
        src.mkdir()
        table = _event_source(src, n=2)
        with pytest.raises(Exception) as caught:
            build_dataset([create_source("generic", table)], tmp_path / "ds", BuildConfig(shard_size=8), progress=False)
        chain = []
        error: BaseException | None = caught.value
        while error is not None:
            chain.append(error)
            error = error.__cause__ or error.__context__
        assert any(isinstance(e, AttributeError) for e in chain) or "AttributeError" in str(caught.value)
        assert not list((tmp_path / "ds").glob("index/*.parquet")), "a shard with a bug was committed"
    finally:
        unregister_modality("event")


def test_spec_checks_refuse_incoherent_definitions():
    with pytest.raises(ValueError, match="needs decode and preprocess"):
        ModalitySpec("flat", "spatial", (StoredArray("x", "uint8", "[S,S]"),), EventConfig, _event_ready)
    with pytest.raises(ValueError, match="mask"):
        ModalitySpec(
            "flat", "temporal", (StoredArray("x", "uint8", "[T]"),), EventConfig, _event_ready, joint=True, mask="m"
        )
    with pytest.raises(ValueError, match="already registered"):
        register_modality(
            ModalitySpec("image", "text", (StoredArray("x", "int32", "[77]"),), EventConfig, _event_ready)
        )


def test_plugins_named_in_the_environment_reach_the_command_line(tmp_path):
    """Another process (the CLI, a Ray worker) registers the modules listed in BINDSET_PLUGINS."""
    import os
    import subprocess
    import sys

    (tmp_path / "my_event_plugin.py").write_text(
        "import numpy as np\n"
        "from dataclasses import dataclass\n"
        "from preprocess.registry import ModalitySpec, StoredArray, register_modality\n"
        "@dataclass(frozen=True)\nclass Cfg:\n    size: int = 224\n"
        "register_modality(ModalitySpec('event', 'temporal', (StoredArray('x', 'float32', '[T]'),), Cfg,\n"
        "    lambda stored, cfg: {'event': np.asarray(stored['event/x'])}, joint=True))\n"
    )
    env = {**os.environ, "BINDSET_PLUGINS": "my_event_plugin"}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-m", "flows.cli", "preprocess", "--help"], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert "event" in proc.stdout
    env["BINDSET_PLUGINS"] = "no_such_plugin_module"
    proc = subprocess.run(
        [sys.executable, "-m", "flows.cli", "preprocess", "--help"], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == (
        "bindset: error: BINDSET_PLUGINS names 'no_such_plugin_module', which cannot be imported: "
        "No module named 'no_such_plugin_module'"
    )


def test_validated_overrides_keep_their_values_and_the_config_hash():
    """Checking an override does not rewrite it: ``max_depth_m = 10`` is recorded as 10, so datasets
    built with the same TOML before the checks resume without a config mismatch."""
    from storage.catalog import config_hash

    config = BuildConfig.from_dict({"depth": {"max_depth_m": 10}, "thermal": {"percentiles": [1, 98]}})
    default = BuildConfig()
    unchecked = dataclasses.replace(
        default,
        depth=dataclasses.replace(default.depth, max_depth_m=10),
        thermal=dataclasses.replace(default.thermal, percentiles=(1, 98)),
    )
    assert config.to_dict()["depth"]["max_depth_m"] == 10 and isinstance(config.depth.max_depth_m, int)
    assert config_hash(config.to_dict()) == config_hash(unchecked.to_dict())


def test_a_registered_modality_without_a_build_step_is_a_named_reject_not_a_silent_drop(tmp_path):
    register_modality(
        ModalitySpec(
            name="sonar",
            kind="temporal",
            stored=(StoredArray("ping", "float32", "[T]"),),
            config=EventConfig,
            model_ready=lambda stored, cfg: {"sonar": stored["sonar/ping"]},
            joint=True,
        )
    )
    try:
        src = tmp_path / "src"
        src.mkdir()
        (src / "rgb.png").write_bytes(_png(Image.new("RGB", (120, 90))))
        (src / "s.bin").write_bytes(b"\x00" * 64)
        pl.DataFrame([{"image": "rgb.png", "sonar": "s.bin"}]).write_csv(src / "pairs.csv")
        report = build_dataset(
            [create_source("generic", src / "pairs.csv")], tmp_path / "ds", BuildConfig(), progress=False
        )
        assert report.stored == 0 and report.rejected == 1
        message = storage.scan_rejects(tmp_path / "ds").collect()["message"][0]
        assert "modality 'sonar' (temporal) has no build step" in message
    finally:
        unregister_modality("sonar")
