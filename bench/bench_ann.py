"""Benchmark: the ANN index (pipelines/curation/ann*.py, faiss IVF) against exact numpy search, and
near-duplicate grouping (pipelines/curation/neardup.py), on N unit vectors of dimension D.

Usage: python bench/bench_ann.py [-n 1000000] [--dim 1024] [--data uniform|clustered]
                                 [--quantization flat fp16 sq8] [--queries 200] [--no-dedup] [--real 256]

For each quantization: build time (k-means training + adding), resident memory of the index and peak
RSS of the process, then recall@10 against exact search and ms per query for nprobe = 1, 2, 4, ...
(the sweep stops once recall@10 reaches 0.95 or the index is slower than exact search). Both sides
answer the same batch of queries with every core (numpy BLAS / faiss OpenMP); the exact baseline is
``ann.exact_topk`` (a BLAS matmul + argpartition per block of queries), plus a one-query-at-a-time
numpy search for reference. Near-dup grouping: 1% of the vectors are replaced by noisy copies of
others (cosine about 0.97); ``near_pairs`` (k-means cells, 2 probes) + ``connected_groups`` at
cosine >= 0.9, timed, with the recall of the planted pairs and the number of other pairs found.

``--data uniform`` (default) draws i.i.d. random unit vectors: no neighbourhood structure at all,
the hardest case for any index (the true 10th neighbour of a query is barely closer than the 1000th).
``--data clustered`` draws them around N/100 random centres (noise as large as the centre): some
neighbourhood structure, still far less than real embeddings have. ``--real K`` also builds a small real dataset (K synthetic image-text samples,
embedded with a random-weights tiny CLIP) and runs ``bindset index`` / search / dedup on its store.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time

import numpy as np


class PeakRss:
    """Peak resident memory of this process while the block runs (sampled every 20 ms), in GiB."""

    def __enter__(self) -> "PeakRss":
        self.start = rss_gib()
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, rss_gib())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_gib())
        self.end = rss_gib()


def rss_gib() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**30


def unit_rows(x: np.ndarray) -> np.ndarray:
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def make_vectors(n: int, dim: int, data: str, rng: np.random.Generator, chunk: int = 100_000):
    """The vectors and, for ``clustered``, the centres ``make_queries`` draws from too."""
    x = np.empty((n, dim), np.float32)
    centres = None
    if data == "clustered":
        centres = unit_rows(rng.standard_normal((max(n // 100, 1), dim), dtype=np.float32))
    for s in range(0, n, chunk):
        m = min(chunk, n - s)
        if centres is None:
            block = rng.standard_normal((m, dim), dtype=np.float32)
        else:
            noise = rng.standard_normal((m, dim), dtype=np.float32) / np.float32(np.sqrt(dim))
            block = centres[rng.integers(len(centres), size=m)] + noise
        x[s : s + m] = unit_rows(block)
    return x, centres


def make_queries(q: int, dim: int, centres, rng) -> np.ndarray:
    if centres is None:
        return unit_rows(rng.standard_normal((q, dim), dtype=np.float32))
    noise = rng.standard_normal((q, dim), dtype=np.float32) / np.float32(np.sqrt(dim))
    return unit_rows(centres[rng.integers(len(centres), size=q)] + noise)


def bench_index(
    x: np.ndarray,
    queries: np.ndarray,
    truth: np.ndarray,
    exact_ms: float,
    quantization: str,
    nlist: int | None,
    target: float,
) -> dict:
    from pipelines.curation.ann_index import IndexParams, add_vectors, make_index, recall_at, set_nprobe, train_index

    params = IndexParams(quantization=quantization, nlist=nlist or None, flat_below=0)
    with PeakRss() as mem:
        index = make_index(x.shape[1], len(x), params)
        t0 = time.perf_counter()
        train_s = train_index(index, x, params)
        t1 = time.perf_counter()
        add_vectors(index, x, 0)
        add_s = time.perf_counter() - t1
    from pipelines.curation.ann_index import index_nlist

    lists = index_nlist(index)
    out = {
        "quantization": quantization,
        "nlist": lists,
        "train_s": round(train_s, 1),
        "add_s": round(add_s, 1),
        "build_s": round(time.perf_counter() - t0, 1),
        "index_gib": round(mem.end - mem.start, 2),
        "peak_rss_gib": round(mem.peak, 2),
        "sweep": [],
    }
    print(
        f"  {quantization}: IVF{lists} trained in {train_s:.1f} s, added in {add_s:.1f} s; index {out['index_gib']} GiB "
        f"resident, process peak {mem.peak:.2f} GiB",
        flush=True,
    )
    nprobe = 1
    while True:
        nprobe = min(nprobe, lists)
        set_nprobe(index, nprobe)
        t = time.perf_counter()
        _, found = index.search(queries, truth.shape[1])
        ms = (time.perf_counter() - t) * 1000 / len(queries)
        recall = recall_at(found, truth)
        point = {
            "nprobe": nprobe,
            "recall_at_10": round(recall, 4),
            "ms_per_query": round(ms, 3),
            "speedup": round(exact_ms / ms, 1),
        }
        out["sweep"].append(point)
        print(
            f"    nprobe {nprobe:5d}: recall@10 {recall:.3f}  {ms:8.3f} ms/query  {exact_ms / ms:7.1f}x exact",
            flush=True,
        )
        if recall >= target or nprobe >= lists or ms > exact_ms:
            break
        nprobe *= 2
    good = [p for p in out["sweep"] if p["recall_at_10"] >= target]
    out["at_target"] = good[0] if good else None
    del index
    return out


def bench_dedup(x: np.ndarray, rng: np.random.Generator, fraction: float = 0.01, threshold: float = 0.9) -> dict:
    from pipelines.curation.neardup import PairStats, connected_groups, near_pairs

    n, dim = x.shape
    k = max(1, int(n * fraction))
    src = rng.choice(n - k, size=k, replace=False)
    dst = np.arange(n - k, n)
    noise = rng.standard_normal((k, dim), dtype=np.float32) * np.float32(0.25 / np.sqrt(dim))
    x[dst] = unit_rows(x[src] + noise)  # cosine about 0.97 to its source
    planted = set(zip(np.minimum(src, dst).tolist(), np.maximum(src, dst).tolist()))
    stats = PairStats("")
    with PeakRss() as mem:
        t = time.perf_counter()
        i, j, s = near_pairs(x, threshold, stats=stats)
        pairs_s = time.perf_counter() - t
        t = time.perf_counter()
        labels = connected_groups(n, i, j)
        group_s = time.perf_counter() - t
    found = set(zip(i.tolist(), j.tolist()))
    recall = len(found & planted) / len(planted)
    out = {
        "planted_pairs": k,
        "threshold": threshold,
        "method": stats.method,
        "nlist": stats.nlist,
        "probes": stats.probes,
        "pairs_s": round(pairs_s, 1),
        "groups_s": round(group_s, 2),
        "timings": {a: round(b, 1) for a, b in stats.timings.items()},
        "pairs_found": len(found),
        "planted_recall": round(recall, 4),
        "other_pairs": len(found - planted),
        "groups": int(len(np.unique(labels))),
        "peak_rss_gib": round(mem.peak, 2),
        "compared_pairs": stats.compared,
    }
    print(
        f"  near-dup grouping: {pairs_s:.1f} s for pairs ({stats.method}, nlist {stats.nlist}, probes {stats.probes}: "
        f"{out['timings']}), {group_s:.2f} s union-find; planted-pair recall {recall:.4f}, "
        f"{len(found - planted)} other pairs >= {threshold}; {stats.compared / n:.0f} similarities per vector "
        f"(all-pairs: {n - 1}); peak {mem.peak:.2f} GiB",
        flush=True,
    )
    return out


def bench_real(k: int) -> dict:
    """A real (small) store through the whole pipeline: synth -> build -> embed -> index -> search -> dedup."""
    import tempfile
    import warnings
    from pathlib import Path

    import torch
    from safetensors.torch import save_file

    from encoders.openclip import TINY_NAME, load_openclip_model
    from pipelines.build import build_dataset
    from pipelines.config import BuildConfig
    from pipelines.curation.ann import AnnIndex
    from pipelines.curation.ann_build import build_index
    from pipelines.curation.ann_index import IndexParams, exact_topk, recall_at
    from pipelines.curation.dedup import dedup_dataset, store_vectors
    from pipelines.embed import EncoderSpec, embed_dataset
    from pipelines.sources import create_source
    from pipelines.synth import synthesize

    warnings.simplefilter("ignore")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        synthesize(tmp / "src", "image-text", k, seed=0)
        build_dataset(
            [create_source("image-text", tmp / "src")], tmp / "ds", BuildConfig(shard_size=64), progress=False
        )
        model, _ = load_openclip_model(TINY_NAME, None, torch.device("cpu"), seed=0)
        save_file({a: b.contiguous() for a, b in model.state_dict().items()}, str(tmp / "tiny.safetensors"))
        enc = embed_dataset(
            tmp / "ds",
            EncoderSpec("openclip:bindset-tiny-clip", str(tmp / "tiny.safetensors"), ("image", "text")),
            executor="local",
            progress=False,
        )
        prep_s = time.perf_counter() - t
        out = {"samples": k, "encoder_id": enc.encoder_id, "prepare_s": round(prep_s, 1)}
        from storage import scan_index

        ids = scan_index(tmp / "ds").select("sample_id").collect()["sample_id"].sort().to_list()
        vectors = store_vectors(tmp / "ds", enc.encoder_id, ["image"], ids)["image"]
        truth, _ = exact_topk(vectors, vectors, 11)
        for label, params in (("auto", IndexParams()), ("ivf", IndexParams(nlist=max(2, int(np.sqrt(k)))))):
            report = build_index(tmp / "ds", enc.encoder_id, "image", params, rebuild=True)
            index = AnnIndex.load(tmp / "ds", enc.encoder_id, "image")
            pos = {s: i for i, s in enumerate(ids)}
            t = time.perf_counter()
            found, _ = index.search(vectors, 11)
            ms = (time.perf_counter() - t) * 1000 / len(vectors)
            found = np.array([[pos[s] for s in row] for row in found])
            t = time.perf_counter()
            exact_topk(vectors, vectors, 11)
            exact_ms = (time.perf_counter() - t) * 1000 / len(vectors)
            out[label] = {
                "kind": report.kind,
                "nprobe": report.nprobe,
                "build_s": round(report.seconds, 2),
                "recall_at_10": round(recall_at(found[:, 1:], truth[:, 1:]), 4),
                "ms_per_query": round(ms, 4),
                "exact_ms_per_query": round(exact_ms, 4),
            }
            print(
                f"  real store ({k} x {vectors.shape[1]}, {label}): {report.kind} nprobe {report.nprobe}, built in "
                f"{report.seconds:.2f} s; recall@10 {out[label]['recall_at_10']}, {ms:.4f} ms/query vs exact "
                f"{exact_ms:.4f}",
                flush=True,
            )
        t = time.perf_counter()
        rep = dedup_dataset(tmp / "ds", "bench", encoder_id=enc.encoder_id, modalities=["image"], threshold=0.999)
        out["dedup"] = {"seconds": round(time.perf_counter() - t, 2), "dropped": rep.dropped, "groups": rep.groups}
        print(f"  real store dedup (exact hashes + near at 0.999): {out['dedup']}", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--data", choices=("uniform", "clustered"), default="uniform")
    ap.add_argument("--quantization", nargs="+", default=["flat", "fp16", "sq8"])
    ap.add_argument("--nlist", type=int, help="IVF lists (default: the index's own choice, about sqrt(N))")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--target", type=float, default=0.95)
    ap.add_argument("--no-dedup", action="store_true")
    ap.add_argument("--real", type=int, default=0, help="also run a real store of this many samples (e.g. 256)")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    import faiss

    rng = np.random.default_rng(0)
    result: dict = {
        "n": args.n,
        "dim": args.dim,
        "data": args.data,
        "queries": args.queries,
        "threads": faiss.omp_get_max_threads(),
        "faiss": faiss.__version__,
    }
    print(
        f"{args.n} x {args.dim} {args.data} unit vectors ({args.n * args.dim * 4 / 2**30:.2f} GiB float32), "
        f"{args.queries} queries, {result['threads']} threads",
        flush=True,
    )
    started = time.perf_counter()
    if args.n:
        t = time.perf_counter()
        x, centres = make_vectors(args.n, args.dim, args.data, rng)
        queries = make_queries(args.queries, args.dim, centres, rng)
        assert x.dtype == queries.dtype == np.float32  # a float64 query would make numpy copy the store
        result["generate_s"] = round(time.perf_counter() - t, 1)
        from pipelines.curation.ann_index import exact_topk

        t = time.perf_counter()
        truth, _ = exact_topk(queries, x, 10, block=64)
        exact_ms = (time.perf_counter() - t) * 1000 / len(queries)
        t = time.perf_counter()
        for q in queries[:5]:
            sims = x @ q
            np.argpartition(-sims, 10)[:10]
        single_ms = (time.perf_counter() - t) * 1000 / 5
        result["exact"] = {"ms_per_query_batched": round(exact_ms, 3), "ms_per_query_single": round(single_ms, 3)}
        print(
            f"  exact numpy: {exact_ms:.2f} ms/query in batches of 64, {single_ms:.2f} ms/query one at a time",
            flush=True,
        )
        result["index"] = [
            bench_index(x, queries, truth, exact_ms, qz, args.nlist, args.target) for qz in args.quantization
        ]
        if not args.no_dedup:
            result["dedup"] = bench_dedup(x, rng)
        del x
    if args.real:
        result["real"] = bench_real(args.real)
    result["total_s"] = round(time.perf_counter() - started, 1)
    print(f"total {result['total_s']} s", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)


if __name__ == "__main__":
    main()
