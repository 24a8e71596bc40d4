"""Temporal layouts: AudioSet-style clips with ``labels.csv`` and Ego4D-style video + IMU CSV."""

from __future__ import annotations

import csv
import json

from pipelines.sources.base import Problem, ScanResult, Source
from storage.location import Location


def read_audioset_labels(path: Location) -> list[dict]:
    """AudioSet segment CSV: ``#`` comment lines, then ``YTID, start, end, "labels"``."""
    rows = []
    text = path.read_text()
    lines = [ln for ln in text.splitlines(keepends=True) if ln.strip() and not ln.lstrip().startswith("#")]
    for i, rec in enumerate(csv.reader(lines, skipinitialspace=True)):
        if len(rec) < 4:
            raise ValueError(f"{path}: data row {i + 1} has {len(rec)} fields, expected YTID,start,end,labels")
        rows.append({"ytid": rec[0].strip(), "start": float(rec[1]), "end": float(rec[2]), "labels": rec[3].strip()})
    return rows


class AudioSetSource(Source):
    """``videos/<YTID>.mp4`` (the labelled segment, H.264 + AAC) with ``labels.csv``."""

    layout = "audioset"
    looks_for = "labels.csv listing YTIDs and videos/<YTID>.mp4"
    partners = ("video", "audio")

    def __init__(self, root, name=None, split=None, labels: str = "labels.csv", videos: str = "videos"):
        super().__init__(root, name, split)
        self.labels_path = self.root / labels
        self.videos_dir = self.root / videos
        if not self.labels_path.is_file():
            raise FileNotFoundError(f"audioset source {self.root}: no {labels}")

    def scan(self) -> ScanResult:
        result = ScanResult()
        labelled = {r["ytid"]: r for r in read_audioset_labels(self.labels_path)}
        videos = {p.stem: p for p in self.videos_dir.glob("*.mp4")} if self.videos_dir.is_dir() else {}
        for ytid in sorted(labelled.keys() - videos.keys()):
            result.problems.append(
                Problem("missing", f"videos/{ytid}.mp4", f"labels.csv lists {ytid} but its video is missing")
            )
        for ytid in sorted(videos.keys() - labelled.keys()):
            result.problems.append(Problem("unpaired", self.rel(videos[ytid]), f"{ytid}.mp4 has no row in labels.csv"))
        for ytid in sorted(videos.keys() & labelled.keys()):
            rel = self.rel(videos[ytid])
            result.rows.append(
                self.row({"video": rel, "audio": rel}, self.default_split or "train", label=labelled[ytid]["labels"])
            )
        return result


class Ego4dSource(Source):
    """``v2/full_scale/<uid>.mp4`` + ``v2/imu/<uid>.csv``; one sample per narration (anchor time)."""

    layout = "ego4d"
    looks_for = "v2/full_scale/<uid>.mp4 with v2/imu/<uid>.csv"
    partners = ("video", "imu")

    def __init__(
        self, root, name=None, split=None, window_s: float = 5.0, narrations: str = "v2/annotations/narration.json"
    ):
        super().__init__(root, name, split)
        self.window_s = window_s
        self.narrations_path = self.root / narrations

    def scan(self) -> ScanResult:
        result = ScanResult()
        video_dir, imu_dir = self.root / "v2" / "full_scale", self.root / "v2" / "imu"
        videos = {p.stem: p for p in video_dir.glob("*.mp4")} if video_dir.is_dir() else {}
        imus = {p.stem: p for p in imu_dir.glob("*.csv")} if imu_dir.is_dir() else {}
        for uid in sorted(videos.keys() - imus.keys()):
            result.problems.append(Problem("unpaired", self.rel(videos[uid]), f"video {uid} has no IMU csv"))
        for uid in sorted(imus.keys() - videos.keys()):
            result.problems.append(Problem("unpaired", self.rel(imus[uid]), f"IMU {uid}.csv has no video"))
        narrations = self._narrations()
        half = self.window_s / 2
        for uid in sorted(videos.keys() & imus.keys()):
            uris = {"video": self.rel(videos[uid]), "imu": self.rel(imus[uid])}
            anchors = narrations.get(uid)
            if not anchors:
                # No narration: one sample anchored at the media middle, resolved at build time.
                result.rows.append(self.row(uris, self.default_split or "train"))
                continue
            for t, text in anchors:
                result.rows.append(
                    self.row(uris, self.default_split or "train", t - half, t + half, anchor_s=t, caption=text)
                )
        return result

    def _narrations(self) -> dict[str, list[tuple[float, str]]]:
        if not self.narrations_path.is_file():
            return {}
        data = json.loads(self.narrations_path.read_text())
        out: dict[str, list[tuple[float, str]]] = {}
        for uid, passes in data.items():
            items = []
            for pass_name in sorted(k for k in passes if k.startswith("narration_pass")):
                for n in passes[pass_name].get("narrations", []):
                    items.append((float(n["timestamp_sec"]), str(n.get("narration_text", ""))))
            out[uid] = sorted(set(items))
        return out
