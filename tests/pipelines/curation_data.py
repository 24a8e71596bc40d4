"""Planted duplicates for the curation tests: a generic image dataset whose duplicate structure is known.

Each base image is a random smooth colour field (distinct bases are uncorrelated). Planted:
exact duplicates (byte copies under other names; the same pixels saved losslessly as BMP, lossless
WebP or PNG) and near duplicates (a JPEG re-encode at quality 40, a crop of a few percent of each
border, Gaussian noise of sigma 6 grey levels)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image


def smooth_image(rng: np.random.Generator, h: int = 120, w: int = 160) -> np.ndarray:
    coarse = rng.integers(0, 256, size=(4, 5, 3), dtype=np.uint8)
    img = Image.fromarray(coarse).resize((w, h), Image.BICUBIC)
    detail = Image.fromarray(rng.integers(0, 256, size=(12, 16, 3), dtype=np.uint8)).resize((w, h), Image.BICUBIC)
    return (0.7 * np.asarray(img, np.float32) + 0.3 * np.asarray(detail, np.float32)).astype(np.uint8)


@dataclass
class Planted:
    root: Path
    table: Path
    #: path -> the base path of its group (a base maps to itself)
    group_of: dict[str, str] = field(default_factory=dict)
    #: path -> "base", "exact" or "near"
    kind: dict[str, str] = field(default_factory=dict)


def plant(root: Path, n_base: int = 24, seed: int = 0) -> Planted:
    rng = np.random.default_rng(seed)
    images = root / "images"
    images.mkdir(parents=True)
    out = Planted(root, root / "table.csv")
    bases = []
    for b in range(n_base):
        pixels = smooth_image(rng)
        fmt = "png" if b % 2 == 0 else "jpg"
        path = f"images/base{b:02d}.{fmt}"
        Image.fromarray(pixels).save(root / path, quality=92) if fmt == "jpg" else Image.fromarray(pixels).save(
            root / path
        )
        bases.append(path)
        out.group_of[path] = path
        out.kind[path] = "base"

    def add(path: str, base: str, kind: str) -> None:
        out.group_of[path] = base
        out.kind[path] = kind

    # exact: byte copies under other names
    for b in (0, 1, 2, 3):
        copy = f"images/copy_of_{b:02d}.{bases[b].rsplit('.', 1)[1]}"
        shutil.copyfile(root / bases[b], root / copy)
        add(copy, bases[b], "exact")
    # exact: the same decoded pixels in another lossless container
    decoded = lambda b: Image.open(root / bases[b]).convert("RGB")  # noqa: E731
    decoded(4).save(root / "images/same_pixels_04.bmp")
    add("images/same_pixels_04.bmp", bases[4], "exact")
    decoded(6).save(root / "images/same_pixels_06.webp", lossless=True)
    add("images/same_pixels_06.webp", bases[6], "exact")
    decoded(5).save(root / "images/same_pixels_05.png")  # base 5 is a JPEG: its decoded pixels as PNG
    add("images/same_pixels_05.png", bases[5], "exact")
    # near: lossy re-encode, small crop, noise
    for b in (8, 9, 10):
        decoded(b).save(root / f"images/requant_{b:02d}.jpg", quality=40)
        add(f"images/requant_{b:02d}.jpg", bases[b], "near")
    for b in (11, 12, 13):
        img = decoded(b)
        w, h = img.size
        dx, dy = int(0.04 * w), int(0.04 * h)
        img.crop((dx, dy, w - dx, h - dy)).save(root / f"images/crop_{b:02d}.png")
        add(f"images/crop_{b:02d}.png", bases[b], "near")
    for b in (14, 15, 16):
        arr = np.asarray(decoded(b), np.float32) + rng.normal(0, 6, size=(120, 160, 3))
        Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(root / f"images/noisy_{b:02d}.png")
        add(f"images/noisy_{b:02d}.png", bases[b], "near")
    out.table.write_text("image\n" + "\n".join(sorted(out.group_of)) + "\n")
    return out


def descriptor(image: np.ndarray, cells: int = 8) -> np.ndarray:
    """A deterministic image descriptor: the model-ready image [3,S,S] averaged over cells x cells
    blocks per channel, centred and L2-normalized ([3 * cells^2] float32)."""
    c, s, _ = image.shape
    block = s // cells
    pooled = image[:, : block * cells, : block * cells].reshape(c, cells, block, cells, block).mean(axis=(2, 4))
    v = pooled.reshape(-1).astype(np.float64)
    v -= v.mean()
    return (v / np.linalg.norm(v)).astype(np.float32)


def pair_set(groups: dict[str, list[str]]) -> set[tuple[str, str]]:
    """All unordered pairs within each group."""
    pairs = set()
    for members in groups.values():
        members = sorted(members)
        for a in range(len(members)):
            for b in range(a + 1, len(members)):
                pairs.add((members[a], members[b]))
    return pairs
