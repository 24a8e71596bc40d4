"""Evaluation of embedding spaces: zero-shot classification and cross-modal retrieval.

Zero-shot (CLIP's protocol): every class name is put into prompt templates ("a photo of a {}"), the
prompts go through a frozen text encoder, each class's prompt vectors are averaged and renormalized,
and a sample is assigned the class of highest cosine similarity. Accuracy is reported with the
chance level (1 / number of classes) and the majority-class rate.

Retrieval: for each query vector, the gallery is ranked by cosine similarity (exact, numpy) and
Recall@k is the share of queries whose true partner is among the top k. By default query i's
partner is gallery item i (paired embeddings of one sample in two modalities); chance Recall@k is
k / gallery size.

Stores: `embed_modality` fills `embeddings/<store-id>/` for any encoder (including a trained
binding) from the shards, and `evaluate_retrieval` / `evaluate_zero_shot` read stores by
`(store id, column)` and join them by sample_id.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import polars as pl

DEFAULT_TEMPLATES: tuple[str, ...] = ("a photo of a {}.",)


def l2_normalize(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(x, axis=axis, keepdims=True)
    return np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)


# --------------------------------------------------------------------------------------------------
# Zero-shot classification


@dataclass
class ZeroShotResult:
    accuracy: float
    chance: float
    #: share of the most frequent true class (what always answering it would score)
    majority: float
    n: int
    classes: list[str]
    per_class_accuracy: dict[str, float]
    #: confusion[i][j]: samples of class i predicted as class j
    confusion: list[list[int]]
    predictions: list[str] = field(repr=False)

    def lines(self, what: str = "zero-shot") -> list[str]:
        per = ", ".join(f"{c} {a:.0%}" for c, a in self.per_class_accuracy.items())
        return [
            f"{what}: accuracy {self.accuracy:.1%} on {self.n} samples (chance {self.chance:.1%}, "
            f"majority class {self.majority:.1%}); per class: {per}"
        ]

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "predictions"}


def zero_shot_from_vectors(
    embeddings: np.ndarray, labels: Sequence[str], class_vectors: np.ndarray, classes: Sequence[str]
) -> ZeroShotResult:
    """Classify `embeddings` [N,D] by cosine argmax over `class_vectors` [C,D] (row c = `classes[c]`)."""
    emb = l2_normalize(embeddings)
    cls = l2_normalize(class_vectors)
    classes = list(classes)
    if cls.shape[0] != len(classes):
        raise ValueError(f"{cls.shape[0]} class vectors for {len(classes)} classes")
    if emb.shape[0] != len(labels):
        raise ValueError(f"{emb.shape[0]} embeddings for {len(labels)} labels")
    if emb.shape[0] and emb.shape[1] != cls.shape[1]:
        raise ValueError(f"embedding dim {emb.shape[1]} != class vector dim {cls.shape[1]}")
    unknown = sorted(set(labels) - set(classes))
    if unknown:
        raise ValueError(f"labels {unknown} are not among the classes {classes}")
    pred_idx = np.argmax(emb @ cls.T, axis=1) if len(labels) else np.zeros(0, np.int64)
    true_idx = np.array([classes.index(label) for label in labels], dtype=np.int64)
    confusion = np.zeros((len(classes), len(classes)), np.int64)
    np.add.at(confusion, (true_idx, pred_idx), 1)
    n = len(labels)
    per_class = {c: float(confusion[i, i] / confusion[i].sum()) for i, c in enumerate(classes) if confusion[i].sum()}
    return ZeroShotResult(
        accuracy=float((pred_idx == true_idx).mean()) if n else float("nan"),
        chance=1.0 / len(classes),
        majority=float(confusion.sum(axis=1).max() / n) if n else float("nan"),
        n=n,
        classes=classes,
        per_class_accuracy=per_class,
        confusion=confusion.tolist(),
        predictions=[classes[i] for i in pred_idx],
    )


def class_text_vectors(
    text_encoder, class_names: Sequence[str] | Mapping[str, str], templates: Sequence[str] = DEFAULT_TEMPLATES
) -> np.ndarray:
    """`[C,D]`: per class, the mean of its normalized prompt embeddings, renormalized (prompt
    ensembling). `class_names` is a list of names or a mapping class -> name put into the prompts."""
    names = list(class_names.values()) if isinstance(class_names, Mapping) else list(class_names)
    prompts = [t.format(name) for name in names for t in templates]
    vectors = l2_normalize(text_encoder.encode(prompts)).reshape(len(names), len(templates), -1)
    return l2_normalize(vectors.mean(axis=1))


def zero_shot_classify(
    embeddings: np.ndarray,
    labels: Sequence[str],
    text_encoder,
    class_names: Sequence[str] | Mapping[str, str],
    templates: Sequence[str] = DEFAULT_TEMPLATES,
) -> ZeroShotResult:
    """Zero-shot accuracy of `embeddings` against class prompts through the frozen `text_encoder`.

    `class_names`: the classes (labels use them), or a mapping label -> name used in the prompts
    (e.g. {"siren": "siren light"})."""
    classes = list(class_names.keys()) if isinstance(class_names, Mapping) else list(class_names)
    return zero_shot_from_vectors(embeddings, labels, class_text_vectors(text_encoder, class_names, templates), classes)


# --------------------------------------------------------------------------------------------------
# Retrieval


@dataclass
class RetrievalResult:
    recall: dict[int, float]
    chance: dict[int, float]
    n_queries: int
    gallery: int
    #: median rank (1-based) of the true partner
    median_rank: float
    mean_rank: float

    def lines(self, what: str = "retrieval") -> list[str]:
        parts = ", ".join(f"R@{k} {self.recall[k]:.1%} (chance {self.chance[k]:.1%})" for k in sorted(self.recall))
        return [f"{what}: {parts}; median rank {self.median_rank:g} of {self.gallery} ({self.n_queries} queries)"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "recall": {f"R@{k}": v for k, v in self.recall.items()},
            "chance": {f"R@{k}": v for k, v in self.chance.items()},
            "n_queries": self.n_queries,
            "gallery": self.gallery,
            "median_rank": self.median_rank,
            "mean_rank": self.mean_rank,
        }


def ranks_of_targets(
    queries: np.ndarray, gallery: np.ndarray, targets: Sequence[int] | None = None, chunk: int = 4096
) -> np.ndarray:
    """1-based rank of each query's true gallery item by cosine similarity (exact). Ties count
    against the query (an item scoring equal to the target ranks ahead of it), so constant
    embeddings never look good."""
    q = l2_normalize(queries)
    g = l2_normalize(gallery)
    if q.shape[1] != g.shape[1]:
        raise ValueError(f"query dim {q.shape[1]} != gallery dim {g.shape[1]}")
    t = np.arange(len(q)) if targets is None else np.asarray(targets, dtype=np.int64)
    if len(t) != len(q) or (len(t) and (t.min() < 0 or t.max() >= len(g))):
        raise ValueError("targets must give one gallery index per query")
    ranks = np.empty(len(q), dtype=np.int64)
    for start in range(0, len(q), chunk):
        sims = q[start : start + chunk] @ g.T
        rows = np.arange(sims.shape[0])
        own = sims[rows, t[start : start + chunk]]
        ahead = (sims > own[:, None]).sum(axis=1) + (sims == own[:, None]).sum(axis=1) - 1
        ranks[start : start + chunk] = ahead + 1
    return ranks


def recall_at_k(
    queries: np.ndarray, gallery: np.ndarray, ks: Sequence[int] = (1, 5, 10), targets: Sequence[int] | None = None
) -> RetrievalResult:
    """Recall@k of cross-modal retrieval: query i's true partner is gallery item `targets[i]`
    (default: i). Chance Recall@k = min(k, gallery) / gallery."""
    ranks = ranks_of_targets(queries, gallery, targets)
    m = len(gallery)
    return RetrievalResult(
        recall={int(k): float((ranks <= k).mean()) if len(ranks) else float("nan") for k in ks},
        chance={int(k): min(int(k), m) / m if m else float("nan") for k in ks},
        n_queries=len(ranks),
        gallery=m,
        median_rank=float(np.median(ranks)) if len(ranks) else float("nan"),
        mean_rank=float(ranks.mean()) if len(ranks) else float("nan"),
    )


# --------------------------------------------------------------------------------------------------
# Stores


def read_vectors(
    dataset: str | Path, store_id: str, column: str, sample_ids: Sequence[str] | None = None
) -> tuple[list[str], np.ndarray]:
    """`(sample_ids, [N,D] float32)` of a store column (non-null rows, sorted by sample_id)."""
    from pipelines.binding.pairs import read_store_vectors

    return read_store_vectors(dataset, store_id, column, sample_ids)


def paired_vectors(
    dataset: str | Path, a: tuple[str, str], b: tuple[str, str], sample_ids: Sequence[str] | None = None
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Vectors of two `(store id, column)` pairs for the samples present in both, aligned by sample_id."""
    ids_a, va = read_vectors(dataset, *a, sample_ids=sample_ids)
    ids_b, vb = read_vectors(dataset, *b, sample_ids=sample_ids)
    common = sorted(set(ids_a) & set(ids_b))
    pos_a = {s: i for i, s in enumerate(ids_a)}
    pos_b = {s: i for i, s in enumerate(ids_b)}
    ia = np.array([pos_a[s] for s in common], dtype=np.int64)
    ib = np.array([pos_b[s] for s in common], dtype=np.int64)
    return common, va[ia] if len(common) else va[:0], vb[ib] if len(common) else vb[:0]


