import hashlib
from pathlib import Path

import numpy as np
import polars as pl
import pytest

import storage
from storage import format as fmt
from storage.locks import DatasetLock, DatasetLocked
from storage.shard import ShardReader, ShardWriter


def _write(root: Path, shard_id: int = 0, n: int = 3, capacity: int = 4):
    with ShardWriter(root, shard_id, capacity) as writer:
        for i in range(n):
            writer.write(
                {"image/pixels": np.full((3, 4, 4), i, np.uint8), "depth/valid": np.eye(4, dtype=bool)[None]},
                {"sample_id": f"s{i}", "modalities": ["image", "depth"], "source": "t", "split": "train"},
            )
        writer.reject("bad", "decode", ValueError("corrupt jpeg"), "x/bad.jpg")
        return writer.commit()


def test_commit_publishes_shard_index_rejects_and_nothing_in_tmp(tmp_path):
    summary = _write(tmp_path)
    assert summary.stored == 3 and summary.rejected == 1
    assert summary.reject_reasons == {"decode:ValueError": 1}
    assert fmt.shard_path(tmp_path, 0).exists() and fmt.index_path(tmp_path, 0).exists()
    assert list((tmp_path / fmt.TMP_DIR).iterdir()) == []
    rejects = storage.scan_rejects(tmp_path).collect()
    assert rejects.row(0, named=True)["message"] == "corrupt jpeg"
    assert rejects["input_path"].to_list() == ["x/bad.jpg"]


def test_reader_returns_what_was_written_trimmed_to_rows(tmp_path):
    _write(tmp_path, n=3, capacity=8)
    with ShardReader(tmp_path, 0) as reader:
        assert len(reader) == 3
        assert reader.keys() == ["depth/valid", "image/pixels"]
        assert reader.read_stored(2)["image/pixels"].max() == 2
        with pytest.raises(IndexError):
            reader.read_stored(3)
    import h5py

    with h5py.File(fmt.shard_path(tmp_path, 0)) as f:
        assert f["image/pixels"].shape == (3, 3, 4, 4)
        assert f["image/pixels"].chunks == (1, 3, 4, 4)


def test_same_content_gives_byte_identical_files(tmp_path):
    a = _write(tmp_path / "a")
    b = _write(tmp_path / "b")
    assert a.shard_sha256 == b.shard_sha256 and a.index_sha256 == b.index_sha256
    digest = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()  # noqa: E731
    assert digest(fmt.shard_path(tmp_path / "a", 0)) == a.shard_sha256


def test_abort_leaves_nothing_visible(tmp_path):
    with pytest.raises(RuntimeError):
        with ShardWriter(tmp_path, 1, 2) as writer:
            writer.write({"image/pixels": np.zeros((3, 2, 2), np.uint8)}, {"sample_id": "a", "modalities": ["image"]})
            raise RuntimeError("worker died")
    assert not fmt.index_path(tmp_path, 1).exists()
    assert not fmt.shard_path(tmp_path, 1).exists()
    assert storage.scan_index(tmp_path).collect().height == 0


def test_shape_mismatch_names_the_sample(tmp_path):
    with ShardWriter(tmp_path, 0, 2) as writer:
        writer.write({"image/pixels": np.zeros((3, 2, 2), np.uint8)}, {"sample_id": "a", "modalities": ["image"]})
        with pytest.raises(ValueError, match="'b'"):
            writer.write({"image/pixels": np.zeros((3, 3, 3), np.uint8)}, {"sample_id": "b", "modalities": ["image"]})
        writer.abort()


def test_scan_index_is_typed_even_when_empty(tmp_path):
    frame = storage.scan_index(tmp_path).collect()
    assert frame.height == 0
    assert frame.schema["modalities"] == pl.List(pl.Utf8)


def test_lock_names_holder_and_takes_over_stale_lock(tmp_path):
    with DatasetLock(tmp_path, "build"):
        with pytest.raises(DatasetLocked, match=r"pid \d+ on .*started"):
            DatasetLock(tmp_path, "build").acquire()
    # A lock left by a dead process on this host is stale.
    lock = DatasetLock(tmp_path, "build")
    lock.path.parent.mkdir(parents=True, exist_ok=True)
    import json
    import socket

    lock.path.write_text(
        json.dumps({"host": socket.gethostname(), "pid": 2**22 + 12345, "started": "x", "purpose": "build"})
    )
    with DatasetLock(tmp_path, "build") as taken:
        assert taken.read().pid != 2**22 + 12345
