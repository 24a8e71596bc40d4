"""Non-destructive deduplication: exact duplicates by decoded content, near duplicates by embeddings.

    report = dedup_dataset("/data/llvip", name="default", encoder_id="openclip-...-p1", threshold=0.95)
    ShardDataset("/data/llvip", dedup="default")      # each duplicate group once

**Exact duplicates** share a content hash: a BLAKE2b digest of the *decoded* content of every modality
of the sample, before any crop, resize or augmentation, read through the manifest's ``root`` +
``uri_*`` (``resolve_inside``) and decoded with the build's own decoders, so a byte copy under another
name and the same pixels saved losslessly in another container (PNG, BMP, lossless WebP, TIFF) hash
alike, while a lossy re-encode does not (that is a near duplicate):

- image: RGB pixels as ``preprocess.image.decode_image_pil`` gives them (shape + bytes);
- depth: metres as ``decode_depth_png`` gives them for the row's encoding;
- thermal: ``decode_thermal`` with the dataset's thermal config;
- audio: the samples of the sample's time window ``[t0, t1)`` (the whole track without one) on the
  video clock (``decode_audio_on_video_clock``), with the sample rate;
- video: 8 frames evenly spaced over the sample's window (``decode_video_frames``), with the window:
  decoding every frame of long videos would cost more than the build did;
- IMU: the timestamped rows inside the sample's window (the anchor's window when there is one);
- text: the caption.

A sample whose inputs cannot be read any more gets no hash (counted as ``unreadable``) and is
never an exact duplicate.

**Near duplicates**: pairs whose vectors in an embedding store have cosine >= ``threshold`` in
*every* compared modality (``modalities``, default all columns of the store; two samples of which
only one holds a compared modality are not duplicates). Pairs are found without all-pairs work (see
``pipelines.curation.neardup``).

**Groups**: the connected components of exact and near pairs together (union-find). Each group keeps
one representative by ``keep``: ``"lowest-id"`` (the smallest sample_id; the default), or
``"max:<column>"`` / ``"min:<column>"`` of an index column (e.g. ``max:q_depth_valid_fraction``),
ties going to the smallest sample_id. Components chain (a~b and b~c group a, b and c even when a and
c are further apart); ``similarity`` records each member's cosine to its representative, so a
chained member is visible. The table (``storage.dedup``) covers every stored sample; nothing is deleted.

Why one module of this size: exact and near deduplication write one table under one keep rule;
the nearest-neighbour and grouping kernels it calls live in their own modules.
"""

from __future__ import annotations

import hashlib
import io
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import polars as pl

from storage.location import Location, as_location

VIDEO_HASH_FRAMES = 8
KEEP_RULES = ("lowest-id", "max:<column>", "min:<column>")


class Unreadable(Exception):
    """A sample's input cannot be read or decoded any more."""


# -- exact: content hashes --------------------------------------------------------------------------------


class _FileCache:
    """The last few decoded media files: consecutive samples of one video or IMU file decode it once."""

    def __init__(self, keep: int = 4):
        self.keep = keep
        self._items: dict[tuple, Any] = {}

    def get(self, key: tuple, make: Callable[[], Any]) -> Any:
        if key in self._items:
            return self._items[key]
        value = make()
        self._items[key] = value
        while len(self._items) > self.keep:
            self._items.pop(next(iter(self._items)))
        return value


def _window(row: dict[str, Any], duration: float | None) -> tuple[float, float]:
    t0, t1 = row.get("t0"), row.get("t1")
    end = duration if duration is not None else float("inf")
    if t0 is None or t1 is None:
        return 0.0, end
    return max(0.0, float(t0)), min(end, float(t1))


def _update(h, tag: str, array: np.ndarray) -> None:
    array = np.ascontiguousarray(array)
    h.update(f"{tag}|{array.dtype.str}|{array.shape}|".encode())
    h.update(array.tobytes())


