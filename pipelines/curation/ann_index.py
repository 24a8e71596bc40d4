"""The faiss side of the ANN index (``ann``): index kinds, k-means training, adding vectors, nprobe
tuning, and the exact numpy search it is measured against.

Library: **faiss-cpu**, not usearch. Both are well kept and both would do for search alone; faiss
wins on what the rest of bindset needs from it on CPUs:

- build cost: its IVF index is trained by k-means on a sample (40 vectors per list) and filled by one
  assignment pass, about a minute or two for 1M x 1024 on 2 cores (bench/bench_ann.py); an HNSW graph (usearch's only
  index) costs hundreds of distance evaluations per insert: measured here, faiss' own HNSW took 72 s
  for 50k x 1024, i.e. far beyond the ~15 min budget at 1M;
- incremental adds: shards embedded later go into the trained IVF lists without touching the rest
  (``add`` with our own ids); the kind, list count and probe count are recorded, and a store that
  outgrows what the index was trained for is rebuilt on purpose, not silently;
- one library for every variant we tune (exact ``Flat`` for small stores, IVF over float32, float16
  or int8 codes), with files written by ``faiss.write_index`` (no pickle anywhere).

Kind: stores under ``flat_below`` vectors (20,000) get an exact ``IndexFlatIP`` (an index that
answers like numpy, so small stores lose nothing); larger ones ``IVF<nlist>`` with nlist about
sqrt(N) and float32 (``flat``), float16 (``fp16``) or int8 (``sq8``) codes. faiss suggests 4 to 16
sqrt(N) lists; we take fewer because k-means costs grow with nlist^2 (40 training vectors per
list): at 1M x 1024 on 2 cores, 1,000 lists trained in 4-15 s and the whole build took 15-31 s
(bench/bench_ann.py), where 4,000 lists would take minutes to train. The number of lists
probed per query (``nprobe``) is tuned at build time: the smallest power of two whose recall@10 on
256 of the store's own vectors (themselves left out) reaches ``target_recall`` (0.95) against exact
search; the manifest records it with the recall and the measured query times, index and exact.
On data with no neighbourhood structure (random unit vectors) that tuning ends near an exhaustive
scan: the index is then exact but no faster, and the manifest says so (bench/bench_ann.py).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

QUANTIZATIONS = ("flat", "fp16", "sq8")
_FACTORY_CODES = {"flat": "Flat", "fp16": "SQfp16", "sq8": "SQ8"}


@dataclass(frozen=True)
class IndexParams:
    """How an index is built. ``nlist``/``nprobe`` None: chosen from the store (module doc)."""

    quantization: str = "flat"
    nlist: int | None = None
    nprobe: int | None = None
    flat_below: int = 20_000
    train_per_list: int = 40
    niter: int = 10
    target_recall: float = 0.95
    tune_queries: int = 256
    seed: int = 0

    def __post_init__(self) -> None:
        if self.quantization not in QUANTIZATIONS:
            raise ValueError(f"quantization must be one of {QUANTIZATIONS}, got {self.quantization!r}")
        if self.nlist is not None and self.nlist < 1:
            raise ValueError(f"nlist must be >= 1, got {self.nlist}")
        if not 0 < self.target_recall <= 1:
            raise ValueError(f"target_recall must be in (0, 1], got {self.target_recall}")


def normalize(vectors: np.ndarray) -> np.ndarray:
    """float32 rows of unit length (zero rows stay zero): cosine = inner product."""
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    if x.ndim == 1:
        x = x[None]
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.maximum(norms, np.float32(1e-12)))


def default_nlist(n: int) -> int:
    """About sqrt(N) lists (module doc), at least 39 training vectors each (faiss' own floor)."""
    return int(max(1, min(math.sqrt(n), n // 39)))


def make_index(dim: int, n: int, params: IndexParams = IndexParams()):
    """An empty faiss index of the kind ``params`` gives for ``n`` vectors (inner product)."""
    import faiss

    if n < params.flat_below and params.nlist is None:
        return faiss.IndexFlatIP(dim)
    nlist = params.nlist or default_nlist(n)
    index = faiss.index_factory(dim, f"IVF{nlist},{_FACTORY_CODES[params.quantization]}", faiss.METRIC_INNER_PRODUCT)
    ivf = faiss.extract_index_ivf(index)
    ivf.cp.niter = params.niter
    ivf.cp.seed = params.seed
    ivf.cp.max_points_per_centroid = max(params.train_per_list, 39)
    return index


def train_index(index, vectors: np.ndarray, params: IndexParams = IndexParams()) -> float:
    """k-means on a seeded sample of ``params.train_per_list`` vectors per list; seconds taken."""
    started = time.perf_counter()
    if not index.is_trained:
        nlist = index_nlist(index)
        size = min(len(vectors), max(nlist * params.train_per_list, nlist))
        rng = np.random.default_rng(params.seed)
        sample = vectors if size >= len(vectors) else vectors[np.sort(rng.choice(len(vectors), size, replace=False))]
        index.train(np.ascontiguousarray(sample, dtype=np.float32))
    return time.perf_counter() - started


def add_vectors(index, vectors: np.ndarray, first_id: int, chunk: int = 65_536) -> None:
    """Add with ids ``first_id, first_id+1, ...`` (a Flat index numbers them itself, in order)."""
    import faiss

    for start in range(0, len(vectors), chunk):
        block = np.ascontiguousarray(vectors[start : start + chunk], dtype=np.float32)
        if isinstance(index, faiss.IndexFlat):
            index.add(block)
        else:
            ids = np.arange(first_id + start, first_id + start + len(block), dtype=np.int64)
            index.add_with_ids(block, ids)


def index_nlist(index) -> int:
    import faiss

    try:
        return int(faiss.extract_index_ivf(index).nlist)
    except (RuntimeError, TypeError):  # not an IVF index
        return 0


def set_nprobe(index, nprobe: int | None) -> None:
    import faiss

    if nprobe and index_nlist(index):
        faiss.extract_index_ivf(index).nprobe = int(min(nprobe, index_nlist(index)))


def exact_topk(queries: np.ndarray, vectors: np.ndarray, k: int, block: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-k in numpy (the baseline the index is measured against), best first."""
    k = min(k, len(vectors))
    queries = np.asarray(queries, dtype=vectors.dtype)  # a float64 query would make numpy copy the store
    idx = np.empty((len(queries), k), np.int64)
    val = np.empty((len(queries), k), np.float32)
    for s in range(0, len(queries), block):
        sims = queries[s : s + block] @ vectors.T
        part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        pv = np.take_along_axis(sims, part, axis=1)
        order = np.argsort(-pv, axis=1, kind="stable")
        idx[s : s + block] = np.take_along_axis(part, order, axis=1)
        val[s : s + block] = np.take_along_axis(pv, order, axis=1)
    return idx, val


def recall_at(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of each row of ``truth`` found in the same row of ``found``."""
    if truth.size == 0:
        return 1.0
    return float(np.mean([len(set(f.tolist()) & set(t.tolist())) / len(t) for f, t in zip(found, truth)]))


def tune_nprobe(index, vectors: np.ndarray, params: IndexParams = IndexParams(), k: int = 10) -> dict[str, Any]:
    """The smallest power-of-two ``nprobe`` whose recall@k on ``params.tune_queries`` of the store's
    own vectors (each one's own id left out) reaches ``params.target_recall``; with the recall and
    the measured ms per query of the index and of exact numpy search."""
    nlist = index_nlist(index)
    n = len(vectors)
    if not nlist or n < 2:
        return {"nprobe": None, "recall_at_10": 1.0}
    rng = np.random.default_rng(params.seed + 1)
    pick = np.sort(rng.choice(n, min(params.tune_queries, n), replace=False))
    queries = np.ascontiguousarray(vectors[pick])
    kk = min(k + 1, n)
    started = time.perf_counter()
    truth_idx, _ = exact_topk(queries, vectors, kk)
    exact_ms = (time.perf_counter() - started) * 1000 / len(queries)
    truth = np.array([[i for i in row if i != q][:k] for row, q in zip(truth_idx, pick)])
    chosen = None
    nprobe = 1
    while True:
        nprobe = min(nprobe, nlist)
        set_nprobe(index, nprobe)
        started = time.perf_counter()
        _, found = index.search(queries, kk)
        ms = (time.perf_counter() - started) * 1000 / len(queries)
        found = np.array([[i for i in row if i != q][:k] for row, q in zip(found, pick)])
        recall = recall_at(found, truth)
        chosen = {
            "nprobe": nprobe,
            "recall_at_10": round(recall, 4),
            "index_ms_per_query": round(ms, 4),
            "exact_ms_per_query": round(exact_ms, 4),
        }
        if recall >= params.target_recall or nprobe >= nlist:
            break
        nprobe *= 2
    set_nprobe(index, chosen["nprobe"])
    return chosen


def index_kind(index, params: IndexParams) -> str:
    nlist = index_nlist(index)
    return f"IVF{nlist},{_FACTORY_CODES[params.quantization]}" if nlist else "Flat"
