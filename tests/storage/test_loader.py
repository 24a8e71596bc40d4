"""The PyTorch loader: every sample once per epoch across workers and ranks, reproducible batches,
augmented RGB and depth still aligned, frozen embeddings joined by sample_id."""

import sys
from collections import Counter
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

import storage
from pipelines.build import build_dataset
from pipelines.config import BuildConfig
from pipelines.sources import create_source
from preprocess.augment import AugmentConfig, draw_params, sample_rng
from storage.loader import ShardDataset, collate
from storage.reader import DatasetReader
from storage.shard import ShardReader

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "preprocess"))
from _markers import marker_centroid  # noqa: E402  (the alignment tests' marker finder)

N_SCENES = 12
H, W = 480, 640
FX = 518.8
# Marker: a 24x24 px square at rows 216..240, cols 384..408 of every 480x640 frame (off centre, so
# a flip moves it), bright in RGB and near (1 m, high disparity) in depth; background 3 m.
MARK = (slice(216, 240), slice(384, 408))


def _write_sun_like(root: Path, n: int) -> None:
    """A tiny SUN RGB-D toolbox tree: kv1/NYUdata/<scene>/{image/*.jpg, depth/*.png (uint16,
    bit-rotated mm), intrinsics.txt}."""
    rng = np.random.default_rng(0)
    for k in range(n):
        scene = root / "kv1" / "NYUdata" / f"NYU{k:04d}"
        (scene / "image").mkdir(parents=True)
        (scene / "depth").mkdir()
        rgb = np.full((H, W, 3), 50, np.uint8)
        rgb[..., k % 3] += rng.integers(0, 30, (H, W), dtype=np.uint8)
        rgb[MARK] = 255
        Image.fromarray(rgb).save(scene / "image" / f"{k:04d}.jpg", quality=95)
        mm = np.full((H, W), 3000, np.uint16)
        mm[MARK] = 1000
        mm[300:340, 100:180] = 0  # a hole: invalid depth must stay invalid through every crop
        raw = ((mm << 3) | (mm >> 13)).astype(np.uint16)  # the toolbox's bit rotation
        Image.fromarray(raw).save(scene / "depth" / f"{k:04d}.png")
        (scene / "intrinsics.txt").write_text(f"{FX} 0 320\n0 {FX} 240\n0 0 1\n")


@pytest.fixture(scope="module")
def sun(tmp_path_factory):
    root = tmp_path_factory.mktemp("loader")
    _write_sun_like(root / "src", N_SCENES)
    report = build_dataset(
        [create_source("sunrgbd", root / "src")], root / "ds", BuildConfig(shard_size=3), progress=False
    )
    assert report.stored == N_SCENES and report.rejected == 0
    ids = sorted(storage.scan_index(root / "ds").collect()["sample_id"].to_list())
    return root / "ds", ids


def _epoch_ids(ds, num_workers=2, batch_size=2):
    loader = DataLoader(ds, batch_size=batch_size, num_workers=num_workers, collate_fn=collate)
    return [sid for batch in loader for sid in batch["sample_id"]]


def test_two_workers_read_every_sample_exactly_once_per_epoch(sun):
    root, ids = sun
    ds = ShardDataset(root, seed=1)
    orders = []
    for epoch in (0, 1):
        ds.set_epoch(epoch)
        got = _epoch_ids(ds)
        assert Counter(got) == Counter(ids), f"epoch {epoch}: {Counter(got) - Counter(ids)} extra"
        assert len(ds) == len(ids)
        orders.append(got)
    assert orders[0] != orders[1]  # reshuffled per epoch


def test_persistent_workers_follow_set_epoch(sun):
    root, ids = sun
    ds = ShardDataset(root, seed=1)
    loader = DataLoader(ds, batch_size=2, num_workers=2, collate_fn=collate, persistent_workers=True)
    orders = []
    for epoch in (0, 1, 0):
        ds.set_epoch(epoch)
        got = [sid for batch in loader for sid in batch["sample_id"]]
        assert Counter(got) == Counter(ids)
        orders.append(got)
    assert orders[0] != orders[1] and orders[0] == orders[2]
    ds.set_epoch(1)
    assert orders[1] == _epoch_ids(ds)  # the same order as freshly started workers