def hash_sample(row: dict[str, Any], config, cache: _FileCache | None = None) -> str:
    """The content hash of one manifest row (module doc). Raises ``Unreadable``."""
    from pipelines.sources.base import resolve_inside
    from storage.location import local_copy

    cache = cache or _FileCache()
    h = hashlib.blake2b(digest_size=16)

    def data(column: str) -> bytes:
        try:
            return resolve_inside(row["root"], row[column]).read_bytes()
        except (OSError, ValueError) as exc:
            raise Unreadable(f"{row[column]}: {exc}") from exc

    def local(column: str) -> Path:
        try:
            return local_copy(resolve_inside(row["root"], row[column]))
        except (OSError, ValueError) as exc:
            raise Unreadable(f"{row[column]}: {exc}") from exc

    try:
        from preprocess.registry import modalities

        for spec in modalities("spatial"):  # each file's decoded content, as the build decodes it
            if spec.uri_column and row.get(spec.uri_column):
                decoded = spec.decode(data(spec.uri_column), config.section(spec.name), row)
                _update(h, spec.name, np.asarray(decoded))
        duration = None
        if row.get("uri_video"):
            from preprocess.media import probe
            from preprocess.video_decode import decode_video_frames

            path = local("uri_video")
            info = probe(path)
            if info.video is None:
                raise Unreadable(f"{row['uri_video']}: no video stream")
            duration = info.video.duration_s
            w0, w1 = _window(row, duration)
            clips = decode_video_frames(path, [(w0, w1)], VIDEO_HASH_FRAMES, duration_s=duration)
            h.update(f"video-window|{w0!r}|{w1!r}|".encode())
            for clip in clips:
                _update(h, "video", np.asarray(clip.frames))
        if row.get("uri_audio"):
            from preprocess.audio_decode import decode_audio_on_video_clock

            path = local("uri_audio")
            wave, rate = cache.get(
                ("audio", str(path), path.stat().st_mtime_ns), lambda: decode_audio_on_video_clock(path)
            )
            w0, w1 = _window(row, duration)
            a, b = int(round(w0 * rate)), (wave.shape[1] if w1 == float("inf") else int(round(w1 * rate)))
            h.update(f"audio-rate|{rate}|".encode())
            _update(h, "audio", wave[:, a:b])
        if row.get("uri_imu"):
            from preprocess.imu import parse_ego4d_imu_csv

            path = local("uri_imu")
            series = cache.get(("imu", str(path), path.stat().st_mtime_ns), lambda: parse_ego4d_imu_csv(path))
            if row.get("anchor_s") is not None:
                half = config.imu.window_s / 2
                w0, w1 = float(row["anchor_s"]) - half, float(row["anchor_s"]) + half
            else:
                w0, w1 = _window(row, duration)
            keep = (series.times_s >= w0) & (series.times_s < w1)
            _update(h, "imu-times", series.times_s[keep])
            _update(h, "imu", series.values[:, keep])
        if row.get("caption") is not None and row.get("_has_text"):
            h.update(b"text|" + str(row["caption"]).strip().encode("utf-8"))
    except Unreadable:
        raise
    except Exception as exc:  # decoders raise many types: the sample is simply not hashable now
        raise Unreadable(f"{type(exc).__name__}: {exc}") from exc
    return h.hexdigest()


def stored_rows(root: str | Path | Location) -> pl.DataFrame:
    """The manifest rows of the samples the index holds (with ``modalities``), sorted by sample_id."""
    from storage import format as fmt
    from storage import scan_index

    root = as_location(root)
    index = scan_index(root).select("sample_id", "modalities").unique("sample_id", keep="last").collect()
    manifest = pl.read_parquet(io.BytesIO((root / fmt.MANIFEST_FILE).read_bytes()))
    rows = index.join(manifest, on="sample_id", how="left")
    return rows.with_columns(pl.col("modalities").list.contains("text").alias("_has_text")).sort("sample_id")


def content_hashes(root: str | Path | Location, threads: int = 4, progress: bool = False) -> pl.DataFrame:
    """``sample_id, content_hash, error`` for every stored sample (hash null where unreadable)."""
    from pipelines.config import BuildConfig
    from storage.catalog import load_catalog

    root = as_location(root)
    catalog = load_catalog(root)
    if catalog is None:
        raise FileNotFoundError(f"{root} is not a bindset dataset (no dataset.json)")
    config = BuildConfig.from_dict(catalog["config"])
    rows = stored_rows(root).to_dicts()

    def one(chunk: list[dict[str, Any]]) -> list[tuple[str, str | None, str | None]]:
        cache = _FileCache()
        out = []
        for row in chunk:
            if row.get("root") is None:
                out.append((row["sample_id"], None, "not in the manifest"))
                continue
            try:
                out.append((row["sample_id"], hash_sample(row, config, cache), None))
            except Unreadable as exc:
                out.append((row["sample_id"], None, str(exc)))
        return out

    # Consecutive rows stay together (they often share a media file, decoded once per chunk).
    chunks = [rows[s : s + 64] for s in range(0, len(rows), 64)]
    results: list[tuple[str, str | None, str | None]] = []
    from tqdm.auto import tqdm

    with (
        ThreadPoolExecutor(max_workers=max(1, threads)) as pool,
        tqdm(total=len(rows), desc="content hashes", unit="sample", disable=not progress) as bar,
    ):
        for part in pool.map(one, chunks):
            results += part
            bar.update(len(part))
    return pl.DataFrame(results, schema={"sample_id": pl.Utf8, "content_hash": pl.Utf8, "error": pl.Utf8}, orient="row")


