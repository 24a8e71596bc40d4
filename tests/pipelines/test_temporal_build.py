"""AudioSet-style video+audio and Ego4D-style video+IMU build end to end, on one clock."""

import numpy as np
import polars as pl
import pytest

import storage
from flows.cli import main
from pipelines.build import build_dataset
from pipelines.config import BuildConfig
from pipelines.sources import create_source
from pipelines.synth import synthesize
from preprocess.audio import audio_model_input
from preprocess.imu import parse_ego4d_imu_csv
from preprocess.video import video_model_input


@pytest.fixture(scope="module")
def audioset_ds(tmp_path_factory):
    root = tmp_path_factory.mktemp("as")
    synthesize(root / "with_audio", "audioset", 3, seed=1, duration=6.0)
    synthesize(root / "silent", "audioset", 1, seed=2, duration=4.0, audio=False)
    sources = [
        create_source("audioset", root / "with_audio", name="as"),
        create_source("audioset", root / "silent", name="as-noaudio"),
    ]
    report = build_dataset(sources, root / "ds", BuildConfig(shard_size=2), progress=False)
    return root, report


def test_audioset_builds_video_and_audio_with_clip_times(audioset_ds):
    root, report = audioset_ds
    assert report.stored == 3 and report.rejected == 1
    index = storage.scan_index(root / "ds").collect().sort("source", "sample_id")
    with_audio = index.filter(pl.col("source") == "as")
    assert with_audio["modalities"].to_list() == [["video", "audio"]] * 3
    row = with_audio.row(0, named=True)
    assert len(row["video_clip_t0"]) == 5 and len(row["audio_clip_t0"]) == 3
    assert row["video_clip_t0"][0] == 0.0 and row["video_clip_t1"][-1] == pytest.approx(6.0)
    assert all(b - a == pytest.approx(2.0) for a, b in zip(row["audio_clip_t0"], row["audio_clip_t1"]))
    assert row["label"].startswith("/m/")
    assert row["q_clip_coverage"] == pytest.approx(1.0)


def test_a_clip_without_audio_is_a_reject_naming_the_missing_partner(audioset_ds):
    """AudioSet pairs video and audio: a video-only sample would be skipped silently by a loader
    asking for both and would overstate the usable pairs."""
    root, report = audioset_ds
    assert storage.scan_index(root / "ds").filter(pl.col("source") == "as-noaudio").collect().height == 0
    rejects = storage.scan_rejects(root / "ds").collect()
    assert rejects["stage"].to_list() == ["partner"] and rejects["error_type"].to_list() == ["MissingPartner"]
    assert rejects["message"][0].startswith("no audio stream in videos/")
    assert "layout audioset pairs video and audio" in rejects["message"][0]
    assert report.reject_reasons() == {"partner:MissingPartner": 1}


def test_keep_partial_stores_the_video_only_clip_and_counts_it(audioset_ds, tmp_path):
    root, _ = audioset_ds
    report = build_dataset(
        [create_source("audioset", root / "silent", name="as-noaudio")],
        tmp_path / "ds",
        BuildConfig(shard_size=2, keep_partial=True),
        progress=False,
    )
    assert report.stored == 1 and report.rejected == 0
    assert "partial samples kept (missing a partner of their layout): 1" in report.lines()
    silent = storage.scan_index(tmp_path / "ds").collect()
    assert silent["modalities"].to_list() == [["video"]]
    assert silent["audio_clip_t0"].to_list() == [None]


def test_stored_tensors_read_back_as_the_reference_preprocessing(audioset_ds):
    root, _ = audioset_ds
    index = storage.scan_index(root / "ds").filter(pl.col("source") == "as").collect()
    row = index.row(0, named=True)
    video_path = root / "with_audio" / row["uri_video"]
    with storage.open_dataset(root / "ds") as reader:
        sample = reader[row["sample_id"]]
    ref_video, _ = video_model_input(video_path)
    ref_audio, _ = audio_model_input(video_path)
    assert sample["video"].shape == (15, 3, 2, 224, 224)
    # uint8 storage of the float-resized frames: at most half a grey level, in normalized units
    assert np.abs(sample["video"] - ref_video).max() <= 0.5 / 255 / 0.26 + 1e-5
    assert sample["audio"].shape == (3, 1, 128, 204)
    assert np.abs(sample["audio"] - ref_audio).max() <= 2e-3  # float16 log-mel


