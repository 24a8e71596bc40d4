"""The driver of a dataset build: plan, resume, commit and catalog (holding the dataset lock).

The per-shard step, ``build_shard``, lives in ``pipelines.shard_build`` (re-exported here): executors
(local, Ray) and Prefect tasks run it; this module hands them the shards to build.
"""

from __future__ import annotations

import io
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from pipelines.config import BuildConfig
from pipelines.manifest import Manifest, build_manifest, problem_rejects
from pipelines.plan import SHARD_COLUMN, ShardSpec, assign_shards, next_shard_id, plan_from_manifest
from pipelines.shard_build import QualityFilterFailed, build_shard  # noqa: F401 - re-exported
from pipelines.sources import Source
from preprocess.registry import uri_columns
from storage import format as fmt
from storage.catalog import config_hash, load_catalog, new_catalog, shard_entry, write_catalog
from storage.location import Location, as_location, is_remote, list_files, remove_tree, sha256_of, write_bytes_atomic
from storage.locks import DatasetLock
from storage.schema import reject_frame
from storage.shard import ShardSummary, read_shard_file_metadata


class ConfigMismatch(RuntimeError):
    pass


class BuildFailed(RuntimeError):
    """Shards failed (after retries) or could not be written; committed shards are kept and a rerun
    builds the rest. The CLI exits 1 with this one line."""


@dataclass
class BuildReport:
    root: Location
    planned_shards: int
    skipped_shards: int
    summaries: list[ShardSummary] = field(default_factory=list)
    manifest_problems: list[str] = field(default_factory=list)
    manifest_rejects: int = 0
    seconds: float = 0.0
    retried: int = 0  # transient rejects tried again (--retry-rejects)
    retry_shards: set[int] = field(default_factory=set)

    @property
    def stored(self) -> int:
        return sum(s.stored for s in self.summaries)

    @property
    def rejected(self) -> int:
        return sum(s.rejected for s in self.summaries) + self.manifest_rejects

    def reject_reasons(self) -> dict[str, int]:
        counts: Counter[str] = Counter()
        for s in self.summaries:
            counts.update(s.reject_reasons)
        return dict(sorted(counts.items()))

    def all_reject_reasons(self) -> dict[str, int]:
        """Rejects of this run by reason, manifest-stage problems included (as ``manifest:<kind>``)."""
        counts: Counter[str] = Counter(self.reject_reasons())
        if self.manifest_rejects:
            counts["manifest"] += self.manifest_rejects
        return dict(counts.most_common())

    def result(self, seconds: float, embedded: list, executor: str) -> dict:
        """What a build command returns (and prints as JSON): the counts of this run, the encoders
        embedded after it, and the executor that ran it."""
        return {
            "dataset": str(self.root),
            "stored": self.stored,
            "rejected": self.rejected,
            "reject_reasons": self.all_reject_reasons(),
            "shards_built": len(self.summaries),
            "seconds": seconds,
            "embedded": embedded,
            "executor": executor,
        }

    def lines(self) -> list[str]:
        rate = self.stored / self.seconds if self.seconds > 0 else 0.0
        out = [
            f"dataset: {self.root}",
            f"shards: {len(self.summaries)} built, {self.skipped_shards} already committed, {self.planned_shards} planned",
            f"samples stored: {self.stored}  rejected: {self.rejected}  ({self.seconds:.1f} s, {rate:.1f} samples/s)",
        ]
        if self.retried:
            recovered = sum(s.stored for s in self.summaries if s.shard_id in self.retry_shards)
            out.append(
                f"retried {self.retried} transient rejects: {recovered} recovered, "
                f"{self.retried - recovered} still rejected"
            )
        partial = sum(s.partial for s in self.summaries)
        if partial:
            out.append(f"partial samples kept (missing a partner of their layout): {partial}")
        out += [f"  rejected {k}: {v}" for k, v in self.reject_reasons().items()]
        out += [f"  manifest: {line}" for line in self.manifest_problems]
        return out