# -- near: embedding pairs ------------------------------------------------------------------------------------


def store_vectors(
    root: str | Path | Location, encoder_id: str, modalities: Sequence[str] | None, sample_ids: Sequence[str]
) -> dict[str, np.ndarray]:
    """Normalized vectors per modality aligned with ``sample_ids`` (NaN rows where a sample has none)."""
    from pipelines.curation.ann_index import normalize
    from storage.embeddings import scan_embeddings

    lf = scan_embeddings(root, encoder_id)
    schema = lf.collect_schema()
    columns = [c for c, t in schema.items() if c != "sample_id" and isinstance(t, (pl.Array, pl.List))]
    if not columns:
        raise FileNotFoundError(f"no embedding store {encoder_id!r} under {as_location(root)} (run bindset embed)")
    chosen = list(modalities) if modalities else columns
    bad = [m for m in chosen if m not in columns]
    if bad:
        raise ValueError(f"store {encoder_id} has no column(s) {bad} (has {columns})")
    frame = lf.select("sample_id", *chosen).unique("sample_id", keep="first").collect()
    order = pl.DataFrame({"sample_id": list(sample_ids)}).with_row_index("_pos")
    frame = order.join(frame, on="sample_id", how="left").sort("_pos")
    out = {}
    for m in chosen:
        present = frame[m].is_not_null().to_numpy()
        dim = schema[m].size if isinstance(schema[m], pl.Array) else len(frame[m].drop_nulls()[0])
        matrix = np.full((len(sample_ids), dim), np.nan, np.float32)
        if present.any():
            matrix[present] = normalize(frame[m].drop_nulls().to_numpy())
        out[m] = matrix
    return out


def near_duplicate_pairs(
    vectors: dict[str, np.ndarray], threshold: float | dict[str, float], **options: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list]:
    """Pairs ``i < j`` near in every modality both hold (and holding the same compared modalities),
    with their similarity (the minimum over modalities). Candidates come from one modality per
    partition of samples (those whose first held modality is it), then every other is checked."""
    from pipelines.curation.neardup import PairStats, near_pairs

    names = list(vectors)
    n = len(next(iter(vectors.values()))) if vectors else 0
    thr = {m: float(threshold[m] if isinstance(threshold, dict) else threshold) for m in names}
    has = {m: ~np.isnan(vectors[m]).all(axis=1) for m in names}
    assigned = np.zeros(n, bool)
    out_i, out_j, out_s, stats = [], [], [], []
    for m in names:
        members = np.nonzero(has[m] & ~assigned)[0]
        assigned |= has[m]
        if len(members) < 2:
            continue
        st = PairStats("")
        a, b, s = near_pairs(vectors[m][members], thr[m], stats=st, **options)
        st.timings["modality"] = m  # type: ignore[assignment]
        stats.append(st)
        a, b = members[a], members[b]
        ok = np.ones(len(a), bool)
        sim = s.copy()
        for other in names:
            if other == m:
                continue
            ha, hb = has[other][a], has[other][b]
            ok &= ha == hb
            both = ha & hb
            if both.any():
                s2 = np.einsum("ij,ij->i", vectors[other][a[both]], vectors[other][b[both]])
                sim[both] = np.minimum(sim[both], s2)
                ok[both] &= s2 >= thr[other]
        out_i.append(a[ok])
        out_j.append(b[ok])
        out_s.append(sim[ok])
    if not out_i:
        empty = np.zeros(0, np.int64)
        return empty, empty, np.zeros(0, np.float32), stats
    return np.concatenate(out_i), np.concatenate(out_j), np.concatenate(out_s).astype(np.float32), stats


# -- groups and the table ------------------------------------------------------------------------------------------


