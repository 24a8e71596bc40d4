"""Nearest-neighbour search in an embedding store, with queries from files in any modality.

    hits = search_store("/data/audioset", "openclip-ViT-H-14-3f2a9c0d1b7e-p1", "image",
                        [Query("dog.jpg", "image", image_encoder), Query("bark.wav", "audio", audio_binding)],
                        k=10)

A query is a file (or a text) plus the modality it is in and the encoder that embeds it into the
store's space. Several queries form one query by *embedding arithmetic*: the sum of their
L2-normalized embeddings (optionally weighted), renormalized, as in ImageBind's "image + sound"
retrieval. When the store column has a fresh ANN index (``bindset index``, pipelines.curation.ann:
faiss) the search goes through it; without one it is exact cosine similarity in numpy, and with a
stale one (the store changed since it was built) it warns (``IndexStaleWarning``) and searches
exactly. ``use_index=False`` forces exact search.

The dataset may be a local path or an object-store URL (the store and the index are Polars scans);
so may a query file (fetched to a private temp copy for the decoders). The encoders of the query
terms come from `pipelines.binding.models.load_encoder`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from pipelines.binding.evaluate import l2_normalize
from preprocess.registry import modality_names
from storage.location import Location

#: file modalities a query can be read as (text is passed as a string)


def search(query_vectors: np.ndarray, store_vectors: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Exact cosine top-k: `(indices [Q,k'], scores [Q,k'])` with k' = min(k, store size), best first;
    ties are broken by the lower store index (a stable order)."""
    q = l2_normalize(np.atleast_2d(query_vectors))
    s = l2_normalize(store_vectors)
    if s.ndim != 2 or q.shape[1] != s.shape[1]:
        raise ValueError(f"query dim {q.shape[1]} does not match store vectors {s.shape}")
    k = min(int(k), s.shape[0])
    if k <= 0:
        return np.zeros((q.shape[0], 0), np.int64), np.zeros((q.shape[0], 0), np.float32)
    sims = q @ s.T
    # stable sort of -sims: equal scores keep store order
    idx = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return idx.astype(np.int64), np.take_along_axis(sims, idx, axis=1).astype(np.float32)


def combine(vectors: Sequence[np.ndarray] | np.ndarray, weights: Sequence[float] | None = None) -> np.ndarray:
    """Embedding arithmetic: the (weighted) sum of the L2-normalized vectors, renormalized -> `[D]`."""
    v = l2_normalize(np.stack([np.asarray(x, np.float32).reshape(-1) for x in vectors]))
    w = np.ones(len(v), np.float32) if weights is None else np.asarray(weights, np.float32)
    if w.shape != (len(v),):
        raise ValueError(f"{len(w)} weights for {len(v)} vectors")
    return l2_normalize((w[:, None] * v).sum(axis=0))


@dataclass
class Query:
    """One query term: a file path (or, for modality "text", the text itself), its modality, and
    the encoder that embeds it into the store's space; `weight` scales it in a combined query."""

    source: str | Path
    modality: str
    encoder: Any
    weight: float = 1.0


@dataclass
class Hit:
    rank: int
    sample_id: str
    score: float
    #: index fields of the sample (label, caption, source, uris) when available
    fields: dict[str, Any]


def embed_query(source: str | Path, modality: str, encoder, **options: Any) -> np.ndarray:
    """One query's normalized embedding `[D]`: the file is read and preprocessed exactly as the build
    does (`pipelines.single.model_input_for_file`; options such as `sensor`, `fx`, `anchor_s` go
    there), then embedded. Text is embedded from the string itself."""
    if modality not in modality_names():
        raise ValueError(f"unknown query modality {modality!r}; choose one of {modality_names()}")
    if modality == "text":
        return l2_normalize(encoder.encode([str(source)]))[0]
    from pipelines.single import model_input_for_file
    from storage.location import as_location, local_file

    with local_file(as_location(source)) as path:
        array = model_input_for_file(path, modality, **options)
    # video stays [clips,3,F,S,S]: with the batch axis it is the 6-D clip input both families accept
    return l2_normalize(encoder.encode(array[None]))[0]


def query_vector(queries: Sequence[Query], **options: Any) -> np.ndarray:
    """The combined query: `combine` of every term's embedding with its weight."""
    if not queries:
        raise ValueError("no query given")
    vectors = [embed_query(q.source, q.modality, q.encoder, **options) for q in queries]
    dims = {v.shape[0] for v in vectors}
    if len(dims) != 1:
        raise ValueError(f"query terms embed to different dimensions {sorted(dims)}: they are not in one space")
    return combine(vectors, [q.weight for q in queries])


def search_store(
    dataset: "str | Path | Location",
    store_id: str,
    column: str,
    queries: Sequence[Query] | np.ndarray,
    k: int = 10,
    sample_ids: Sequence[str] | None = None,
    use_index: bool = True,
    **options: Any,
) -> list[Hit]:
    """Top-k samples of `embeddings/<store_id>/` column `column` for one (combined) query, with
    their index fields. `queries` may also be a ready query vector. A fresh index of the column is
    used unless `use_index` is False or `sample_ids` restricts the search (module doc)."""
    from pipelines.binding.evaluate import read_vectors

    q = np.asarray(queries, np.float32) if isinstance(queries, np.ndarray) else query_vector(queries, **options)
    found = None
    if use_index and sample_ids is None:
        from pipelines.curation.ann import search_index

        found = search_index(dataset, store_id, column, q[None] if q.ndim == 1 else q[:1], k)
    if found is not None:
        hits_ids, scores = found[0][0], found[1][:, : len(found[0][0])]
    else:
        ids, vectors = read_vectors(dataset, store_id, column, sample_ids)
        if not ids:
            raise ValueError(f"store {store_id} of {dataset} has no {column!r} vectors")
        idx, scores = search(q[None] if q.ndim == 1 else q, vectors, k)
        hits_ids = [ids[i] for i in idx[0]]
    fields = _index_fields(dataset, hits_ids)
    return [
        Hit(rank + 1, sid, float(score), fields.get(sid, {}))
        for rank, (sid, score) in enumerate(zip(hits_ids, scores[0]))
    ]


def _index_fields(dataset: "str | Path | Location", sample_ids: list[str]) -> dict[str, dict[str, Any]]:
    import polars as pl

    from storage import scan_index

    wanted = [
        "sample_id",
        "source",
        "split",
        "label",
        "caption",
        "uri_image",
        "uri_video",
        "uri_audio",
        "uri_depth",
        "uri_thermal",
        "uri_imu",
    ]
    frame = scan_index(dataset).filter(pl.col("sample_id").is_in(sample_ids)).select(wanted).collect()
    return {
        row["sample_id"]: {k: v for k, v in row.items() if k != "sample_id" and v is not None}
        for row in frame.iter_rows(named=True)
    }


__all__ = [
    "Hit",
    "Query",
    "combine",
    "embed_query",
    "query_vector",
    "search",
    "search_store",
]