def evaluate_retrieval(
    dataset: str | Path,
    query: tuple[str, str],
    gallery: tuple[str, str],
    sample_ids: Sequence[str] | None = None,
    ks: Sequence[int] = (1, 5, 10),
) -> RetrievalResult:
    """Recall@k from `query = (store id, column)` to `gallery = (store id, column)` over the samples
    embedded in both (optionally only `sample_ids`, e.g. a held-out split)."""
    ids, q, g = paired_vectors(dataset, query, gallery, sample_ids)
    if not ids:
        raise ValueError(f"no sample has both {query} and {gallery} vectors")
    return recall_at_k(q, g, ks)


def sample_labels(
    dataset: str | Path,
    sample_ids: Sequence[str] | None = None,
    label_map: Callable[[str], str | None] | Mapping[str, str] | None = None,
) -> dict[str, str]:
    """sample_id -> class from the index's `label` column. `label_map` turns a stored label (e.g.
    AudioSet's "mid1,mid2") into a class name (a function, or a mapping of the first listed label);
    samples it maps to None are left out."""
    from storage import scan_index

    frame = scan_index(dataset).select("sample_id", "label").filter(pl.col("label").is_not_null())
    if sample_ids is not None:
        frame = frame.filter(pl.col("sample_id").is_in(list(sample_ids)))
    out: dict[str, str] = {}
    for sid, label in frame.collect().iter_rows():
        if label_map is None:
            cls = label
        elif isinstance(label_map, Mapping):
            cls = label_map.get(label.split(",")[0].strip())
        else:
            cls = label_map(label)
        if cls is not None:
            out[sid] = cls
    return out


