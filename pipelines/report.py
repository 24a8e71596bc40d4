"""A static HTML report of a built dataset: look at aligned samples before training on them.

``write_report(dataset, out_dir)`` writes ``index.html`` and PNGs next to it (relative links, so the
folder can be copied or served as is):

- counts: samples by source and split, by modality set, shards, rejects by stage and reason;
- histograms of the per-sample quality columns of the index (``q_*``, those with any value);
- a contact sheet of random samples (drawn per source in turn, so every source shows up), each
  modality as a person looks at it: the stored RGB crop, its aligned depth (disparity colour-mapped,
  invalid pixels grey) and thermal (colour-mapped), each also blended over the RGB to check the
  alignment by eye; the video clip frames (first and last frame of each clip, centre crop); the
  log-mel spectrogram of each audio clip; the IMU traces (accelerometer and gyroscope, invalid
  steps shaded). What is shown is what the shards store, read back without re-decoding media.

Plots use matplotlib's object API on the Agg canvas: no pyplot, no global backend switch.

The dataset and the output folder may each be a local path or an object-store URL. A remote report
is rendered into a local temp folder and uploaded, PNGs first and ``index.html`` last, so the page
never links a figure that is not there yet.
"""

from __future__ import annotations

import html
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

import storage
from preprocess.registry import ModalitySpec, Preview, modalities, quality_labels
from storage.catalog import load_catalog
from storage.location import Location, as_location, publish_file
from storage.object_path import ObjectPath
from storage.schema import quality_columns
from storage.shard import ShardReader

_DPI = 80


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=_DPI, layout="constrained")


def _cmap(name: str, bad: str | None = None):
    import matplotlib

    cmap = matplotlib.colormaps[name]
    return cmap.with_extremes(bad=bad) if bad else cmap


def pick_samples(index: pl.DataFrame, n: int, seed: int) -> pl.DataFrame:
    """Up to ``n`` random rows, taking one source after another so that every source appears."""
    if n <= 0 or index.height == 0:
        return index.head(0)
    rng = np.random.default_rng(seed)
    pools = []
    for source in sorted(index["source"].unique().to_list()):
        rows = index.filter(pl.col("source") == source).sort("sample_id")
        pools.append(rows[rng.permutation(rows.height).tolist()])
    picked = []
    depth = 0
    while len(picked) < n and any(depth < p.height for p in pools):
        for pool in pools:
            if depth < pool.height and len(picked) < n:
                picked.append(pool[depth])
        depth += 1
    return pl.concat(picked)


