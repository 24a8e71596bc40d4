"""Synthetic on-disk copies of the supported dataset layouts, with genuinely related modalities.

``synthesize(out_dir, layout, n, seed=0, **options)`` writes ``n`` samples of one layout in the real
dataset's on-disk format and returns a :class:`SynthResult`. Every modality of a sample is generated
from one description (a ray-cast 3-D scene, a 2-D animation, a head-motion path), so depth matches
the RGB, infrared matches the visible frame, captions describe the picture, sounds happen when the
picture shows their cause, and IMU traces are the derivative of the camera motion.

Layouts and their trees (details in each module's docstring):

- ``sunrgbd``    (:mod:`.sunrgbd`)    ``<sensor>/<collection>/<scene>/{image/*.jpg, depth/*.png, intrinsics.txt}``, ``splits.csv``
- ``llvip``      (:mod:`.llvip`)      ``{visible,infrared}/{train,test}/<6 digits>.jpg`` (1280x1024)
- ``image-text`` (:mod:`.image_text`) ``images/<id>.jpg``, ``captions.parquet`` (path, caption)
- ``audioset``   (:mod:`.audioset`)   ``videos/<YTID>.mp4``, ``labels.csv``, ``class_labels_indices.csv``, ``events.csv``
- ``ego4d``      (:mod:`.ego4d`)      ``v2/full_scale/<uid>.mp4``, ``v2/imu/<uid>.csv``, ``v2/annotations/narration.json``, ``events.csv``

Determinism: one ``np.random.default_rng`` per sample, seeded from ``(seed, layout, sample index)``
(no global RNG), so the same ``(layout, n, seed, options)`` gives byte-identical files for the image
layouts and identical decoded content for the mp4 layouts; sample ``i`` does not depend on ``n``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

from pipelines.synth.media import write_mp4

LAYOUTS = ("sunrgbd", "llvip", "audioset", "ego4d", "image-text")
_MODULES = {
    "sunrgbd": "pipelines.synth.sunrgbd",
    "llvip": "pipelines.synth.llvip",
    "audioset": "pipelines.synth.audioset",
    "ego4d": "pipelines.synth.ego4d",
    "image-text": "pipelines.synth.image_text",
}


@dataclass(frozen=True)
class SynthResult:
    layout: str
    root: Path
    n: int
    files: tuple[str, ...]  # paths written, relative to ``root`` (posix)


def synthesize(out_dir: str | Path, layout: str, n: int, seed: int = 0, **options) -> SynthResult:
    """Write ``n`` samples of ``layout`` under ``out_dir`` (created if needed).

    ``options`` are layout-specific (e.g. audioset: ``duration``, ``audio``, ``start_offset_s``,
    ``gop_size``, ``channels``, ``sample_rate``; ego4d: the same plus ``imu_period_ms``); an unknown
    option raises ``TypeError``.
    """
    if layout not in _MODULES:
        raise ValueError(f"unknown synthetic layout {layout!r}; valid layouts: {', '.join(LAYOUTS)}")
    if int(n) < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    module = importlib.import_module(_MODULES[layout])
    files = module.write(root, int(n), seed=int(seed), **options)
    return SynthResult(layout, root, int(n), tuple(str(f) for f in files))


__all__ = ["LAYOUTS", "SynthResult", "synthesize", "write_mp4"]
