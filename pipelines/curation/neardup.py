"""Near-duplicate pairs among unit vectors without all-pairs O(N^2) work, and union-find groups.

``near_pairs(vectors, threshold)`` returns every pair ``i < j`` with cosine >= threshold that it
finds:

- up to ``exact_below`` vectors (16,384): blocked all-pairs in numpy, exact (every pair is found);
- above: SemDeDup's recipe, searched like an IVF index. Spherical k-means (faiss) puts each vector
  in its nearest of ``nlist`` cells; each vector is then compared exactly (BLAS, in blocks) with the
  members of its ``probes`` nearest cells (8 by default), so a pair straddling a cell border is
  still found. Work per vector: nlist similarities for the assignment plus probes x N / nlist for
  the comparisons; nlist = sqrt(probes x N) balances the two, so the cost grows as N^1.5, not N^2
  (at 1M: about 5,700 similarities per vector instead of 1M). On random unit vectors of dimension
  1024, the hardest case (cells carry almost no neighbourhood information), planted pairs of cosine
  0.97 are found at recall 0.996-0.998 with 8 probes (100k and 1M vectors; 0.987 with 4 probes at
  100k), and grouping 1M such vectors took 124 s on 2 cores; see bench/bench_ann.py.

``connected_groups(n, i, j)`` labels the connected components of the pair graph (vectorized union-find
by pointer jumping: no Python loop over pairs).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np


@dataclass
class PairStats:
    method: str
    nlist: int = 0
    probes: int = 0
    seconds: float = 0.0
    compared: int = 0  # pair similarities computed
    timings: dict[str, float] = field(default_factory=dict)


def _block_pairs(x: np.ndarray, threshold: float, block: int, ids: np.ndarray | None = None):
    """Pairs (a < b) of rows of ``x`` with x_a . x_b >= threshold, exact, ``block`` rows at a time."""
    n = len(x)
    out_i, out_j, out_s = [], [], []
    compared = 0
    for start in range(0, n, block):
        rows = x[start : start + block]
        sims = rows @ x[start:].T  # only columns from `start` on: the upper triangle and its diagonal block
        compared += sims.size
        diagonal = np.arange(len(rows))
        sims[diagonal, diagonal] = -np.inf  # a vector with itself is no pair
        hit = np.flatnonzero(sims.max(axis=1) >= threshold)  # few rows hold a pair: look only there
        r, c = np.nonzero(sims[hit] >= threshold)
        r = hit[r]
        keep = c > r  # column index is relative to `start`, row index too
        r, c = r[keep], c[keep]
        if len(r):
            out_s.append(sims[r, c].astype(np.float32))
            a, b = r + start, c + start
            if ids is not None:
                a, b = ids[a], ids[b]
            out_i.append(a)
            out_j.append(b)
    if not out_i:
        empty = np.zeros(0, np.int64)
        return empty, empty, np.zeros(0, np.float32), compared
    return (
        np.concatenate(out_i).astype(np.int64),
        np.concatenate(out_j).astype(np.int64),
        np.concatenate(out_s),
        compared,
    )


def near_pairs(
    vectors: np.ndarray,
    threshold: float,
    *,
    exact_below: int = 16_384,
    nlist: int | None = None,
    probes: int = 8,
    block: int = 2048,
    train_per_cell: int = 10,
    niter: int = 8,
    seed: int = 0,
    stats: PairStats | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(i, j, similarity)`` of the pairs ``i < j`` with cosine >= ``threshold`` among unit-length
    rows of ``vectors`` (see the module doc for the method). Pairs come out unique."""
    started = time.perf_counter()
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    n = len(x)
    if n < 2:
        empty = np.zeros(0, np.int64)
        return empty, empty, np.zeros(0, np.float32)
    if n <= exact_below and nlist is None:
        i, j, s, compared = _block_pairs(x, threshold, block)
        if stats is not None:
            stats.method, stats.compared, stats.seconds = "all-pairs", compared, time.perf_counter() - started
        return i, j, s
    import faiss

    probes = max(1, int(probes))
    nlist = int(nlist or max(1, min(round(math.sqrt(probes * n)), n // 8)))
    probes = min(probes, nlist)
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    size = min(n, max(nlist * train_per_cell, nlist))
    sample = x if size >= n else x[np.sort(rng.choice(n, size, replace=False))]
    km = faiss.Kmeans(
        x.shape[1],
        nlist,
        niter=niter,
        seed=seed,
        spherical=True,
        max_points_per_centroid=max(train_per_cell, 1),
        min_points_per_centroid=1,
        verbose=False,
    )
    km.train(np.ascontiguousarray(sample))
    t1 = time.perf_counter()
    quantizer = faiss.IndexFlatIP(x.shape[1])
    quantizer.add(km.centroids)
    cells = np.empty((n, probes), np.int64)
    for start in range(0, n, 65_536):
        _, cells[start : start + 65_536] = quantizer.search(x[start : start + 65_536], probes)
    t2 = time.perf_counter()
    # Members: each vector in its nearest cell. Visitors: each vector in each of its `probes` cells.
    primary = cells[:, 0]
    members = np.argsort(primary, kind="stable")
    member_bounds = np.searchsorted(primary[members], np.arange(nlist + 1))
    visited = cells.reshape(-1)
    visitors = np.repeat(np.arange(n, dtype=np.int64), probes)
    order = np.argsort(visited, kind="stable")
    visited, visitors = visited[order], visitors[order]
    visitor_bounds = np.searchsorted(visited, np.arange(nlist + 1))
    out_i, out_j, out_s = [], [], []
    compared = 0
    for c in range(nlist):
        m = members[member_bounds[c] : member_bounds[c + 1]]
        v = visitors[visitor_bounds[c] : visitor_bounds[c + 1]]
        if len(m) == 0 or len(v) < 1:
            continue
        xm = x[m]
        for start in range(0, len(v), block):
            vb = v[start : start + block]
            sims = x[vb] @ xm.T
            compared += sims.size
            rows = np.flatnonzero(sims.max(axis=1) >= threshold)  # few rows hold a pair: look only there
            r, k = np.nonzero(sims[rows] >= threshold)
            r = rows[r]
            a, b = vb[r], m[k]
            keep = a != b
            if keep.any():
                out_i.append(np.minimum(a[keep], b[keep]))
                out_j.append(np.maximum(a[keep], b[keep]))
                out_s.append(sims[r[keep], k[keep]].astype(np.float32))
    t3 = time.perf_counter()
    if out_i:
        i, j, s = np.concatenate(out_i), np.concatenate(out_j), np.concatenate(out_s)
        # A pair is found from both ends, and from every cell both visit.
        _, first = np.unique(i * n + j, return_index=True)
        i, j, s = i[first], j[first], s[first]
    else:
        i = j = np.zeros(0, np.int64)
        s = np.zeros(0, np.float32)
    if stats is not None:
        stats.method, stats.nlist, stats.probes, stats.compared = "cells", nlist, probes, compared
        stats.seconds = time.perf_counter() - started
        stats.timings = {"kmeans_s": t1 - t0, "assign_s": t2 - t1, "pairs_s": t3 - t2}
    return i, j, s


def connected_groups(n: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Component label of each of ``n`` nodes given edges ``(i, j)``: the smallest node of its component."""
    parent = np.arange(n, dtype=np.int64)
    i = np.asarray(i, np.int64)
    j = np.asarray(j, np.int64)

    def compress(p: np.ndarray) -> np.ndarray:
        while True:
            q = p[p]
            if np.array_equal(q, p):
                return p
            p = q

    while len(i):
        ri, rj = parent[i], parent[j]
        live = ri != rj
        if not live.any():
            break
        i, j, ri, rj = i[live], j[live], ri[live], rj[live]
        hi, lo = np.maximum(ri, rj), np.minimum(ri, rj)
        # Conflicting hooks of one root keep the smallest target; the rest are retried next round.
        np.minimum.at(parent, hi, lo)
        parent = compress(parent)
    return compress(parent)


__all__ = ["PairStats", "connected_groups", "near_pairs"]
