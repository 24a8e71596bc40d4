"""The `bindset` command line as a user runs it (in-process `main`, and one real subprocess)."""

import subprocess
import sys

import numpy as np
import polars as pl
import pytest

import storage
from flows.cli import main


@pytest.mark.parametrize("name", ["dog", "car", "bird"])
def test_preprocess_image_matches_reference(shared_dir, tmp_path, name):
    out = tmp_path / f"{name}.npy"
    assert (
        main(
            [
                "preprocess",
                str(shared_dir / "samples" / "imagebind" / f"{name}_image.jpg"),
                "--modality",
                "image",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    got = np.load(out)
    ref = np.load(shared_dir / "reference" / "imagebind" / f"vision_{name}.npy")[0]
    assert got.shape == (3, 224, 224) and got.dtype == np.float32
    assert np.abs(got - ref).max() <= 1e-4


def test_preprocess_depth_and_thermal(shared_dir, tmp_path):
    depth = tmp_path / "d.npy"
    assert (
        main(
            [
                "preprocess",
                str(shared_dir / "samples" / "sunrgbd" / "SUN_depth.png"),
                "--modality",
                "depth",
                "--sensor",
                "kv1",
                "--out",
                str(depth),
            ]
        )
        == 0
    )
    d = np.load(depth)
    assert d.shape == (1, 224, 224) and np.isfinite(d).all() and (d == 0).any() and d.max() > 0
    thermal = tmp_path / "t.npy"
    assert (
        main(
            [
                "preprocess",
                str(shared_dir / "samples" / "llvip" / "infrared" / "190001.jpg"),
                "--modality",
                "thermal",
                "--out",
                str(thermal),
            ]
        )
        == 0
    )
    assert np.load(thermal).shape == (1, 224, 224)


def test_preprocess_bad_file_is_a_clear_error(tmp_path, capsys):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    assert main(["preprocess", str(bad), "--modality", "image", "--out", str(tmp_path / "x.npy")]) == 2
    assert "not a decodable image" in capsys.readouterr().err


def test_demo_builds_a_queryable_dataset(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "flows.cli", "demo", "--out", str(tmp_path / "demo"), "-n", "3"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    dataset = tmp_path / "demo" / "dataset"
    assert str(dataset) in proc.stdout
    index = storage.scan_index(dataset).collect()
    counts = dict(index.group_by("layout").agg(pl.len()).iter_rows())
    assert counts == {"sunrgbd": 3, "llvip": 3, "image-text": 3}
    assert "samples by modality" in proc.stdout and "thermal" in proc.stdout
    with storage.open_dataset(dataset) as reader:
        sample = reader[index.filter(pl.col("layout") == "sunrgbd")["sample_id"][0]]
        assert sample["image"].shape == (3, 224, 224) and sample["depth"].shape == (1, 224, 224)


def test_synth_and_build_commands(tmp_path, capsys):
    assert main(["synth", str(tmp_path / "src"), "--layout", "image-text", "-n", "4", "--seed", "1"]) == 0
    assert (
        main(
            [
                "build",
                str(tmp_path / "src"),
                "--layout",
                "image-text",
                "--out",
                str(tmp_path / "ds"),
                "--executor",
                "local",
                "--no-progress",
            ]
        )
        == 0
    )
    assert "samples stored: 4" in capsys.readouterr().out
    index = storage.scan_index(tmp_path / "ds").collect()
    assert index["caption"].null_count() == 0
    assert main(["inspect", str(tmp_path / "ds")]) == 0
    assert "image-text" in capsys.readouterr().out
