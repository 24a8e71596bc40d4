"""A corrupted chunk never reaches training: every read path raises naming the dataset, shard and
sample (or the loader skips it when asked, keeping exactly-once and exact resume), ``validate`` names
it, format-1 shards (no checksums) stay readable and are named, and a remote shard corrupted after
commit is refused by its sha256 before use."""

import logging
import shutil

import h5py
import numpy as np
import polars as pl
import pytest
from torch.utils.data import DataLoader

import storage
from pipelines.build import build_dataset
from pipelines.config import BuildConfig
from pipelines.sources import create_source
from pipelines.synth import synthesize
from pipelines.validate import validate_dataset
from storage import CorruptSampleError
from storage import format as fmt
from storage.loader import ShardDataset, collate
from storage.shard import ShardReader

# layout, synth kwargs, samples, the HDF5 array to corrupt, the loader modality that reads it
CASES = {
    "pixels": ("llvip", {}, 4, "image/pixels", "image"),
    "spectrogram": ("audioset", {"duration": 4.0}, 3, "audio/log_mel", "audio"),
    "imu": ("ego4d", {"duration": 8.0}, 1, "imu/values", "imu"),
}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """One small committed dataset per case, built once; tests corrupt copies of it."""
    root = tmp_path_factory.mktemp("integrity")
    built = {}
    for name, (layout, kwargs, n, _, _) in CASES.items():
        synthesize(root / f"{name}-src", layout, n, seed=1, **kwargs)
        build_dataset(
            [create_source(layout, root / f"{name}-src")], root / name, BuildConfig(shard_size=2), progress=False
        )
        built[name] = root / name
    return built