def prepare_dataset(
    root: Location, manifest: Manifest, config: BuildConfig, sources: list[Source], overwrite: bool = False
) -> tuple[list[ShardSpec], dict]:
    """Write (or check) manifest and catalog, and return the shard plan and the catalog.

    A rerun with the same config resumes. Sources that grew (every stored sample still present)
    append the new samples as new shards, so committed shards and their embeddings stay valid.
    A changed config, or samples gone from the sources, is refused unless ``overwrite`` (which starts
    the dataset afresh)."""
    root = as_location(root)
    cfg = config.to_dict()
    catalog = load_catalog(root)
    stored = pl.read_parquet(io.BytesIO((root / fmt.MANIFEST_FILE).read_bytes())) if catalog is not None else None
    if catalog is not None:
        changed = []
        if catalog["config_hash"] != config_hash(cfg):
            changed.append(f"config hash {catalog['config_hash']} -> {config_hash(cfg)}")
        gone = stored.filter(~pl.col("sample_id").is_in(manifest.frame["sample_id"].implode()))
        if gone.height:
            first = (
                gone.select(pl.coalesce(*[pl.col(c) for c in uri_columns().values() if c in stored.columns]))[:3]
                .to_series()
                .to_list()
            )
            changed.append(
                f"{gone.height} stored samples are gone from the sources (e.g. {', '.join(map(str, first))})"
            )
        if changed and not overwrite:
            raise ConfigMismatch(
                f"{root} was built with a different configuration: {'; '.join(changed)}. "
                "Pass --overwrite to rebuild it, or write a new dataset with another --out."
            )
        if changed:
            # The index goes first: a shard without its index is never data, whatever dies when.
            for sub in (fmt.INDEX_DIR, fmt.SHARDS_DIR, fmt.REJECTS_DIR, fmt.EMBEDDINGS_DIR, fmt.TMP_DIR):
                remove_tree(root / sub)
            catalog = stored = None
    if catalog is None:
        frame = assign_shards(manifest.frame, config.shard_size)
        catalog = new_catalog(cfg, [s.describe() for s in sources], frame.height, "", 0)
    else:
        if SHARD_COLUMN not in stored.columns:  # manifests written before shards were recorded
            stored = assign_shards(stored, config.shard_size)
        added = manifest.frame.filter(~pl.col("sample_id").is_in(stored["sample_id"].implode()))
        added = assign_shards(added, config.shard_size, next_shard_id(stored, list(catalog["shards"])))
        frame = pl.concat([stored, added])
    plan = plan_from_manifest(frame)
    manifest_bytes = _parquet_bytes(frame)
    if catalog["manifest"]["sha256"] != _sha256(manifest_bytes):
        write_bytes_atomic(root / fmt.MANIFEST_FILE, manifest_bytes)
        catalog["manifest"] = {"rows": frame.height, "sha256": _sha256(manifest_bytes)}
        catalog["planned_shards"] = len(plan)
        catalog["sources"] = [s.describe() for s in sources]
        write_catalog(root, catalog)
    _write_manifest_rejects(root, manifest)
    # Leftovers of builds that died mid-shard: never visible, safe to drop now that we hold the lock.
    if not is_remote(root):
        shutil.rmtree(root / fmt.TMP_DIR, ignore_errors=True)
    return plan, catalog


def committed_names(root: Location) -> set[str]:
    """Shard names whose index (the commit point) exists: one listing, on disk or on a store."""
    return {p.stem for p in list_files(as_location(root) / fmt.INDEX_DIR, ".parquet")}


def pending_shards(root: Location, plan: list[ShardSpec]) -> list[ShardSpec]:
    """Shards whose index (the commit point) is not there yet."""
    done = committed_names(root)
    return [s for s in plan if fmt.shard_name(s.shard_id) not in done]


def reconcile_catalog(root: Location, catalog: dict, plan: list[ShardSpec]) -> None:
    """Record shards committed by a run that died before updating dataset.json. The shard's size and
    sha256 come from its index's footer (no shard download); older indexes are hashed in full."""
    changed = False
    done = committed_names(root)
    for spec in plan:
        name = fmt.shard_name(spec.shard_id)
        if name in catalog["shards"] or name not in done:
            continue
        index_file = fmt.index_path(root, spec.shard_id)
        index_bytes = index_file.read_bytes()
        index = pl.read_parquet(io.BytesIO(index_bytes))
        rejects = pl.read_parquet(io.BytesIO(fmt.rejects_path(root, spec.shard_id).read_bytes()))
        shard_file = fmt.shard_path(root, spec.shard_id)
        recorded = read_shard_file_metadata(index_file)
        sha, size = recorded if recorded else (sha256_of(shard_file), shard_file.stat().st_size)
        catalog["shards"][name] = shard_entry(
            ShardSummary(
                shard_id=spec.shard_id,
                stored=index.height,
                rejected=rejects.height,
                reject_reasons=dict(Counter(f"{s}:{e}" for s, e in zip(rejects["stage"], rejects["error_type"]))),
                shard_sha256=sha,
                index_sha256=_sha256(index_bytes),
                bytes_written=size,
            )
        )
        changed = True
    if changed:
        write_catalog(root, catalog)