def test_two_ranks_with_two_workers_each_partition_the_dataset(sun):
    root, ids = sun
    for granularity in ("auto", "row"):
        per_rank = []
        for rank in (0, 1):
            ds = ShardDataset(root, seed=2, rank=rank, world_size=2, granularity=granularity)
            ds.set_epoch(3)
            got = _epoch_ids(ds)
            assert len(got) == len(set(got)) == len(ds)
            per_rank.append(set(got))
        assert not per_rank[0] & per_rank[1], f"{granularity}: ranks overlap"
        assert per_rank[0] | per_rank[1] == set(ids), granularity
        if granularity == "row":
            assert abs(len(per_rank[0]) - len(per_rank[1])) <= 1


@pytest.mark.parametrize("granularity", ["auto", "shard", "row"])
def test_plans_cover_every_sample_once_for_any_layout(sun, granularity):
    """The plan alone, for many rank/worker layouts (4 shards of 3: shard and row splits both occur)."""
    root, ids = sun
    ds = ShardDataset(root, seed=5, granularity=granularity, buffer_shards=2)
    for world in (1, 2, 3, 5):
        for workers in (1, 2, 3):
            for epoch in (0, 1):
                seen = []
                for rank in range(world):
                    rank_total = 0
                    for worker in range(workers):
                        part = ds.plan(epoch, rank, world, worker, workers)
                        seen += ds.sample_ids(part)
                        rank_total += part.size
                    assert rank_total == ds.plan(epoch, rank, world).size  # a rank's share ignores num_workers
                assert sorted(seen) == ids, (world, workers, epoch)


def test_same_seed_and_epoch_give_the_same_batches(sun):
    root, _ = sun

    def batches(seed, epoch):
        ds = ShardDataset(root, seed=seed, augment=AugmentConfig(), train=True)
        ds.set_epoch(epoch)
        return list(DataLoader(ds, batch_size=3, num_workers=2, collate_fn=collate))

    a, b, c = batches(7, 2), batches(7, 2), batches(7, 3)
    assert [x["sample_id"] for x in a] == [x["sample_id"] for x in b]
    for x, y in zip(a, b):
        assert x.keys() == y.keys() == {"sample_id", "image", "depth", "depth_valid"}
        for key in ("image", "depth", "depth_valid"):
            assert torch.equal(x[key], y[key])
    assert [x["sample_id"] for x in a] != [x["sample_id"] for x in c]
    first = {sid: img for x in a for sid, img in zip(x["sample_id"], x["image"])}
    other = {sid: img for x in c for sid, img in zip(x["sample_id"], x["image"])}
    assert all(not torch.equal(first[s], other[s]) for s in first)  # new augmentation each epoch


def test_without_augmentation_tensors_equal_the_readers(sun):
    root, ids = sun
    ds = ShardDataset(root, shuffle=False, train=False, augment=AugmentConfig())
    with DatasetReader(root) as reader:
        for sample in ds:
            ref = reader[sample["sample_id"]]
            assert set(ref) == set(sample) - {"sample_id"}
            for key, value in ref.items():
                assert np.array_equal(sample[key].numpy(), value), key
    ds = ShardDataset(root, shuffle=False, modalities=["image"])
    sample = next(iter(ds))
    assert set(sample) == {"sample_id", "image"} and sample["image"].dtype == torch.float32


def test_augmented_rgb_and_depth_stay_aligned_through_the_loader(sun):
    root, ids = sun
    cfg = AugmentConfig(erase_prob=0.0)
    ds = ShardDataset(root, seed=11, augment=cfg, train=True, modalities=["image", "depth"])
    # Where the marker sits in each stored (eval) crop, to predict it from the drawn box.
    stored, where = {}, {}
    index = storage.scan_index(root).collect()
    for row in index.iter_rows(named=True):
        with ShardReader(root, row["shard"]) as shard:
            stored[row["sample_id"]] = shard.read_stored(row["row"])
        rgb = stored[row["sample_id"]]["image/pixels"].astype(np.float32).mean(axis=0)
        where[row["sample_id"]] = (marker_centroid(rgb, 90) + 0.5) / rgb.shape[0]  # normalized centre
    checked = flips = 0
    for epoch in range(8):
        ds.set_epoch(epoch)
        loader = DataLoader(ds, batch_size=4, num_workers=2 if epoch < 2 else 0, collate_fn=collate)
        for batch in loader:
            for sid, image, depth, valid in zip(
                batch["sample_id"], batch["image"], batch["depth"], batch["depth_valid"]
            ):
                params = draw_params(stored[sid], cfg, sample_rng(11, epoch, sid))
                box, size = params.box, image.shape[-1]
                v, u = where[sid]
                want = np.array(
                    [(v - box.y0) / (box.y1 - box.y0) * size - 0.5, (u - box.x0) / (box.x1 - box.x0) * size - 0.5]
                )
                if box.flip:
                    want[1] = size - 1 - want[1]
                if not ((want >= 6).all() and (want <= size - 7).all()):
                    continue
                got_rgb = marker_centroid(image.numpy().mean(axis=0), 1.0)
                got_depth = marker_centroid(np.where(valid[0].numpy(), depth[0].numpy(), 0.0), 10.0)
                assert got_rgb is not None and got_depth is not None, (sid, epoch, box)
                assert np.abs(got_rgb - want).max() <= 1.5, (sid, epoch, box, got_rgb, want)
                assert np.abs(got_depth - want).max() <= 1.5, (sid, epoch, box, got_depth, want)
                assert np.abs(got_rgb - got_depth).max() <= 1.0, (sid, epoch, box, got_rgb, got_depth)
                assert torch.equal(depth[~valid], torch.zeros_like(depth[~valid]))
                checked += 1
                flips += box.flip
    print(f"aligned: {checked} augmented samples checked, {flips} flipped")
    assert checked >= 40 and 10 <= flips <= checked - 10, (checked, flips)