@dataclass
class DedupReport:
    name: str
    path: Location
    samples: int
    groups: int  # groups with more than one member
    dropped: int
    exact_dropped: int
    near_dropped: int
    unreadable: int
    seconds: float
    meta: dict[str, Any] = field(default_factory=dict, repr=False)

    def lines(self) -> list[str]:
        out = [
            f"dedup table {self.path}",
            f"samples: {self.samples}  duplicate groups: {self.groups}  left out: {self.dropped} "
            f"(exact {self.exact_dropped}, near {self.near_dropped})  kept: {self.samples - self.dropped} "
            f"({self.seconds:.1f} s)",
        ]
        if self.unreadable:
            out.append(f"  {self.unreadable} samples could not be read for their content hash (not exact-deduplicated)")
        if self.meta.get("encoder_id"):
            out.append(
                f"  near duplicates: {self.meta['encoder_id']} {self.meta['modalities']} cosine >= "
                f"{self.meta['threshold']} ({self.meta.get('pair_method')})"
            )
        out.append(f"  use it: ShardDataset(..., dedup={self.name!r}); bindset export ... --dedup {self.name}")
        return out


def _representatives(
    labels: np.ndarray, sample_ids: list[str], score: np.ndarray | None, prefer_max: bool
) -> np.ndarray:
    """Index of the representative of each node's group (rule in the module doc)."""
    n = len(labels)
    # Sample ids are sorted, so position order is id order: the first position per group is the lowest id.
    if score is None:
        key = np.arange(n, dtype=np.float64)
        primary = np.zeros(n)
    else:
        s = np.where(np.isnan(score), -np.inf if prefer_max else np.inf, score)
        primary = -s if prefer_max else s
        key = np.arange(n, dtype=np.float64)
    order = np.lexsort((key, primary, labels))  # by group, then score, then id
    first = np.ones(n, bool)
    first[1:] = labels[order][1:] != labels[order][:-1]
    rep_of_group = dict(zip(labels[order][first].tolist(), order[first].tolist()))
    return np.array([rep_of_group[g] for g in labels.tolist()], dtype=np.int64)


def _keep_scores(root, sample_ids: list[str], keep: str) -> tuple[np.ndarray | None, bool]:
    if keep == "lowest-id":
        return None, False
    direction, _, column = keep.partition(":")
    if direction not in ("max", "min") or not column:
        raise ValueError(f"keep rule {keep!r}: use one of {KEEP_RULES}")
    from storage import scan_index

    lf = scan_index(root)
    if column not in lf.collect_schema().names():
        raise ValueError(f"keep rule {keep!r}: the index has no column {column!r}")
    frame = (
        pl.DataFrame({"sample_id": sample_ids})
        .with_row_index("_pos")
        .join(
            lf.select("sample_id", pl.col(column).cast(pl.Float64)).unique("sample_id", keep="last").collect(),
            on="sample_id",
            how="left",
        )
        .sort("_pos")
    )
    return frame[column].fill_null(float("nan")).to_numpy(), direction == "max"


