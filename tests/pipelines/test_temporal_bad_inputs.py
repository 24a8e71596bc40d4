"""Bad temporal inputs: each is a reject with its reason (or documented handling); good samples stay."""

import polars as pl

import storage
from pipelines.build import build_dataset
from pipelines.config import BuildConfig
from pipelines.sources.tables import GenericSource
from pipelines.synth import synthesize

HEADER = "component_idx,component_timestamp_ms,canonical_timestamp_ms,gyro_x,gyro_y,gyro_z,accl_x,accl_y,accl_z"


def _imu_rows(t0_ms: float, n: int, period_ms: float = 5.0) -> list[str]:
    return [f"0,{1000000 + t0_ms + i * period_ms},{t0_ms + i * period_ms},0.01,0.02,0.03,0.1,0.2,9.8" for i in range(n)]


def test_bad_video_audio_and_imu_inputs(tmp_path):
    root = tmp_path / "src"
    synthesize(root / "as", "audioset", 2, seed=3, duration=5.0)
    synthesize(root / "quiet", "audioset", 1, seed=4, duration=5.0, audio=False)
    videos = sorted((root / "as" / "videos").glob("*.mp4"))
    good_video = videos[0].relative_to(root).as_posix()
    truncated = root / "truncated.mp4"
    truncated.write_bytes(videos[1].read_bytes()[:3000])
    (root / "empty.mp4").write_bytes(b"")
    silent = next((root / "quiet" / "videos").glob("*.mp4")).relative_to(root).as_posix()

    imu = root / "imu"
    imu.mkdir()
    # NULL and non-monotonic timestamps, a duplicate and a NaN row: cleaned, stored.
    rows = _imu_rows(0, 1400)
    rows[10] = rows[10].replace(",50.0,", ",,")  # NULL canonical timestamp
    rows[20], rows[21] = rows[21], rows[20]  # out of order
    rows.insert(30, rows[30])  # duplicated row
    rows[40] = rows[40].replace("9.8", "nan")
    (imu / "messy.csv").write_text("\n".join([HEADER, *rows]) + "\n")
    (imu / "no_accel.csv").write_text(
        "component_idx,component_timestamp_ms,canonical_timestamp_ms,gyro_x,gyro_y,gyro_z\n0,1,0,0.1,0.2,0.3\n"
    )
    (imu / "empty.csv").write_text("")
    pl.DataFrame(
        {
            "video": [good_video, "truncated.mp4", "empty.mp4", silent, None, None, None],
            "audio": [good_video, "truncated.mp4", "empty.mp4", silent, None, None, None],
            "imu": [None, None, None, None, "imu/messy.csv", "imu/no_accel.csv", "imu/empty.csv"],
            "anchor_s": [None, None, None, None, 3.5, 3.5, 3.5],
        }
    ).write_parquet(root / "pairs.parquet")

    # The generic adapter needs every listed modality per row: split into the two kinds of rows.
    table = pl.read_parquet(root / "pairs.parquet")
    table.filter(pl.col("imu").is_null()).drop("imu", "anchor_s").write_parquet(root / "av.parquet")
    table.filter(pl.col("imu").is_not_null()).select("imu", "anchor_s").write_parquet(root / "imu.parquet")
    (root / "pairs.parquet").unlink()
    sources = [GenericSource(root / "av.parquet", root=root), GenericSource(root / "imu.parquet", root=root)]
    report = build_dataset(sources, tmp_path / "ds", BuildConfig(shard_size=3), progress=False)

    index = storage.scan_index(tmp_path / "ds").collect()
    stored = {(r["uri_video"] or r["uri_imu"]): r["modalities"] for r in index.iter_rows(named=True)}
    assert stored == {good_video: ["video", "audio"], silent: ["video"], "imu/messy.csv": ["imu"]}
    rejects = storage.scan_rejects(tmp_path / "ds").collect()
    reasons = {r["input_path"]: (r["stage"], r["message"]) for r in rejects.iter_rows(named=True)}
    assert reasons["truncated.mp4"][0] in ("decode", "read")
    assert "empty" in reasons["empty.mp4"][1]
    assert "accl" in reasons["imu/no_accel.csv"][1]
    assert reasons["imu/empty.csv"][0] in ("read", "decode")
    assert report.stored == 3 and report.rejected == 4

    with storage.open_dataset(tmp_path / "ds") as reader:
        sample = reader[index.filter(pl.col("uri_imu") == "imu/messy.csv")["sample_id"][0]]
    # 7 s of data at 200 Hz around an anchor at 3.5 s: the 5 s window is fully covered except
    # the NaN row's neighbourhood and the NULL row, which are gaps (never interpolated across
    # when longer than max_gap_s) or interpolated within the 50 ms limit.
    assert sample["imu"].shape == (6, 2000) and sample["imu_valid"].mean() > 0.99
