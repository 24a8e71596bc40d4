"""`bindset report | train | eval | search`: looking at a dataset and binding a modality to it.

Kept apart from `flows/cli.py` (build, embed, schedule) so each file stays one screen of argument
parsing. As there, a command only parses arguments and calls pipeline functions.
"""

from __future__ import annotations

import json
from pathlib import Path

from flows.runtime import check_read, check_write, local_only, root_arg

#: where `--classes` / `--sample-ids` may be given inline instead of as a file
_LIST_SEPARATOR = ","


# --------------------------------------------------------------------------------------------------
# report


def add_report(sub) -> None:
    p = sub.add_parser("report", help="write a static HTML report (contact sheet, quality histograms) of a dataset")
    p.add_argument("dataset", help="dataset directory or URL")
    p.add_argument("--out", required=True, help="directory or URL for index.html and its PNGs")
    p.add_argument("-n", type=int, default=8, help="random samples on the contact sheet (default 8)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sample choice")
    p.set_defaults(func=cmd_report)


def cmd_report(args) -> int:
    from pipelines.report import write_report

    dataset, out = root_arg(args.dataset), root_arg(args.out)
    check_read(dataset, "dataset")
    check_write(out, "--out")
    page = write_report(dataset, out, n=args.n, seed=args.seed)
    print(f"report: {page.resolve() if isinstance(page, Path) else page}")
    return 0


# --------------------------------------------------------------------------------------------------
# train


def add_train(sub) -> None:
    from preprocess.registry import bindable_names  # the registry only: the parser needs no torch

    p = sub.add_parser("train", help="bind a modality to frozen image embeddings of a store (symmetric InfoNCE)")
    p.add_argument("dataset", help="dataset directory or URL")
    p.add_argument("--modality", required=True, choices=bindable_names())
    p.add_argument("--target", required=True, metavar="ENCODER_ID", help="embedding store of the frozen image vectors")
    p.add_argument("--target-column", default="image", help="store column holding the target vectors (default image)")
    p.add_argument("--out", required=True, help="local run directory (checkpoints, losses; resumed if it exists)")
    p.add_argument("--model", default="tiny", help='ImageBind size ("tiny", "huge") or a config TOML (default tiny)')
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--temperature", type=float, help="InfoNCE temperature (default: the reference value per modality)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split", help="train on index rows of this split only")
    p.add_argument(
        "--clips",
        choices=("mean", "random"),
        default="mean",
        help="multi-clip inputs: average every clip (as inference) or one random clip per step",
    )
    p.add_argument("--init-checkpoint", help="start from these weights (imagebind_huge.pth or a binding checkpoint)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 (default: CUDA when present)")
    p.add_argument("--no-resume", action="store_true", help="refuse to continue a run found in --out")
    p.add_argument(
        "--embed",
        action="store_true",
        help="afterwards embed the dataset's MODALITY with the trained model into its own store",
    )
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_train)


def cmd_train(args) -> int:
    dataset, out = root_arg(args.dataset), local_only(args.out, "train --out")
    check_read(dataset, "dataset")
    from pipelines.binding.models import load_binding_encoder
    from pipelines.binding.train import TrainConfig, train_binding

    config = TrainConfig(
        model=args.model,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        temperature=args.temperature,
        seed=args.seed,
        target_column=args.target_column,
        split=args.split,
        clips=args.clips,
        init_checkpoint=args.init_checkpoint,
        device=args.device,
        progress=not args.no_progress,
    )
    result = train_binding(dataset, args.modality, args.target, out, config, resume=not args.no_resume)
    print("\n".join(result.lines()))
    if args.embed:
        from pipelines.binding.evaluate import embed_modality

        encoder = load_binding_encoder(result.out_dir, device=args.device)
        store = embed_modality(dataset, encoder, args.modality, progress=not args.no_progress)
        print(f"embedded {args.modality} into store {store}")
    return 0


# --------------------------------------------------------------------------------------------------
# eval


def _store_column(text: str) -> tuple[str, str]:
    """`STORE_ID:COLUMN` -> (store id, column). Store ids never hold ':' (they are directory names)."""
    store, sep, column = text.rpartition(":")
    if not sep or not store or not column:
        raise ValueError(f"expected STORE_ID:COLUMN (e.g. openclip-ViT-H-14-...:image), got {text!r}")
    return store, column