def test_ego4d_builds_one_sample_per_narration_with_centred_imu(tmp_path):
    synthesize(tmp_path / "ego", "ego4d", 1, seed=4, duration=12.0)
    report = build_dataset(
        [create_source("ego4d", tmp_path / "ego")], tmp_path / "ds", BuildConfig(shard_size=4), progress=False
    )
    index = storage.scan_index(tmp_path / "ds").collect()
    assert report.rejected == 0 and index.height >= 1
    for row in index.iter_rows(named=True):
        assert row["modalities"] == ["video", "imu"]
        assert row["imu_t0"] == pytest.approx(row["anchor_s"] - 2.5)
        assert row["imu_t1"] == pytest.approx(row["anchor_s"] + 2.5)
        assert row["caption"]
        assert row["video_clip_t0"][0] >= row["anchor_s"] - 2.5 - 1e-9
        assert row["video_clip_t1"][-1] <= row["anchor_s"] + 2.5 + 1e-9
    with storage.open_dataset(tmp_path / "ds") as reader:
        sample = reader[index["sample_id"][0]]
    assert sample["imu"].shape == (6, 2000) and sample["imu_valid"].dtype == bool
    assert sample["imu_valid"].mean() > 0.95


def test_imu_spike_sits_at_the_window_centre(tmp_path):
    """A manifest row anchored at the synthetic sync event: the accel jolt lands on the centre step."""
    synthesize(tmp_path / "ego", "ego4d", 1, seed=5, duration=10.0)
    events = pl.read_csv(tmp_path / "ego" / "events.csv")
    uid, t_event = events.row(0)
    pl.DataFrame(
        {
            "video": [f"v2/full_scale/{uid}.mp4"],
            "imu": [f"v2/imu/{uid}.csv"],
            "anchor_s": [t_event],
            "t0": [t_event - 2.5],
            "t1": [t_event + 2.5],
        }
    ).write_csv(tmp_path / "ego" / "pairs.csv")
    build_dataset(
        [create_source("generic", tmp_path / "ego" / "pairs.csv")],
        tmp_path / "ds",
        BuildConfig(shard_size=2),
        progress=False,
    )
    with storage.open_dataset(tmp_path / "ds") as reader:
        imu = reader[storage.scan_index(tmp_path / "ds").collect()["sample_id"][0]]["imu"]
    accel = np.linalg.norm(imu[:3], axis=0)
    peak = int(np.argmax(np.abs(accel - np.median(accel))))
    assert abs(peak - 1000) <= 4  # 400 Hz grid: within 10 ms of the event


def test_cli_preprocess_temporal_shapes(tmp_path, shared_dir):
    mp4 = shared_dir / "samples" / "video_av" / "mov_bbb.mp4"
    assert main(["preprocess", str(mp4), "--modality", "audio", "--out", str(tmp_path / "a.npy")]) == 0
    ref = np.load(shared_dir / "reference" / "imagebind" / "audio_mov_bbb.npy")[0]
    assert np.abs(np.load(tmp_path / "a.npy") - ref).max() <= 1e-3
    assert main(["preprocess", str(mp4), "--modality", "video", "--out", str(tmp_path / "v.npy")]) == 0
    ref = np.load(shared_dir / "reference" / "imagebind" / "video_mov_bbb.npy")[0]
    assert np.abs(np.load(tmp_path / "v.npy") - ref).mean() <= 1e-3


def test_cli_preprocess_imu(tmp_path):
    synthesize(tmp_path / "ego", "ego4d", 1, seed=6, duration=8.0)
    csv = next((tmp_path / "ego" / "v2" / "imu").glob("*.csv"))
    assert main(["preprocess", str(csv), "--modality", "imu", "--anchor", "4.0", "--out", str(tmp_path / "i.npy")]) == 0
    assert np.load(tmp_path / "i.npy").shape == (6, 2000)
    assert (
        main(["preprocess", str(csv), "--modality", "imu", "--preset", "imu2clip", "--out", str(tmp_path / "j.npy")])
        == 0
    )
    assert np.load(tmp_path / "j.npy").shape == (6, 1000)
    series = parse_ego4d_imu_csv(csv)
    assert np.all(np.diff(series.times_s) > 0)