def dedup_dataset(
    root: str | Path | Location,
    name: str = "default",
    encoder_id: str | None = None,
    modalities: Sequence[str] | None = None,
    threshold: float | dict[str, float] = 0.95,
    exact: bool = True,
    keep: str = "lowest-id",
    threads: int = 4,
    progress: bool = False,
    **pair_options: Any,
) -> DedupReport:
    """Find exact (``exact``) and near (``encoder_id``) duplicates and write ``dedup/<name>.parquet``
    (module doc). ``pair_options`` go to ``neardup.near_pairs`` (``exact_below``, ``nlist``, ``probes``)."""
    from pipelines.curation.neardup import connected_groups
    from storage.dedup import dedup_path, write_dedup

    started = time.perf_counter()
    root = as_location(root)
    dedup_path(root, name)  # refuse a bad name before any work
    if not exact and encoder_id is None:
        raise ValueError("nothing to compare: exact hashing is off and no embedding store (--encoder) is given")
    rows = stored_rows(root)
    sample_ids = rows["sample_id"].to_list()
    n = len(sample_ids)
    if n == 0:
        raise ValueError(f"{root} has no stored samples")
    edges_i, edges_j = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    hashes = np.full(n, None, dtype=object)
    unreadable = 0
    if exact:
        table = content_hashes(root, threads=threads, progress=progress)
        by_id = dict(zip(table["sample_id"].to_list(), table["content_hash"].to_list()))
        hashes[:] = [by_id.get(s) for s in sample_ids]
        unreadable = int(table["content_hash"].is_null().sum())
        frame = pl.DataFrame({"h": list(hashes), "pos": np.arange(n)}).filter(pl.col("h").is_not_null())
        firsts = frame.group_by("h").agg(pl.col("pos").min().alias("first"))
        linked = frame.join(firsts, on="h").filter(pl.col("pos") != pl.col("first"))
        edges_i.append(linked["first"].to_numpy().astype(np.int64))
        edges_j.append(linked["pos"].to_numpy().astype(np.int64))
    vectors: dict[str, np.ndarray] = {}
    pair_stats: list = []
    if encoder_id is not None:
        vectors = store_vectors(root, encoder_id, modalities, sample_ids)
        a, b, _, pair_stats = near_duplicate_pairs(vectors, threshold, **pair_options)
        edges_i.append(a)
        edges_j.append(b)
    labels = connected_groups(n, np.concatenate(edges_i), np.concatenate(edges_j))
    score, prefer_max = _keep_scores(root, sample_ids, keep)
    rep = _representatives(labels, sample_ids, score, prefer_max)
    positions = np.arange(n)
    kept = rep == positions
    sizes = np.bincount(labels, minlength=n)
    in_group = sizes[labels] > 1
    same_hash = np.array([hashes[p] is not None and hashes[p] == hashes[r] for p, r in zip(positions, rep)])
    similarity = np.full(n, np.nan, np.float32)
    if vectors:
        sims = []
        for m, x in vectors.items():
            both = ~np.isnan(x).any(axis=1) & ~np.isnan(x[rep]).any(axis=1)
            s = np.full(n, np.nan, np.float32)
            s[both] = np.einsum("ij,ij->i", x[both], x[rep][both])
            sims.append(s)
        with np.errstate(all="ignore"):
            similarity = np.nanmin(np.stack(sims), axis=0) if len(sims) > 1 else sims[0]
    similarity = np.where(same_hash & np.isnan(similarity), np.float32(1.0), similarity)
    similarity = np.where(in_group, similarity, np.nan).astype(np.float32)
    reason = np.where(~in_group, "unique", np.where(kept, "representative", np.where(same_hash, "exact", "near")))
    # Group numbers follow the representatives' sample_id order.
    rep_order = {r: g for g, r in enumerate(sorted(set(rep.tolist())))}
    frame = pl.DataFrame(
        {
            "sample_id": sample_ids,
            "group": [rep_order[r] for r in rep.tolist()],
            "kept": kept,
            "reason": reason.tolist(),
            "similarity": pl.Series(similarity).fill_nan(None),
            "representative": [sample_ids[r] for r in rep.tolist()],
        }
    )
    dropped = int((~kept).sum())
    exact_dropped = int(((~kept) & (reason == "exact")).sum())
    meta = {
        "name": name,
        "exact": exact,
        "encoder_id": encoder_id,
        "modalities": list(vectors) if vectors else [],
        "threshold": threshold,
        "keep": keep,
        "samples": n,
        "groups": int((sizes > 1).sum()),
        "dropped": dropped,
        "exact_dropped": exact_dropped,
        "near_dropped": dropped - exact_dropped,
        "unreadable": unreadable,
        "pair_method": ", ".join(
            f"{s.timings.get('modality')}: {s.method}" + (f" (nlist {s.nlist}, probes {s.probes})" if s.nlist else "")
            for s in pair_stats
        ),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    path = write_dedup(root, name, frame, meta)
    return DedupReport(
        name,
        path,
        n,
        meta["groups"],
        dropped,
        exact_dropped,
        dropped - exact_dropped,
        unreadable,
        time.perf_counter() - started,
        meta,
    )


def kept_sample_ids(root: str | Path | Location, name: str) -> set[str] | None:
    """Stored sample ids a dedup table keeps (None: no table named); samples added after it are kept."""
    from storage import scan_index
    from storage.dedup import dropped_ids

    dropped = set(dropped_ids(root, name)["sample_id"].to_list())
    return {s for s in scan_index(root).select("sample_id").collect()["sample_id"].to_list() if s not in dropped}


__all__ = [
    "KEEP_RULES",
    "DedupReport",
    "Unreadable",
    "content_hashes",
    "dedup_dataset",
    "hash_sample",
    "kept_sample_ids",
    "near_duplicate_pairs",
    "store_vectors",
    "stored_rows",
]
