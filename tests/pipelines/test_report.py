"""The HTML report: every referenced image exists and is a valid PNG; the page renders in Chromium."""

import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import storage
from pipelines.build import build_dataset
from pipelines.config import BuildConfig
from pipelines.report import pick_samples, write_report
from pipelines.sources import create_source
from pipelines.synth import synthesize

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHROMIUM = Path("/usr/bin/chromium")


class _Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.srcs: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.srcs.append(dict(attrs).get("src") or "")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    layouts = {"sunrgbd": {}, "llvip": {}, "audioset": {"duration": 4.0}, "ego4d": {"duration": 8.0}}
    for layout, options in layouts.items():
        synthesize(root / layout, layout, 1 if layout == "ego4d" else 2, seed=3, **options)
    build_dataset(
        [create_source(layout, root / layout) for layout in layouts],
        root / "ds",
        BuildConfig(shard_size=4),
        progress=False,
    )
    html_path = write_report(root / "ds", root / "out", n=5, seed=0)
    return root / "ds", html_path


def test_every_referenced_image_exists_and_is_a_valid_png(report):
    _, html_path = report
    assert html_path.name == "index.html" and html_path.is_file()
    page = html_path.read_text(encoding="utf-8")
    parser = _Images()
    parser.feed(page)
    assert len(parser.srcs) == 1 + 5  # quality histograms + one figure per picked sample
    for src in parser.srcs:
        assert src and not re.match(r"^([a-z]+:|/)", src), f"{src!r} is not a relative path"
        path = html_path.parent / src
        assert path.is_file(), f"{src} referenced but missing"
        assert path.read_bytes()[:8] == PNG_SIGNATURE, f"{src} is not a PNG"
        with Image.open(path) as img:
            assert img.format == "PNG"
            img.load()  # decodes the whole image: a truncated file fails here
            assert img.width > 200 and img.height > 100
            assert np.asarray(img.convert("L")).std() > 5, f"{src} is blank"


def test_report_shows_every_source_counts_and_quality(report, tmp_path):
    dataset, html_path = report
    page = html_path.read_text(encoding="utf-8")
    for source in ("sunrgbd", "llvip", "audioset", "ego4d"):
        assert f"{source}:{source}" in page, f"no sample of {source} on the contact sheet"
    assert "samples by source and split" in page and "samples by modalities" in page
    for column in (
        "q_image_mean",
        "q_depth_valid_fraction",
        "q_thermal_dynamic_range",
        "q_audio_silence_fraction",
        "q_imu_gap_fraction",
        "q_clip_coverage",
    ):
        assert column in page
    # Rerunning into the same folder replaces the sample figures instead of piling them up.
    write_report(dataset, tmp_path, n=4, seed=1)
    write_report(dataset, tmp_path, n=2, seed=1)
    assert len(list(tmp_path.glob("sample_*.png"))) == 2


def test_sample_pick_is_seeded_and_round_robin_over_sources(report):
    dataset, _ = report
    index = storage.scan_index(dataset).collect()
    a, b = pick_samples(index, 4, 0), pick_samples(index, 4, 0)
    assert a["sample_id"].to_list() == b["sample_id"].to_list()
    assert sorted(a["source"].to_list()) == sorted(index["source"].unique().to_list())
    assert pick_samples(index, 100, 0).height == index.height


def test_report_renders_in_headless_chromium(report, tmp_path):
    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium is absent (Debian package 'chromium'; CI installs it with apt)")
    _, html_path = report
    shot = tmp_path / "shot.png"
    cmd = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--hide-scrollbars",
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--screenshot={shot}",
        "--window-size=1280,2000",
        html_path.resolve().as_uri(),
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert shot.is_file(), f"chromium wrote no screenshot (rc {result.returncode}): {result.stderr[-2000:]}"
    if os.environ.get("BINDSET_REPORT_SHOT"):  # keep the screenshot to look at it
        shutil.copy(shot, os.environ["BINDSET_REPORT_SHOT"])
    assert shot.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(shot) as img:
        grey = np.asarray(img.convert("L"), dtype=np.float32)
    assert grey.shape == (2000, 1280)
    # Not blank: text, tables and the figures make a varied page, with dark pixels (text) present.
    assert grey.std() > 20 and (grey < 100).mean() > 0.01, (grey.std(), (grey < 100).mean())


def test_cli_report_writes_the_page(report, tmp_path, capsys):
    from flows.cli import main

    dataset, _ = report
    assert main(["report", str(dataset), "--out", str(tmp_path / "cli"), "-n", "2"]) == 0
    assert f"report: {(tmp_path / 'cli' / 'index.html').resolve()}" in capsys.readouterr().out
    parser = _Images()
    parser.feed((tmp_path / "cli" / "index.html").read_text())
    samples = [s for s in parser.srcs if s.startswith("sample_")]
    assert len(samples) == 2 and all((tmp_path / "cli" / s).read_bytes()[:8] == PNG_SIGNATURE for s in samples)
    assert main(["report", str(tmp_path / "nothing"), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err  # one line naming the dataset (checked before any work, or by the report)
    assert ("is not a bindset dataset" in err or "does not exist" in err) and str(tmp_path / "nothing") in err
    assert err.count("\n") == 1