def corrupt_chunk(root, shard: int, row: int, key: str) -> None:
    """Change one byte in the middle of the chunk holding ``row`` of ``key`` (in place, same size).
    One byte: Fletcher-32 catches every change of one 16-bit word."""
    path = fmt.shard_path(root, shard)
    with h5py.File(path, "r") as f:
        dset = f[key]
        info = dset.id.get_chunk_info_by_coord((row,) + (0,) * (dset.ndim - 1))
    with open(path, "r+b") as fh:
        fh.seek(info.byte_offset + info.size // 2)
        byte = fh.read(1)[0]
        fh.seek(info.byte_offset + info.size // 2)
        fh.write(bytes([byte ^ 0x10]))


def _victim(root) -> tuple[str, int, int]:
    """The last sample of the dataset: (sample_id, shard, row)."""
    index = storage.scan_index(root).select("sample_id", "shard", "row").collect().sort("shard", "row")
    sid, shard, row = index.row(index.height - 1)
    return sid, shard, row


def _ids(root) -> list[str]:
    return sorted(storage.scan_index(root).collect()["sample_id"].to_list())


@pytest.mark.parametrize("case", list(CASES))
def test_a_corrupt_chunk_is_named_on_every_read_path(case, pristine, tmp_path, caplog):
    _, _, _, key, modality = CASES[case]
    root = tmp_path / "ds"
    shutil.copytree(pristine[case], root)
    sid, shard, row = _victim(root)
    others = [s for s in _ids(root) if s != sid]
    assert others
    corrupt_chunk(root, shard, row, key)
    named = rf"shard {shard:05d} row {row} \(sample {sid}\) {key}: Fletcher-32 checksum mismatch"

    # open_dataset(...)[sample_id] and the batch read
    with storage.open_dataset(root) as reader:
        with pytest.raises(CorruptSampleError, match=named) as err:
            reader[sid]
        e = err.value
        assert (e.shard, e.row, e.sample_id, e.key) == (shard, row, sid, key) and str(root) in str(e)
        assert isinstance(e, OSError)
        for other in others:
            assert np.isfinite(reader[other][modality]).all()
        same_shard = storage.scan_index(root).filter(pl.col("shard") == shard).collect().sort("row")
        with pytest.raises(CorruptSampleError, match=named):
            reader.read_batch(shard, same_shard["row"].to_list(), modality)

    # the loader, raise policy (the default), through DataLoader workers
    with pytest.raises(CorruptSampleError, match=named):
        list(DataLoader(ShardDataset(root, shuffle=False), batch_size=2, num_workers=2, collate_fn=collate))

    # skip policy: every other sample exactly once, the skipped one reported in its batch and counted
    ds = ShardDataset(root, shuffle=True, seed=3, on_corrupt="skip")
    seen, skipped = [], []
    for batch in DataLoader(ds, batch_size=2, num_workers=2, collate_fn=collate):
        seen += batch["sample_id"]
        skipped += batch.get("_skipped", [])
        if batch["sample_id"]:
            assert batch[modality].shape[0] == len(batch["sample_id"]) and np.isfinite(batch[modality].numpy()).all()
    assert sorted(seen) == others and skipped == [sid] and ds.corrupt_skipped == 1
    # in-process: one warning line naming it
    with caplog.at_level(logging.WARNING, logger="storage.loader"):
        assert sorted(s["sample_id"] for s in ShardDataset(root, on_corrupt="skip") if "_skipped" not in s) == others
    lines = [r.getMessage() for r in caplog.records if r.name == "storage.loader"]
    assert len(lines) == 1 and sid in lines[0] and "\n" not in lines[0]

    # validate reads every chunk
    report = validate_dataset(root)
    assert not report.ok
    assert [(e.shard, e.row, e.sample_id, e.key) for e in report.corrupt_samples] == [(shard, row, sid, key)]
    assert any(
        f"corrupt sample: shard {shard:05d} row {row} (sample {sid}) {key}: Fletcher-32 checksum mismatch"
        == line.strip()
        for line in report.lines()
    )


def test_a_batch_read_names_every_bad_row(pristine, tmp_path):
    root = tmp_path / "ds"
    shutil.copytree(pristine["pixels"], root)
    index = storage.scan_index(root).filter(pl.col("shard") == 0).collect().sort("row")
    assert index.height == 2
    corrupt_chunk(root, 0, 0, "image/pixels")
    corrupt_chunk(root, 0, 1, "thermal/intensity")
    with ShardReader(root, 0) as reader:
        with pytest.raises(CorruptSampleError) as err:
            reader.read_stored_rows([1, 0], "image")  # out of order: the fancy-selection path
        assert (err.value.row, err.value.sample_id) == (0, index["sample_id"][0])
        with pytest.raises(CorruptSampleError) as err:
            reader.read_stored_rows([0, 1], "thermal")
        assert (err.value.row, err.value.sample_id, err.value.key) == (1, index["sample_id"][1], "thermal/intensity")
        assert reader.read_stored_rows([1], "image")["image/pixels"].shape[0] == 1
        found = reader.verify()
    assert [(e.row, e.key) for e in found] == [(0, "image/pixels"), (1, "thermal/intensity")]


def test_skipping_keeps_mid_epoch_resume_exact(pristine, tmp_path):
    """A skipped sample holds its place in the plan (it counts as consumed): the batches of an
    interrupted and resumed epoch are those of an uninterrupted one."""
    root = tmp_path / "ds"
    shutil.copytree(pristine["pixels"], root)
    sid, shard, row = _victim(root)
    corrupt_chunk(root, shard, row, "image/pixels")

    def loader(ds):
        return DataLoader(ds, batch_size=1, num_workers=2, collate_fn=collate)

    def run(ds):
        return [(b["sample_id"], b.get("_skipped", [])) for b in loader(ds)]

    whole = run(ShardDataset(root, seed=7, on_corrupt="skip"))
    assert sorted(s for ids, _ in whole for s in ids) == [s for s in _ids(root) if s != sid]
    for k in range(len(whole) + 1):
        ds = ShardDataset(root, seed=7, on_corrupt="skip")
        consumed = []
        for batch in loader(ds):
            if len(consumed) == k:
                break
            consumed.append((batch["sample_id"], batch.get("_skipped", [])))
        state = ds.state_dict(len(consumed), loader(ds))
        again = ShardDataset(root, seed=7, on_corrupt="skip")
        again.load_state_dict(state)
        assert consumed + run(again) == whole, k


def test_format1_shards_read_and_are_named_by_validate(monkeypatch, tmp_path):
    import storage.shard_writer as shard_mod

    def without_checksums(h5, key, shape, dtype):
        return h5.create_dataset(key, shape=shape, dtype=dtype, chunks=(1, *shape[1:]), track_times=False)

    synthesize(tmp_path / "src", "llvip", 3, seed=2)
    with monkeypatch.context() as m:
        m.setattr(shard_mod, "_create_chunked", without_checksums)
        build_dataset(
            [create_source("llvip", tmp_path / "src")], tmp_path / "old", BuildConfig(shard_size=2), progress=False
        )
    build_dataset(
        [create_source("llvip", tmp_path / "src")], tmp_path / "new", BuildConfig(shard_size=2), progress=False
    )
    with ShardReader(tmp_path / "old", 0) as reader:
        assert "image/pixels" in reader.unchecked_keys()
    with storage.open_dataset(tmp_path / "old") as old, storage.open_dataset(tmp_path / "new") as new:
        for sid in _ids(tmp_path / "old"):
            np.testing.assert_array_equal(old[sid]["image"], new[sid]["image"])
    report = validate_dataset(tmp_path / "old")
    assert report.ok and report.unchecked == ["00000", "00001"]
    warning = [line for line in report.lines() if "no per-chunk checksums" in line]
    assert len(warning) == 1 and warning[0].strip().startswith("warning: 2 shard(s)") and "00000, 00001" in warning[0]
    fresh = validate_dataset(tmp_path / "new")
    assert fresh.ok and fresh.unchecked == [] and len(fresh.lines()) == 1


def test_a_remote_shard_corrupted_after_commit_is_refused_before_use(s3_server, s3_bucket, tmp_path, monkeypatch):
    from storage.cache import ShardIntegrityError

    monkeypatch.setenv("BINDSET_CACHE_DIR", str(tmp_path / "cache"))
    synthesize(tmp_path / "src", "llvip", 2, seed=4)
    url = f"s3://{s3_bucket}/ds"
    build_dataset([create_source("llvip", tmp_path / "src")], url, BuildConfig(shard_size=2), progress=False)
    sid = _ids(url)[0]
    client = s3_server.client()
    data = bytearray(client.get_object(Bucket=s3_bucket, Key="ds/shards/00000.h5")["Body"].read())
    data[len(data) // 2] ^= 0x10
    client.put_object(Bucket=s3_bucket, Key="ds/shards/00000.h5", Body=bytes(data))
    with storage.open_dataset(url) as reader:
        with pytest.raises(ShardIntegrityError, match=rf"shard 00000 of {url}.*sha256"):
            reader[sid]
    assert not list((tmp_path / "cache").glob("*.h5"))  # the bad copy is not kept
