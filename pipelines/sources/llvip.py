"""LLVIP layout: ``visible/{train,test}/*.jpg`` registered with ``infrared/{train,test}/*.jpg``."""

from __future__ import annotations

from pipelines.sources.base import Problem, ScanResult, Source


class LlvipSource(Source):
    layout = "llvip"
    looks_for = "visible/{train,test}/*.jpg paired by name with infrared/{train,test}/*.jpg"
    partners = ("image", "thermal")

    def scan(self) -> ScanResult:
        result = ScanResult()
        for split in ("train", "test"):
            visible_dir = self.root / "visible" / split
            infrared_dir = self.root / "infrared" / split
            visible = {p.name: p for p in visible_dir.glob("*.jpg")} if visible_dir.is_dir() else {}
            infrared = {p.name: p for p in infrared_dir.glob("*.jpg")} if infrared_dir.is_dir() else {}
            for name in sorted(visible.keys() - infrared.keys()):
                result.problems.append(
                    Problem("unpaired", self.rel(visible[name]), f"visible/{split}/{name} has no infrared partner")
                )
            for name in sorted(infrared.keys() - visible.keys()):
                result.problems.append(
                    Problem("unpaired", self.rel(infrared[name]), f"infrared/{split}/{name} has no visible partner")
                )
            for name in sorted(visible.keys() & infrared.keys()):
                result.rows.append(
                    self.row({"image": self.rel(visible[name]), "thermal": self.rel(infrared[name])}, split)
                )
        if not result.rows and not result.problems:
            result.problems.append(Problem("missing", ".", f"{self.root} holds no visible/{{train,test}}/*.jpg"))
        return result
