"""``bindset dedup``, ``bindset index`` and ``bindset export``: parse arguments, call
``pipelines.curation``. Datasets and outputs may be local paths or URLs."""

from __future__ import annotations

import json

from flows.runtime import check_read, check_write, root_arg


def _store_columns(dataset, encoder_id: str) -> list[str]:
    import polars as pl

    from storage.embeddings import list_encoder_ids, scan_embeddings

    schema = scan_embeddings(dataset, encoder_id).collect_schema()
    columns = [c for c, t in schema.items() if c != "sample_id" and isinstance(t, (pl.Array, pl.List))]
    if not columns:
        known = list_encoder_ids(dataset)
        raise FileNotFoundError(
            f"no embedding store {encoder_id!r} in {dataset} "
            f"({'stores: ' + ', '.join(known) if known else 'none: run bindset embed first'})"
        )
    return columns


# -- dedup ----------------------------------------------------------------------------------------------


def add_dedup(sub) -> None:
    p = sub.add_parser("dedup", help="find exact and near duplicates; write dedup/NAME.parquet (deletes nothing)")
    p.add_argument("dataset", help="dataset directory or URL")
    p.add_argument(
        "--encoder",
        metavar="ENCODER_ID",
        help="embedding store for near duplicates (without it: exact duplicates only)",
    )
    p.add_argument("--modality", nargs="+", help="store columns to compare (default: all); a pair must be near in each")
    p.add_argument("--threshold", type=float, default=0.95, help="cosine similarity of near duplicates (default 0.95)")
    p.add_argument("--name", default="default", help="table name: dedup/NAME.parquet (default: default)")
    p.add_argument(
        "--keep",
        default="lowest-id",
        help="representative of a group: lowest-id (default), max:COLUMN or min:COLUMN of the index",
    )
    p.add_argument("--no-exact", action="store_true", help="skip content hashing (inputs no longer readable)")
    p.add_argument("--threads", type=int, default=4, help="threads decoding inputs for content hashes")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_dedup)


def cmd_dedup(args) -> int:
    args.dataset = root_arg(args.dataset)
    check_read(args.dataset, "dataset")
    if not 0.0 < args.threshold <= 1.0:
        raise ValueError(f"--threshold must be in (0, 1], got {args.threshold}")
    if args.encoder:
        _store_columns(args.dataset, args.encoder)
    from pipelines.curation.dedup import dedup_dataset

    report = dedup_dataset(
        args.dataset,
        name=args.name,
        encoder_id=args.encoder,
        modalities=args.modality,
        threshold=args.threshold,
        exact=not args.no_exact,
        keep=args.keep,
        threads=args.threads,
        progress=not args.no_progress,
    )
    print(json.dumps(report.meta, indent=2, default=str) if args.json else "\n".join(report.lines()))
    return 0


# -- index ----------------------------------------------------------------------------------------------


def add_index(sub) -> None:
    from pipelines.curation.ann_index import QUANTIZATIONS

    p = sub.add_parser("index", help="build or extend the nearest-neighbour index of an embedding store (faiss)")
    p.add_argument("dataset", help="dataset directory or URL")
    p.add_argument("--encoder", required=True, metavar="ENCODER_ID", help="embedding store to index")
    p.add_argument("--modality", nargs="+", help="store columns to index (default: all)")
    p.add_argument(
        "--quantization",
        choices=QUANTIZATIONS,
        default="flat",
        help="codes in the IVF lists: flat float32 (default), fp16 (half the memory) or sq8 (a quarter)",
    )
    p.add_argument(
        "--nlist", type=int, help="IVF lists (default about sqrt(N); an exact Flat index under 20,000 vectors)"
    )
    p.add_argument(
        "--nprobe", type=int, help="lists probed per query (default: tuned for recall@10 >= --target-recall)"
    )
    p.add_argument("--target-recall", type=float, default=0.95)
    p.add_argument("--rebuild", action="store_true", help="rebuild even if the index could be extended")
    p.add_argument("--status", action="store_true", help="only say whether the index is missing, fresh or stale")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_index)


def cmd_index(args) -> int:
    args.dataset = root_arg(args.dataset)
    check_read(args.dataset, "dataset")
    columns = _store_columns(args.dataset, args.encoder)
    modalities = args.modality or columns
    bad = [m for m in modalities if m not in columns]
    if bad:
        raise ValueError(f"store {args.encoder} has no column(s) {bad} (has {columns})")
    from pipelines.curation.ann_build import build_index
    from pipelines.curation.ann_files import index_status
    from pipelines.curation.ann_index import IndexParams

    if args.status:
        states = {m: index_status(args.dataset, args.encoder, m) for m in modalities}
        if args.json:
            print(json.dumps({m: s.describe() for m, s in states.items()}, indent=2))
        else:
            for m, s in states.items():
                print(f"index {args.encoder}/{m}: {s.describe()}")
        return 0
    params = IndexParams(
        quantization=args.quantization, nlist=args.nlist, nprobe=args.nprobe, target_recall=args.target_recall
    )
    reports = [build_index(args.dataset, args.encoder, m, params, rebuild=args.rebuild) for m in modalities]
    if args.json:
        print(json.dumps([r.manifest for r in reports], indent=2, default=str))
    else:
        for r in reports:
            print("\n".join(r.lines()))
    return 0


# -- export ---------------------------------------------------------------------------------------------


def add_export(sub) -> None:
    from pipelines.curation.export import FORMATS

    p = sub.add_parser("export", help="write the dataset as WebDataset tar shards (+ listing.parquet)")
    p.add_argument("dataset", help="dataset directory or URL")
    p.add_argument("--format", choices=FORMATS, default="webdataset")
    p.add_argument("--out", required=True, help="output directory or URL")
    p.add_argument("--dedup", metavar="NAME", help="leave out the duplicates of dedup table NAME")
    p.add_argument("--shard-size", type=int, default=1000, help="samples per tar (default 1000)")
    p.add_argument("--modalities", nargs="+", help="only samples holding all of these, with only these arrays")
    p.add_argument("--split", nargs="+", help="only these splits")
    p.add_argument("--embeddings", metavar="ENCODER_ID", help="add the store's vectors as <column>_embedding.npy")
    p.add_argument("--overwrite", action="store_true", help="replace a previous export in --out")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_export)


def cmd_export(args) -> int:
    args.dataset = root_arg(args.dataset)
    args.out = root_arg(args.out)
    check_read(args.dataset, "dataset")
    if args.dedup:
        from storage.dedup import dedup_path

        if not dedup_path(args.dataset, args.dedup).is_file():
            from storage.dedup import read_dedup

            read_dedup(args.dataset, args.dedup)  # raises naming the tables there are
    check_write(args.out, "--out")
    from pipelines.curation.export import export_webdataset

    report = export_webdataset(
        args.dataset,
        args.out,
        dedup=args.dedup,
        shard_size=args.shard_size,
        modalities=args.modalities,
        split=args.split,
        embeddings=args.embeddings,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    print("\n".join(report.lines()))
    return 0


def add_curation(sub) -> None:
    for add in (add_dedup, add_index, add_export):
        add(sub)


__all__ = ["add_curation", "add_dedup", "add_export", "add_index"]