def _write_store(root: Path, encoder: str, skip: set[str], null: set[str], as_list: bool = False) -> dict:
    vectors = {}
    rng = np.random.default_rng(0)
    for index_file in sorted((root / "index").glob("*.parquet")):
        sids = [s for s in pl.read_parquet(index_file)["sample_id"].to_list() if s not in skip]
        rows = []
        for sid in sids:
            vec = rng.standard_normal(8).astype(np.float32)
            vectors[sid] = vec
            rows.append(None if sid in null else vec.tolist())
        dtype = pl.List(pl.Float32) if as_list else pl.Array(pl.Float32, 8)
        frame = pl.DataFrame({"sample_id": sids, "image": pl.Series("image", rows, dtype=dtype)})
        out = root / "embeddings" / encoder / index_file.name
        out.parent.mkdir(parents=True, exist_ok=True)
        frame.write_parquet(out)
    return vectors


@pytest.mark.parametrize("as_list", [False, True], ids=["array", "list"])
def test_embeddings_are_joined_by_sample_id_and_missing_ones_counted(sun, as_list):
    root, ids = sun
    encoder = f"test-enc-{'list' if as_list else 'array'}"
    absent, null = {ids[0]}, {ids[5]}
    vectors = _write_store(root, encoder, skip=absent, null=null, as_list=as_list)
    with pytest.warns(UserWarning, match="2 of 12 samples have no"):
        ds = ShardDataset(root, embeddings=encoder, modalities=["depth"], seed=3)
    assert ds.missing_embeddings == 2 and set(ds.missing_embedding_ids) == absent | null
    assert ds.num_samples == len(ids) - 2
    got = {}
    for batch in DataLoader(ds, batch_size=4, num_workers=2, collate_fn=collate):
        assert batch["image_embedding"].shape[1:] == (8,) and batch["image_embedding"].dtype == torch.float32
        assert "image" not in batch  # only the requested modality's pixels, plus the frozen vectors
        for sid, vec in zip(batch["sample_id"], batch["image_embedding"]):
            got[sid] = vec.numpy()
    assert set(got) == set(ids) - absent - null
    for sid, vec in got.items():
        np.testing.assert_array_equal(vec, vectors[sid])
    with pytest.raises(FileNotFoundError):
        ShardDataset(root, embeddings="no-such-encoder")


def test_collate_stacks_tensors_keeps_ids_and_refuses_mixed_keys():
    a = {"sample_id": "a", "image": torch.zeros(3, 4, 4)}
    b = {"sample_id": "b", "image": torch.ones(3, 4, 4)}
    batch = collate([a, b])
    assert batch["sample_id"] == ["a", "b"] and batch["image"].shape == (2, 3, 4, 4)
    with pytest.raises(ValueError, match="modalities="):
        collate([a, {"sample_id": "c", "depth": torch.zeros(1, 4, 4)}])


def test_bad_arguments_are_refused(sun):
    root, _ = sun
    with pytest.raises(ValueError):
        ShardDataset(root, modalities=["smell"])
    with pytest.raises(ValueError):
        ShardDataset(root, rank=2, world_size=2)
    with pytest.raises(ValueError):
        ShardDataset(root, granularity="file")
    with pytest.raises(FileNotFoundError):
        ShardDataset(root.parent / "nowhere")