def _read_list(text: str | None) -> list[str] | None:
    """A comma-separated list, or a file with one entry per line (blank lines and '#' comments skipped)."""
    if text is None:
        return None
    path = Path(text)
    if path.is_file():
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        return [line for line in lines if line and not line.startswith("#")]
    return [item.strip() for item in text.split(_LIST_SEPARATOR) if item.strip()]


def read_classes(text: str) -> dict[str, str]:
    """`--classes`: a JSON file `{index label: prompt word}` (labels such as AudioSet mids need one),
    or a list (inline or a file) of labels that are themselves the prompt words."""
    path = Path(text)
    if path.suffix == ".json":
        if not path.is_file():
            raise FileNotFoundError(f"--classes: no such file {path}")
        mapping = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(mapping, dict) or not all(isinstance(v, str) for v in mapping.values()):
            raise ValueError(f"--classes {path}: expected a JSON object of label -> class name")
        return {str(k): v for k, v in mapping.items()}
    names = _read_list(text) or []
    if not names:
        raise ValueError("--classes is empty")
    return {name: name for name in names}


def add_eval(sub) -> None:
    p = sub.add_parser("eval", help="zero-shot classification and cross-modal retrieval Recall@k from embedding stores")
    p.add_argument("dataset", help="dataset directory or URL")
    p.add_argument(
        "--retrieval",
        nargs=2,
        metavar=("QUERY", "GALLERY"),
        help="STORE_ID:COLUMN of the queries and of the gallery, e.g. IMG_STORE:image AUDIO_STORE:audio",
    )
    p.add_argument("-k", type=int, nargs="+", default=[1, 5, 10], help="recall cut-offs (default 1 5 10)")
    p.add_argument("--zero-shot", metavar="STORE_ID:COLUMN", help="vectors to classify against class prompts")
    p.add_argument("--text-encoder", help='frozen text encoder for --zero-shot, e.g. "openclip:ViT-H-14"')
    p.add_argument("--text-checkpoint", help="local weights of the text encoder")
    p.add_argument("--classes", help="label->class JSON file, or class names (comma list or file) equal to the labels")
    p.add_argument("--templates", nargs="+", help='prompt templates with "{}" (default: a few CLIP prompts)')
    p.add_argument("--sample-ids", help="evaluate these samples only (comma list or a file, one per line)")
    p.add_argument("--random-weights", action="store_true", help="text encoder without a checkpoint (smoke tests)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_eval)


def cmd_eval(args) -> int:
    from pipelines.binding.evaluate import evaluate_retrieval, evaluate_zero_shot, sample_labels

    if not args.retrieval and not args.zero_shot:
        raise ValueError("give --retrieval QUERY GALLERY and/or --zero-shot STORE_ID:COLUMN")
    args.dataset = root_arg(args.dataset)
    check_read(args.dataset, "dataset")
    sample_ids = _read_list(args.sample_ids)
    results: dict[str, dict] = {}
    lines: list[str] = []
    if args.retrieval:
        query, gallery = (_store_column(t) for t in args.retrieval)
        for store, _ in (query, gallery):
            require_store(args.dataset, store)
        res = evaluate_retrieval(args.dataset, query, gallery, sample_ids=sample_ids, ks=tuple(args.k))
        results["retrieval"] = {"query": ":".join(query), "gallery": ":".join(gallery), **res.to_dict()}
        lines += res.lines(f"{query[1]} -> {gallery[1]} retrieval")
    if args.zero_shot:
        if not args.text_encoder or not args.classes:
            raise ValueError("--zero-shot needs --text-encoder and --classes")
        from flows.runtime import require_weights
        from pipelines.binding.models import load_encoder

        require_weights(args.text_encoder, args.text_checkpoint, args.random_weights, "--text-checkpoint")
        require_store(args.dataset, _store_column(args.zero_shot)[0])
        text_encoder = load_encoder(args.text_encoder, "text", args.text_checkpoint)
        mapping = read_classes(args.classes)
        labels = sample_labels(args.dataset, sample_ids, label_map=mapping)
        if not labels:
            raise ValueError(f"no sample's label is one of --classes ({sorted(mapping)[:5]}...)")
        class_names = {cls: cls for cls in sorted(set(mapping.values()))}
        kwargs = {"templates": tuple(args.templates)} if args.templates else {}
        res = evaluate_zero_shot(
            args.dataset,
            _store_column(args.zero_shot),
            text_encoder,
            class_names,
            labels=labels,
            sample_ids=sample_ids,
            **kwargs,
        )
        results["zero_shot"] = {"store": args.zero_shot, **res.to_dict()}
        lines += res.lines(f"{args.zero_shot.rpartition(':')[2]} -> text zero-shot")
    print(json.dumps(results, indent=2, default=str) if args.json else "\n".join(lines))
    return 0


# --------------------------------------------------------------------------------------------------
# search


def _broadcast(values: list[str] | None, n: int, what: str) -> list[str | None]:
    """One value for every query term, or one per term."""
    if not values:
        return [None] * n
    if len(values) == 1:
        return values * n
    if len(values) != n:
        raise ValueError(f"{what}: give one value or one per query ({n}), got {len(values)}")
    return list(values)


def require_store(dataset: Path | str, store: str) -> None:
    """A store id that names no store of the dataset: say which ones exist."""
    from storage.embeddings import list_encoder_ids

    stores = list_encoder_ids(dataset)
    if store not in stores:
        raise ValueError(f"{dataset} has no embedding store {store!r}; it has: {', '.join(stores) or 'none'}")


def _default_column(dataset: Path | str, store: str) -> str:
    from storage import scan_embeddings

    require_store(dataset, store)
    columns = [c for c in scan_embeddings(dataset, store).collect_schema().names() if c != "sample_id"]
    if len(columns) != 1:
        raise ValueError(f"store {store} has columns {columns}: choose one with --column")
    return columns[0]


def add_search(sub) -> None:
    from preprocess.registry import modality_names

    p = sub.add_parser("search", help="nearest samples of an embedding store for a query file (or several, summed)")
    p.add_argument("query", nargs="+", help="query file(s); for --modality text, the text itself")
    p.add_argument(
        "--modality",
        nargs="+",
        required=True,
        choices=modality_names(),
        help="modality of each query (one for all, or one per query)",
    )
    p.add_argument("--dataset", required=True, help="dataset directory or URL")
    p.add_argument("--store", required=True, metavar="ENCODER_ID", help="embedding store to search")
    p.add_argument("--column", help="store column to search (default: the store's only column)")
    p.add_argument(
        "--encoder",
        nargs="+",
        required=True,
        help="encoder of each query: a factory name (openclip:..., imagebind:..., binding:...) or a binding run dir",
    )
    p.add_argument(
        "--checkpoint", nargs="+", help="local weights per encoder (one for all, or one per query; '-' for none)"
    )
    p.add_argument("--weight", type=float, nargs="+", help="weight of each query term in the sum (default 1)")
    p.add_argument("--random-weights", action="store_true", help="factory encoders without a checkpoint (smoke tests)")
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_search)