# -- one sample ------------------------------------------------------------------------------------
def _hide(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def _default_preview(spec: ModalitySpec, stored: dict[str, np.ndarray]) -> Preview:
    """A registered modality without its own preview: its main array's first channel, 1-99 %."""
    image = np.asarray(stored[spec.main_key]).astype(np.float32)
    while image.ndim > 2:
        image = image[0]
    lo, hi = np.percentile(image, [1, 99]) if image.size else (0.0, 1.0)
    return Preview(image, "viridis", float(lo), float(max(hi, lo + 1e-6)), None, spec.stored[0].name)


def _spatial_row(subfig, stored: dict[str, np.ndarray], row: dict[str, Any]) -> None:
    """The stored RGB crop, then each other spatial modality alone and over the RGB (alignment)."""
    rgb = stored["image/pixels"].transpose(1, 2, 0) if "image/pixels" in stored else None
    panels: list[tuple[str, Preview | None, bool]] = [("RGB (stored crop)", None, False)] if rgb is not None else []
    for spec in modalities("spatial"):
        if spec.anchor or spec.main_key not in stored:
            continue
        preview = spec.preview(stored) if spec.preview is not None else _default_preview(spec, stored)
        panels.append((spec.name, preview, False))
        if rgb is not None:
            panels.append((f"{spec.name} over RGB (alignment)", preview, True))
    axes = np.atleast_1d(subfig.subplots(1, len(panels)))
    for ax, (title, preview, overlay) in zip(axes, panels):
        _hide(ax)
        if preview is None:
            ax.imshow(rgb)
            ax.set_title(title, fontsize=9)
            continue
        image = preview.image if preview.valid is None else np.ma.masked_where(~preview.valid, preview.image)
        cmap = _cmap(preview.cmap, bad="#808080")
        shown = dict(cmap=cmap, vmin=preview.vmin, vmax=preview.vmax, interpolation="nearest")
        if overlay:
            ax.imshow(rgb)
            ax.imshow(image, alpha=0.5, **shown)
        else:
            im = ax.imshow(image, **shown)
            subfig.colorbar(im, ax=ax, fraction=0.046, pad=0.02).set_label(preview.label, fontsize=8)
            if preview.valid is not None:
                title = f"{title} ({preview.valid.mean():.0%} valid; grey = invalid)"
        ax.set_title(title, fontsize=9)


def _times(row: dict[str, Any], prefix: str, k: int) -> str:
    t0, t1 = row.get(f"{prefix}_clip_t0"), row.get(f"{prefix}_clip_t1")
    if t0 is None or t1 is None or k >= len(t0):
        return f"clip {k}"
    return f"clip {k}: {t0[k]:.2f}-{t1[k]:.2f} s"


def _video_row(subfig, pixels: np.ndarray, row: dict[str, Any], crops: int) -> None:
    # [clips*crops, 3, F, S, S], clip-major: the centre crop of each clip, its frames side by side.
    crops = max(1, crops if pixels.shape[0] % max(crops, 1) == 0 else 1)
    clips = pixels.shape[0] // crops
    axes = np.atleast_1d(subfig.subplots(1, clips))
    for k, ax in enumerate(axes):
        frames = pixels[k * crops + crops // 2]  # [3, F, S, S]
        strip = np.concatenate(list(frames.transpose(1, 2, 3, 0)), axis=1)  # [S, F*S, 3]
        ax.imshow(strip)
        _hide(ax)
        ax.set_title(_times(row, "video", k), fontsize=8)
    subfig.suptitle(f"video: first and last frame of each clip (centre crop of {crops})", fontsize=9)


def _audio_row(subfig, log_mel: np.ndarray, row: dict[str, Any]) -> None:
    mel = log_mel.astype(np.float32)[:, 0]  # [clips, mel, frames]
    axes = np.atleast_1d(subfig.subplots(1, mel.shape[0]))
    lo, hi = np.percentile(mel, [1, 99.5])
    for k, ax in enumerate(axes):
        t0 = row["audio_clip_t0"][k] if row.get("audio_clip_t0") else 0.0
        frames = mel.shape[2]
        im = ax.imshow(
            mel[k],
            origin="lower",
            aspect="auto",
            cmap="magma",
            vmin=lo,
            vmax=hi,
            extent=(t0, t0 + frames * 0.01, 0, mel.shape[1]),
        )
        ax.set_title(_times(row, "audio", k), fontsize=8)
        ax.set_xlabel("s", fontsize=8)
        ax.tick_params(labelsize=7)
        if k == 0:
            ax.set_ylabel("mel bin", fontsize=8)
    subfig.colorbar(im, ax=list(axes), fraction=0.02, pad=0.01).set_label("log-mel", fontsize=8)
    subfig.suptitle("audio: log-mel spectrogram per clip (before normalization)", fontsize=9)


def _imu_row(subfig, values: np.ndarray, valid: np.ndarray, row: dict[str, Any]) -> None:
    steps = values.shape[1]
    t0 = row.get("imu_t0")
    t1 = row.get("imu_t1")
    t = np.linspace(t0, t1, steps, endpoint=False) if t0 is not None and t1 is not None else np.arange(steps)
    axes = np.atleast_1d(subfig.subplots(1, 2))
    for ax, (name, unit, sl) in zip(
        axes, (("accelerometer", "m/s²", slice(0, 3)), ("gyroscope", "rad/s", slice(3, 6)))
    ):
        for channel, axis_name in zip(values[sl], "xyz"):
            ax.plot(t, channel, linewidth=0.7, label=axis_name)
        invalid = ~valid.astype(bool)
        if invalid.any():
            ax.fill_between(
                t, 0, 1, where=invalid, color="#bbbbbb", alpha=0.6, transform=ax.get_xaxis_transform(), label="no data"
            )
        if row.get("anchor_s") is not None:
            ax.axvline(row["anchor_s"], color="k", linewidth=0.8, linestyle="--")
        ax.set_title(f"{name} ({unit})", fontsize=9)
        ax.set_xlabel("s from media start" if t0 is not None else "step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7, loc="upper right", ncols=4)
    subfig.suptitle("IMU window (dashed: anchor time)", fontsize=9)


def render_sample(stored: dict[str, np.ndarray], row: dict[str, Any], path: Path, video_crops: int = 3) -> Path:
    """One sample's modalities side by side, as a PNG."""
    rows: list[tuple[str, float]] = []
    if any(spec.main_key in stored for spec in modalities("spatial")):
        rows.append(("spatial", 3.0))
    if "video/pixels" in stored:
        rows.append(("video", 1.9))
    if "audio/log_mel" in stored:
        rows.append(("audio", 2.3))
    if "imu/values" in stored:
        rows.append(("imu", 2.3))
    if not rows:  # text-only or unknown content: a caption card
        rows.append(("empty", 0.8))
    fig = _figure(13.0, sum(h for _, h in rows))
    subfigs = np.atleast_1d(fig.subfigures(len(rows), 1, height_ratios=[h for _, h in rows]))
    for subfig, (kind, _) in zip(subfigs, rows):
        if kind == "spatial":
            _spatial_row(subfig, stored, row)
        elif kind == "video":
            _video_row(subfig, stored["video/pixels"], row, video_crops)
        elif kind == "audio":
            _audio_row(subfig, stored["audio/log_mel"], row)
        elif kind == "imu":
            _imu_row(subfig, stored["imu/values"], stored["imu/valid"], row)
        else:
            subfig.text(0.5, 0.5, "no array to show (text only)", ha="center", va="center")
    fig.savefig(path, format="png")
    return path


# -- dataset-level figures and tables --------------------------------------------------------------
def render_quality(index: pl.DataFrame, path: Path) -> list[str] | None:
    """Histograms of the quality columns that hold any value; None when none does."""
    columns = [c for c in quality_columns() if c in index.columns and index[c].null_count() < index.height]
    if not columns:
        return None
    ncols = min(3, len(columns))
    nrows = -(-len(columns) // ncols)
    fig = _figure(4.2 * ncols, 2.6 * nrows)
    axes = np.atleast_1d(fig.subplots(nrows, ncols)).ravel()
    for ax, column in zip(axes, columns):
        values = index[column].drop_nulls().to_numpy().astype(np.float64)
        ax.hist(values, bins=20, color="#4c72b0", edgecolor="white")
        ax.set_title(f"{column} (n={values.size})", fontsize=9)
        ax.set_xlabel(quality_labels().get(column, column), fontsize=8)
        ax.set_ylabel("samples", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes[len(columns) :]:
        ax.set_visible(False)
    fig.savefig(path, format="png")
    return columns


def _table(frame: pl.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape('' if v is None else str(v))}</td>" for v in row) + "</tr>"
        for row in frame.iter_rows()
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def count_tables(dataset: Location, index: pl.DataFrame) -> dict[str, pl.DataFrame]:
    tables = {
        "samples by source and split": index.group_by("source", "split").len("samples").sort("source", "split"),
        "samples by modalities": index.with_columns(pl.col("modalities").list.join(" + ").alias("modalities"))
        .group_by("modalities")
        .len("samples")
        .sort("samples", descending=True),
        "shards": pl.DataFrame({"shards": [index["shard"].n_unique()], "samples": [index.height]}),
    }
    rejects = storage.scan_rejects(dataset).collect()
    if rejects.height:
        tables["rejects by stage and reason"] = (
            rejects.group_by("stage", "error_type").len("rejects").sort("rejects", descending=True)
        )
    return tables


_CSS = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #222; max-width: 1100px; }
h1 { font-size: 22px; } h2 { font-size: 18px; margin-top: 28px; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 8px 16px 16px 0; display: inline-table; vertical-align: top; }
th, td { border: 1px solid #ccc; padding: 3px 8px; font-size: 13px; text-align: left; }
th { background: #f2f2f2; } caption { font-weight: 600; text-align: left; font-size: 13px; }
figure { margin: 0 0 24px 0; } figcaption { font-size: 13px; margin-bottom: 4px; }
img { max-width: 100%; border: 1px solid #eee; }
code { background: #f4f4f4; padding: 0 3px; }
"""


def write_report(
    dataset: str | Path | Location, out_dir: str | Path | Location, n: int = 8, seed: int = 0
) -> Path | ObjectPath:
    """Write ``out_dir/index.html`` (+ PNGs) for ``dataset``; returns the HTML location."""
    dataset = as_location(dataset)
    catalog = load_catalog(dataset)
    if catalog is None:
        raise FileNotFoundError(f"{dataset} is not a bindset dataset (no dataset.json)")
    target = as_location(out_dir)
    if isinstance(target, ObjectPath):
        with tempfile.TemporaryDirectory(prefix="bindset-report-") as local:
            _render(dataset, catalog, Path(local), n, seed)
            return _upload(Path(local), target)
    return _render(dataset, catalog, Path(target), n, seed)


def _upload(local: Path, target: ObjectPath) -> ObjectPath:
    """The rendered folder to ``target``: figures first, the page last, then figures of an earlier
    report that the new page no longer links are removed."""
    written = {p.name for p in local.iterdir()}
    for path in sorted(local.iterdir(), key=lambda p: p.name == "index.html"):
        publish_file(path, target / path.name)
    for old in list(target.glob("*.png")):
        if old.is_file() and old.name not in written and (old.name.startswith("sample_") or old.name == "quality.png"):
            old.unlink(missing_ok=True)
    return target / "index.html"


def _render(dataset: Location, catalog: dict, out: Path, n: int, seed: int) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("sample_*.png"):
        old.unlink()
    index = storage.scan_index(dataset).collect()
    video_crops = int((catalog.get("config") or {}).get("video", {}).get("num_crops", 3))

    parts = [
        f"<h1>bindset report: {html.escape(dataset.name)}</h1>",
        f"<p>{index.height} samples in <code>{html.escape(str(dataset))}</code>; "
        f"format version {html.escape(str(catalog.get('format_version')))}, "
        f"config hash <code>{html.escape(str(catalog.get('config_hash')))}</code>.</p>",
        "<h2>Counts</h2>",
    ]
    for title, frame in count_tables(dataset, index).items():
        parts.append(_table(frame).replace("<table>", f"<table><caption>{html.escape(title)}</caption>", 1))

    parts.append("<h2>Quality figures</h2>")
    quality = render_quality(index, out / "quality.png")
    if quality:
        parts.append(
            f"<p>Per-sample figures stored in the index: {', '.join(f'<code>{c}</code>' for c in quality)}.</p>"
        )
        parts.append('<img src="quality.png" alt="histograms of the quality columns">')
    else:
        (out / "quality.png").unlink(missing_ok=True)
        parts.append("<p>No quality column holds a value.</p>")

    picked = pick_samples(index, n, seed)
    parts.append(f"<h2>Samples ({picked.height} random, seed {seed})</h2>")
    readers: dict[int, ShardReader] = {}
    try:
        for k, row in enumerate(picked.iter_rows(named=True)):
            shard = int(row["shard"])
            if shard not in readers:
                readers[shard] = ShardReader(dataset, shard)
            stored = readers[shard].read_stored(int(row["row"]))
            name = f"sample_{k:02d}.png"
            render_sample(stored, row, out / name, video_crops)
            details = [
                f"<b>{html.escape(row['sample_id'])}</b>",
                html.escape(row["source"] or ""),
                f"split {html.escape(row['split'] or '')}",
                " + ".join(row["modalities"] or []),
            ]
            if row.get("label"):
                details.append(f"label {html.escape(row['label'])}")
            if row.get("caption"):
                details.append(f"“{html.escape(row['caption'])}”")
            parts.append(
                f"<figure><figcaption>{' · '.join(details)}</figcaption>"
                f'<img src="{name}" alt="sample {html.escape(row["sample_id"])}"></figure>'
            )
    finally:
        for reader in readers.values():
            reader.close()

    page = (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>bindset report: {html.escape(dataset.name)}</title><style>{_CSS}</style></head>"
        f"<body>\n" + "\n".join(parts) + "\n</body></html>\n"
    )
    path = out / "index.html"
    path.write_text(page, encoding="utf-8")
    return path


__all__ = ["count_tables", "pick_samples", "render_quality", "render_sample", "write_report"]