def evaluate_zero_shot(
    dataset: str | Path,
    store: tuple[str, str],
    text_encoder,
    class_names: Sequence[str] | Mapping[str, str],
    labels: Mapping[str, str] | None = None,
    sample_ids: Sequence[str] | None = None,
    templates: Sequence[str] = DEFAULT_TEMPLATES,
) -> ZeroShotResult:
    """Zero-shot accuracy of the vectors in `store = (store id, column)` (e.g. bound audio) against
    class prompts through the frozen `text_encoder`. `labels`: sample_id -> class (default: the
    index's `label` column)."""
    labels = dict(labels) if labels is not None else sample_labels(dataset, sample_ids)
    wanted = [s for s in (sample_ids if sample_ids is not None else labels) if s in labels]
    ids, vectors = read_vectors(dataset, *store, sample_ids=wanted)
    if not ids:
        raise ValueError(f"no labelled sample has a vector in {store}")
    return zero_shot_classify(vectors, [labels[s] for s in ids], text_encoder, class_names, templates)


def embed_modality(
    dataset: str | Path,
    encoder,
    input_key: str,
    *,
    column: str | None = None,
    store_id: str | None = None,
    transform: Callable[[np.ndarray], np.ndarray] | None = None,
    batch_size: int | None = None,
    progress: bool = False,
) -> str:
    """Embed one model-ready input of every committed sample that has it into a store.

    `input_key`: the stored modality read from the shards (audio, video, image, depth, thermal,
    imu); `transform` maps each sample's model-ready array to the encoder's input (e.g. a video
    `[clips,3,F,S,S]` to one frame `[3,S,S]`); `column` defaults to `input_key`; `store_id` to the
    encoder's `model_id`. Shards already in the store are left alone (a backfill). Returns the store id.
    """
    from tqdm.auto import tqdm

    from pipelines.binding.pairs import ModalityInputs
    from storage import format as fmt
    from storage.embeddings import commit_embeddings, embedded_shard_ids, write_encoder_info
    from storage.location import as_location, polars_storage_options
    from storage.shard import committed_shard_ids

    root = as_location(dataset)
    store_id = store_id or encoder.model_id
    column = column or input_key
    write_encoder_info(root, store_id, {**encoder.metadata(), "modalities": [column], "input": input_key})
    done = set(embedded_shard_ids(root, store_id))
    todo = [s for s in committed_shard_ids(root) if s not in done]
    size = int(batch_size or getattr(encoder, "batch_size", 32))
    for shard in tqdm(todo, desc=f"embed {column}", unit="shard", disable=not progress):
        index = pl.read_parquet(
            str(fmt.index_path(root, shard)),
            columns=["sample_id", "row", "modalities"],
            storage_options=polars_storage_options(root),
        )
        has = [input_key in m for m in index["modalities"].to_list()]
        rows = [r for r, h in zip(index["row"].to_list(), has) if h]
        out = np.full((index.height, encoder.dim), np.nan, dtype=np.float32)
        with ModalityInputs(root, input_key, [shard] * len(rows), rows, cache=False) as inputs:
            chunks = []
            for start in range(0, len(rows), size):
                arrays = [inputs[i] for i in range(start, min(start + size, len(rows)))]
                if transform is not None:
                    arrays = [transform(a) for a in arrays]
                chunks.append(encoder.encode(np.stack(arrays)))
        if chunks:
            out[np.flatnonzero(has)] = np.concatenate(chunks)
        commit_embeddings(root, store_id, shard, index["sample_id"].to_list(), {column: out})
    return store_id


__all__ = [
    "DEFAULT_TEMPLATES",
    "RetrievalResult",
    "ZeroShotResult",
    "class_text_vectors",
    "embed_modality",
    "evaluate_retrieval",
    "evaluate_zero_shot",
    "l2_normalize",
    "paired_vectors",
    "ranks_of_targets",
    "read_vectors",
    "recall_at_k",
    "sample_labels",
    "zero_shot_classify",
    "zero_shot_from_vectors",
]