def cmd_search(args) -> int:
    args.dataset = root_arg(args.dataset)
    check_read(args.dataset, "dataset")
    from pipelines.binding.models import load_encoder
    from pipelines.binding.search import Query, search_store

    n = len(args.query)
    modalities = _broadcast(args.modality, n, "--modality")
    encoders = _broadcast(args.encoder, n, "--encoder")
    # "-" stands for "no checkpoint" in a per-query list (a binding run directory needs none)
    checkpoints = [None if c == "-" else c for c in _broadcast(args.checkpoint, n, "--checkpoint")]
    weights = [
        float(w) if w is not None else 1.0
        for w in _broadcast([str(w) for w in args.weight] if args.weight else None, n, "--weight")
    ]
    loaded: dict[tuple, object] = {}  # one model per (encoder, checkpoint, modality), however many terms use it
    queries = []
    for source, modality, name, checkpoint, weight in zip(args.query, modalities, encoders, checkpoints, weights):
        key = (name, checkpoint, modality)
        if not Path(name).exists():  # a factory name; a binding run directory carries its weights
            from flows.runtime import require_weights

            require_weights(name, checkpoint, args.random_weights)
        if key not in loaded:
            loaded[key] = load_encoder(name, modality, checkpoint)
        queries.append(Query(source, modality, loaded[key], weight))
    column = args.column or _default_column(args.dataset, args.store)
    hits = search_store(args.dataset, args.store, column, queries, k=args.k)
    if args.json:
        print(
            json.dumps(
                [{"rank": h.rank, "sample_id": h.sample_id, "score": h.score, **h.fields} for h in hits],
                indent=2,
                default=str,
            )
        )
        return 0
    for hit in hits:
        what = hit.fields.get("label") or hit.fields.get("caption") or ""
        uri = next((v for k, v in hit.fields.items() if k.startswith("uri_")), "")
        print(f"{hit.rank:>3}  {hit.score:+.4f}  {hit.sample_id}  {what}  {uri}".rstrip())
    return 0


__all__ = ["add_eval", "add_report", "add_search", "add_train", "read_classes"]