class BuildSession:
    """A build in progress, holding the dataset lock: plan, resume state and the catalog.

    ``build_dataset`` drives one with an executor; the Prefect flow drives the same session with one
    Prefect task per shard. Only the session (the driver) writes ``dataset.json``."""

    def __init__(
        self,
        sources: list[Source],
        root: str | Path | Location,
        config: BuildConfig | None = None,
        overwrite: bool = False,
    ):
        self.config = config or BuildConfig()
        self.root = as_location(root).resolve()
        self.started = time.perf_counter()
        # Sources are read before anything is written: a wrong layout leaves no dataset folder behind.
        manifest = build_manifest(sources)
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = DatasetLock(self.root, "build").acquire()
        try:
            self.plan, self.catalog = prepare_dataset(self.root, manifest, self.config, sources, overwrite)
            reconcile_catalog(self.root, self.catalog, self.plan)
            self.todo = pending_shards(self.root, self.plan)
        except BaseException:
            self._lock.release()
            raise
        self.report = BuildReport(
            self.root,
            len(self.plan),
            len(self.plan) - len(self.todo),
            manifest_problems=manifest.problem_summary(),
            manifest_rejects=len(manifest.problems),
        )

    def plan_retries(self) -> list[ShardSpec]:
        """New shards for the standing transient rejects (I/O errors, timeouts, store errors) of
        committed shards; permanent rejects stay as they are. The manifest records the move, so a
        crash mid-retry resumes like any build."""
        from storage import scan_rejects

        retry_ids = (
            scan_rejects(self.root)
            .filter(pl.col("transient").fill_null(False) & pl.col("sample_id").is_not_null())
            .select("sample_id")
            .unique()
            .collect()["sample_id"]
        )
        if retry_ids.is_empty():
            return []
        manifest_file = self.root / fmt.MANIFEST_FILE
        manifest = pl.read_parquet(io.BytesIO(manifest_file.read_bytes()))
        retry = assign_shards(
            manifest.filter(pl.col("sample_id").is_in(retry_ids.implode())),
            self.config.shard_size,
            next_shard_id(manifest, list(self.catalog["shards"])),
        )
        moved = dict(zip(retry["sample_id"].to_list(), retry[SHARD_COLUMN].to_list()))
        manifest = manifest.with_columns(
            pl.col("sample_id")
            .replace_strict(moved, default=pl.col(SHARD_COLUMN), return_dtype=pl.Int32)
            .alias(SHARD_COLUMN)
        )
        data = _parquet_bytes(manifest)
        write_bytes_atomic(manifest_file, data)
        specs = plan_from_manifest(retry)
        self.plan += specs
        self.catalog["manifest"] = {"rows": manifest.height, "sha256": _sha256(data)}
        self.catalog["planned_shards"] = len(self.plan)
        write_catalog(self.root, self.catalog)
        self.report.planned_shards = len(self.plan)
        self.report.retried = len(moved)
        self.report.retry_shards = {spec.shard_id for spec in specs}
        return specs

    def record(self, summary: ShardSummary) -> None:
        self._lock.check()  # a driver that lost its lease must not overwrite its successor's catalog
        self.catalog["shards"][fmt.shard_name(summary.shard_id)] = shard_entry(summary)
        write_catalog(self.root, self.catalog)
        self.report.summaries.append(summary)

    def close(self) -> BuildReport:
        # Attempts killed and retried by an executor leave private temp dirs; none is committed data.
        if not is_remote(self.root):
            shutil.rmtree(self.root / fmt.TMP_DIR, ignore_errors=True)
        self._lock.release()
        self.report.seconds = time.perf_counter() - self.started
        return self.report

    def __enter__(self) -> "BuildSession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def build_dataset(
    sources: list[Source],
    root: str | Path | Location,
    config: BuildConfig | None = None,
    executor=None,
    overwrite: bool = False,
    progress: bool = True,
    retry_rejects: bool = False,
) -> BuildReport:
    """Manifest -> plan -> shards (only the missing ones) -> catalog. Holds the dataset lock.
    ``retry_rejects``: then re-attempt the standing transient rejects as new shards."""
    from pipelines.executors import create_executor

    executor = executor or create_executor("local")
    with BuildSession(sources, root, config, overwrite) as session:
        _run(session, session.todo, executor, progress)
        if retry_rejects:
            _run(session, session.plan_retries(), executor, progress)
    return session.report


def _run(session: BuildSession, specs: list[ShardSpec], executor, progress: bool) -> None:
    if not specs:
        return
    from pipelines.executors import ShardProgress

    with ShardProgress(specs, enabled=progress) as bar:
        for summary in executor.run_shards(session.root, specs, session.config, on_sample=bar.sample):
            session.record(summary)
            bar.shard_done(summary)


def _parquet_bytes(frame: pl.DataFrame) -> bytes:
    buf = io.BytesIO()
    frame.write_parquet(buf)
    return buf.getvalue()


def _sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def _write_manifest_rejects(root: Location, manifest: Manifest) -> None:
    write_bytes_atomic(
        fmt.rejects_path(root, fmt.MANIFEST_REJECTS_NAME), _parquet_bytes(reject_frame(problem_rejects(manifest)))
    )
