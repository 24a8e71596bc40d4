"""Bind a new modality to a frozen image embedding space (ImageBind's recipe) from the shards.

    from pipelines.binding.train import TrainConfig, train_binding
    result = train_binding("/data/audioset", "audio", "openclip-ViT-H-14-3f2a9c0d1b7e-p1", "/runs/audio",
                           TrainConfig(epochs=10))
    result.final_loss, result.checkpoint          # -> load_binding_encoder(result.out_dir)

What it trains: one ImageBind-architecture modality tower (`encoders/imagebind.py`, the `tiny` size
by default, any `ImageBindConfig` or TOML file otherwise), plus a bias-free linear projection when
the tower's `embed_dim` differs from the target space's. The targets are the *precomputed* image
vectors of an embedding store (`embeddings/<target_encoder_id>/`, column `image` by default, joined
by `sample_id`): no image encoder runs during training, which is what makes binding cheap. The loss
is the symmetric InfoNCE of ImageBind with a fixed per-modality temperature (audio 0.05, depth 0.2,
thermal 0.1, imu 0.2), the optimiser AdamW with linear warmup then cosine decay.

Determinism: the tower's init, the projection's init, the data order (a `torch.Generator` seeded
from `(seed, epoch)`), the per-sample clip choice and dropout/drop-path all come from the seed;
deterministic algorithms are switched on for the run (and restored afterwards), and the caller's
global RNG state is left untouched. The same seed on the same machine gives identical losses and
weights.

On disk (`out_dir`):

    checkpoints/epoch-0003.safetensors   weights; metadata["bindset"] holds the JSON that rebuilds the model
    checkpoints/epoch-0003.state.pt      optimizer state + RNG states (tensors and numbers only:
                                         read back with torch.load(weights_only=True))
    state.json                           last completed epoch, step, paths, run fingerprint
    losses.csv                           epoch, step, lr, loss: one row per optimisation step

A rerun with the same arguments resumes after the last completed epoch and ends with the same
weights and losses as an uninterrupted run. Nothing on the read path unpickles.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import io
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import polars as pl
import torch
import torch.nn.functional as F
from torch import nn

from encoders.base import DEFAULT_PREPROCESS_VERSION, Encoder, _resolve_runtime, make_encoder_id, sha256_file
from encoders.device import autocast
from encoders.imagebind import ImageBindModel, build_model, load_imagebind_state_dict
from encoders.imagebind_config import ImageBindConfig, get_config

log = logging.getLogger("bindset.train")

#: modalities a binding can be trained for -> ImageBind's temperature for them (1 / logit scale)
DEFAULT_TEMPERATURE: dict[str, float] = {"audio": 0.05, "depth": 0.2, "thermal": 0.1, "imu": 0.2}
BINDABLE = tuple(DEFAULT_TEMPERATURE)

#: the stored HDF5 datasets the reader needs to make one modality model-ready
_STORED_KEYS: dict[str, tuple[str, ...]] = {
    "audio": ("audio/log_mel",),
    "depth": ("depth/disparity", "depth/valid"),
    "thermal": ("thermal/intensity",),
    "imu": ("imu/values", "imu/valid"),
    "image": ("image/pixels",),
    "video": ("video/pixels",),
}

STATE_FILE = "state.json"
LOSSES_FILE = "losses.csv"
CHECKPOINT_DIR = "checkpoints"
METADATA_KEY = "bindset"


class ResumeMismatch(RuntimeError):
    """`out_dir` holds a run with other data, target or settings: resuming it would mix two runs."""


# --------------------------------------------------------------------------------------------------
# Configuration and result


@dataclass(frozen=True)
class TrainConfig:
    """Every knob of a binding run. Fields marked *runtime* may change between a run and its resume."""

    #: ImageBind size name ("tiny", "huge", or one registered), a TOML file, or an ImageBindConfig
    model: str | ImageBindConfig = "tiny"
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.05
    #: linear warmup over this share of all steps, then cosine decay to `lr * min_lr_ratio`
    warmup_fraction: float = 0.1
    min_lr_ratio: float = 0.0
    betas: tuple[float, float] = (0.9, 0.95)
    #: softmax temperature of the InfoNCE; None -> DEFAULT_TEMPERATURE[modality]
    temperature: float | None = None
    grad_clip: float | None = 1.0
    seed: int = 0
    #: the store column holding the target (image) vectors
    target_column: str = "image"
    #: restrict training to index rows of this split (None: every row with the modality)
    split: str | None = None
    #: multi-clip inputs (audio [3,1,128,204]): "mean" runs every clip and averages, exactly as at
    #: inference; "random" trains on one clip per sample and step (drawn from the seed): augmentation
    clips: str = "mean"
    #: weights to start the tower from: a full ImageBind checkpoint (e.g. imagebind_huge.pth) or a
    #: binding checkpoint of this same layout; None = random init from `seed`
    init_checkpoint: str | None = None
    #: runtime: device (None: CUDA when present), precision (None: fp32 on CPU, bf16/fp16 on CUDA)
    device: str | None = None
    precision: str | None = None
    #: runtime: keep model-ready inputs in RAM after their first read (None: when they fit cache_limit_mb)
    cache: bool | None = None
    cache_limit_mb: int = 2048
    #: runtime: how many epoch checkpoints to keep (None: all)
    keep_checkpoints: int | None = 3
    progress: bool = True
    deterministic: bool = True

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 2:
            raise ValueError("epochs must be >= 1 and batch_size >= 2 (a contrastive batch needs negatives)")
        if self.clips not in ("mean", "random"):
            raise ValueError(f"clips must be 'mean' or 'random', got {self.clips!r}")
        if not 0 <= self.warmup_fraction < 1:
            raise ValueError(f"warmup_fraction must be in [0, 1), got {self.warmup_fraction}")
        if self.temperature is not None and not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")

    def imagebind_config(self) -> ImageBindConfig:
        return resolve_imagebind_config(self.model)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["model"] = dataclasses.asdict(self.imagebind_config())
        return d

    def run_fingerprint(self) -> dict[str, Any]:
        """What must match for a rerun to continue this run (runtime fields excluded)."""
        runtime = {"device", "precision", "cache", "cache_limit_mb", "keep_checkpoints", "progress"}
        return {k: v for k, v in self.to_dict().items() if k not in runtime}


def resolve_imagebind_config(model: str | ImageBindConfig) -> ImageBindConfig:
    if isinstance(model, ImageBindConfig):
        return model
    text = str(model)
    if text.endswith(".toml") or os.sep in text:
        return ImageBindConfig.from_toml(text)
    return get_config(text)


@dataclass
class TrainResult:
    out_dir: Path
    modality: str
    target_encoder_id: str
    target_dim: int
    temperature: float
    #: the trained model's encoder id (names its own embedding store)
    encoder_id: str
    #: weights of the last completed epoch (load with `load_binding_encoder(out_dir)`)
    checkpoint: Path
    checkpoints: list[Path]
    epochs: int
    steps: int
    #: mean loss of the last epoch; `losses` has every step, `epoch_losses` the per-epoch means
    final_loss: float
    losses: list[float]
    epoch_losses: list[float]
    n_samples: int
    missing_targets: int
    resumed_from_epoch: int | None
    device: str
    seconds: float
    finished: bool

    def lines(self) -> list[str]:
        first = self.epoch_losses[0] if self.epoch_losses else float("nan")
        return [
            f"bound {self.modality} to {self.target_encoder_id} ({self.n_samples} pairs, "
            f"{self.missing_targets} without a target vector), T={self.temperature}",
            f"epochs {self.epochs} ({self.steps} steps) on {self.device} in {self.seconds:.1f} s; "
            f"loss {first:.4f} -> {self.final_loss:.4f}"
            + (f" (resumed after epoch {self.resumed_from_epoch})" if self.resumed_from_epoch else ""),
            f"checkpoint {self.checkpoint}",
            f"encoder id {self.encoder_id}",
        ]


# --------------------------------------------------------------------------------------------------
# Loss and schedule


def symmetric_infonce(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """ImageBind's / CLIP's loss: the mean of the a->b and b->a cross-entropies over the batch,
    row i of `a` paired with row i of `b` (both L2-normalized here)."""
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"expected two [N,D] batches of the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    a = F.normalize(a.float(), dim=-1)
    b = F.normalize(b.float(), dim=-1)
    logits = a @ b.t() / temperature
    labels = torch.arange(a.shape[0], device=a.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2


def cosine_lr(step: int, total_steps: int, base_lr: float, warmup_steps: int, min_lr_ratio: float = 0.0) -> float:
    """Linear warmup from ~0 to `base_lr` over `warmup_steps`, then half a cosine to `base_lr * min_lr_ratio`."""
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    span = max(total_steps - warmup_steps, 1)
    progress = min(max(step - warmup_steps, 0) / span, 1.0)
    floor = base_lr * min_lr_ratio
    return floor + (base_lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def epoch_order(seed: int, epoch: int, n: int) -> torch.Tensor:
    """The sample order of one epoch: a permutation drawn only from (seed, epoch)."""
    g = torch.Generator().manual_seed(_mix(seed, epoch, 0x5EED))
    return torch.randperm(n, generator=g)


def _mix(*parts: int) -> int:
    digest = hashlib.sha256(",".join(str(int(p)) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


# --------------------------------------------------------------------------------------------------
# The model being trained


class BindingModel(nn.Module):
    """One ImageBind tower (+ a projection to the target dimension when it differs): model-ready
    batch -> L2-normalized `[B, target_dim]`."""

    def __init__(self, config: ImageBindConfig, modality: str, target_dim: int, seed: int = 0) -> None:
        super().__init__()
        if modality not in BINDABLE:
            raise ValueError(f"cannot bind modality {modality!r}; choose one of {BINDABLE}")
        self.modality = modality
        self.config = config
        self.target_dim = int(target_dim)
        self.imagebind: ImageBindModel = build_model(config, modalities=[modality], seed=seed)
        self.proj: nn.Linear | None = None
        if config.embed_dim != self.target_dim:
            self.proj = nn.Linear(config.embed_dim, self.target_dim, bias=False)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(_mix(seed, 0x9405))
                nn.init.normal_(self.proj.weight, std=config.embed_dim**-0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.imagebind.embed(self.modality, x)
        if self.proj is not None:
            z = self.proj(z)
        return F.normalize(z.float(), dim=-1)

    def describe(self) -> dict[str, Any]:
        """JSON that rebuilds this module (stored in every checkpoint's metadata)."""
        return {
            "format": "bindset-binding/1",
            "modality": self.modality,
            "target_dim": self.target_dim,
            "imagebind_config": dataclasses.asdict(self.config),
        }


def _config_from_dict(data: dict[str, Any]) -> ImageBindConfig:
    return ImageBindConfig.from_dict(dict(data), base=get_config("tiny"))


def _load_init(model: BindingModel, path: str) -> None:
    """Start the tower from a full ImageBind checkpoint or from a binding checkpoint of this layout."""
    from encoders.base import load_state_dict, resolve_checkpoint

    sd = load_state_dict(resolve_checkpoint(path, what=f"imagebind:{model.config.name}"))
    own = model.state_dict()
    if set(own) <= set(sd):  # a binding checkpoint (same keys)
        model.load_state_dict({k: sd[k] for k in own}, strict=True)
        return
    tower = {k: v for k, v in sd.items() if k.split(".")[1:2] == [model.modality]}
    load_imagebind_state_dict(model.imagebind, tower)


# --------------------------------------------------------------------------------------------------
# Data: (model-ready input, target vector) pairs


@dataclass
class PairTable:
    """Samples with the modality *and* a target vector, sorted by sample_id."""

    sample_ids: list[str]
    shards: np.ndarray  # [N] int
    rows: np.ndarray  # [N] int
    targets: np.ndarray  # [N, D] float32, L2-normalized
    missing: list[str]  # samples with the modality but no (non-null) target vector

    def __len__(self) -> int:
        return len(self.sample_ids)

    def digest(self) -> str:
        h = hashlib.sha256("\n".join(self.sample_ids).encode())
        h.update(np.ascontiguousarray(self.targets).tobytes())
        return h.hexdigest()[:16]


def read_store_vectors(
    dataset: str | Path, encoder_id: str, column: str, sample_ids: Sequence[str] | None = None
) -> tuple[list[str], np.ndarray]:
    """`(sample_ids, [N,D] float32)` of one store column, non-null rows only, sorted by sample_id."""
    from storage import scan_embeddings

    lf = scan_embeddings(dataset, encoder_id)
    names = lf.collect_schema().names()
    if column not in names:
        raise KeyError(f"store embeddings/{encoder_id}/ of {dataset} has no column {column!r} (has {names[1:]})")
    frame = lf.select("sample_id", column).filter(pl.col(column).is_not_null())
    if sample_ids is not None:
        frame = frame.filter(pl.col("sample_id").is_in(list(sample_ids)))
    frame = frame.unique("sample_id", keep="first", maintain_order=True).sort("sample_id").collect()
    if frame.height == 0:
        return [], np.zeros((0, 0), np.float32)
    return frame["sample_id"].to_list(), np.ascontiguousarray(frame[column].to_numpy(), dtype=np.float32)


def load_pairs(
    dataset: str | Path,
    modality: str,
    target_encoder_id: str,
    column: str = "image",
    split: str | None = None,
    sample_ids: Sequence[str] | None = None,
    dedup: str | None = None,
) -> PairTable:
    """Join the index rows holding `modality` with the store's target vectors by sample_id
    (without the duplicates dedup table `dedup` leaves out, when given)."""
    from storage import scan_index

    index = scan_index(dataset).filter(pl.col("modalities").list.contains(modality))
    if dedup is not None:
        from storage.dedup import dropped_ids

        index = index.join(dropped_ids(dataset, dedup).lazy(), on="sample_id", how="anti")
    if split is not None:
        index = index.filter(pl.col("split") == split)
    if sample_ids is not None:
        index = index.filter(pl.col("sample_id").is_in(list(sample_ids)))
    index = index.select("sample_id", "shard", "row").unique("sample_id", keep="first").sort("sample_id").collect()
    if index.height == 0:
        raise ValueError(
            f"{dataset}: no stored sample has modality {modality!r}"
            + (f" in split {split!r}" if split else "")
            + (" among the given ids" if sample_ids is not None else "")
        )
    ids, vectors = read_store_vectors(dataset, target_encoder_id, column, index["sample_id"].to_list())
    if not ids:
        raise ValueError(
            f"no target vectors: embeddings/{target_encoder_id}/ column {column!r} has none of "
            f"the {index.height} samples with {modality!r}; embed the dataset first"
        )
    targets = pl.DataFrame({"sample_id": ids, "_i": np.arange(len(ids))})
    joined = index.join(targets, on="sample_id", how="left")
    have = joined.filter(pl.col("_i").is_not_null())
    missing = joined.filter(pl.col("_i").is_null())["sample_id"].to_list()
    vecs = vectors[have["_i"].to_numpy()]
    norms = np.linalg.norm(vecs, axis=1, keepdims=True)
    if not np.all(norms > 0):
        raise ValueError(f"embeddings/{target_encoder_id}/{column} holds zero vectors")
    return PairTable(
        have["sample_id"].to_list(),
        have["shard"].to_numpy().astype(np.int64),
        have["row"].to_numpy().astype(np.int64),
        (vecs / norms).astype(np.float32),
        missing,
    )


class ModalityInputs(torch.utils.data.Dataset):
    """Model-ready arrays of one modality for given (shard, row) positions, read straight from the
    shards' HDF5 through `ShardReader` (only that modality's datasets: never the 18 MB videos next to
    them; a remote dataset's shards through the verified local shard cache) and normalized by
    `DatasetReader.model_ready` with the dataset's own config. Optionally cached in RAM."""

    def __init__(
        self,
        dataset: str | Path,
        modality: str,
        shards: Sequence[int],
        rows: Sequence[int],
        cache: bool | None = None,
        cache_limit_mb: int = 2048,
    ) -> None:
        from storage.reader import DatasetReader

        if modality not in _STORED_KEYS:
            raise ValueError(f"no stored layout known for modality {modality!r}")
        from storage.location import as_location

        self.root = as_location(dataset)
        self.modality = modality
        self.keys = _STORED_KEYS[modality]
        self.shards = [int(s) for s in shards]
        self.rows = [int(r) for r in rows]
        self._reader = DatasetReader(self.root)  # config + model_ready only
        self._files: Any = None  # ShardReaderPool, opened on first read
        self._cache: dict[int, np.ndarray] | None = None
        if len(self) and cache is not False:
            first = self._read(0)
            estimate_mb = first.nbytes * len(self) / 2**20
            if cache or estimate_mb <= cache_limit_mb:
                self._cache = {0: first}

    def __len__(self) -> int:
        return len(self.rows)

    def _read(self, i: int) -> np.ndarray:
        if self._files is None:
            from storage.shard import ShardReaderPool

            # Random access over every shard: keep many open (a remote one stays pinned in the cache).
            self._files = ShardReaderPool(self.root, max_open=64, catalog=self._reader.catalog)
        stored = self._files.get(self.shards[i]).read_keys(self.rows[i], self.keys)
        return self._reader.model_ready(stored)[self.modality]

    def __getitem__(self, i: int) -> np.ndarray:
        if self._cache is not None:
            if i not in self._cache:
                self._cache[i] = self._read(i)
            return self._cache[i]
        return self._read(i)

    def batch(self, indices: Sequence[int]) -> torch.Tensor:
        return torch.from_numpy(np.stack([self[int(i)] for i in indices]))

    def close(self) -> None:
        if self._files is not None:
            self._files.close()
            self._files = None

    def __enter__(self) -> "ModalityInputs":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _pick_clips(x: torch.Tensor, seed: int, epoch: int, step: int) -> torch.Tensor:
    """[B,S,...] multi-clip batch -> [B,...] with one clip per sample, drawn from (seed, epoch, step)."""
    if x.ndim < 5:
        return x
    g = torch.Generator().manual_seed(_mix(seed, epoch, step, 0xC11F))
    pick = torch.randint(x.shape[1], (x.shape[0],), generator=g)
    return x[torch.arange(x.shape[0]), pick]


# --------------------------------------------------------------------------------------------------
# Checkpoints


def _save_weights(path: Path, model: BindingModel, extra: dict[str, Any]) -> None:
    from safetensors.torch import save

    from storage.atomic import write_bytes_atomic

    meta = {METADATA_KEY: json.dumps({**model.describe(), **extra}, sort_keys=True)}
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    write_bytes_atomic(path, save(tensors, metadata=meta))


def _rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _save_state(
    path: Path, optimizer: torch.optim.Optimizer, scaler_state: dict, device: torch.device, epoch: int, step: int
) -> None:
    from storage.atomic import write_bytes_atomic

    buf = io.BytesIO()
    # Plain containers of tensors and numbers only, so torch.load(weights_only=True) reads it back.
    torch.save(
        {
            "optimizer": optimizer.state_dict(),
            "rng": _rng_state(device),
            "scaler": scaler_state,
            "epoch": int(epoch),
            "step": int(step),
        },
        buf,
    )
    write_bytes_atomic(path, buf.getvalue())


def _write_losses(path: Path, records: list[tuple[int, int, float, float]]) -> None:
    from storage.atomic import write_bytes_atomic

    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["epoch", "step", "lr", "loss"])
    for epoch, step, lr, loss in records:
        w.writerow([epoch, step, f"{lr:.8g}", repr(float(loss))])
    write_bytes_atomic(path, out.getvalue().encode())


def read_losses(out_dir: str | Path) -> list[tuple[int, int, float, float]]:
    """`(epoch, step, lr, loss)` rows of a run's losses.csv (empty when absent)."""
    path = Path(out_dir) / LOSSES_FILE
    if not path.exists():
        return []
    with open(path, newline="") as fh:
        return [(int(r["epoch"]), int(r["step"]), float(r["lr"]), float(r["loss"])) for r in csv.DictReader(fh)]


def read_state(out_dir: str | Path) -> dict[str, Any] | None:
    """A run directory's `state.json`, with every file it names checked to lie inside the run
    directory (a resume deletes old checkpoints: an edited state file must not point elsewhere)."""
    from pipelines.sources.base import resolve_inside

    path = Path(out_dir) / STATE_FILE
    if not path.exists():
        return None
    state = json.loads(path.read_text())
    for rel in [state.get("checkpoint"), state.get("state"), *state.get("checkpoints", [])]:
        if rel is not None:
            resolve_inside(Path(out_dir), rel)  # raises PathOutsideRoot naming the path
    return state


def checkpoint_path(out_dir: str | Path) -> Path:
    """The weights of a run directory's last completed epoch (or `out_dir` itself if it is a file)."""
    p = Path(out_dir)
    if p.is_file():
        return p
    state = read_state(p)
    if state is None:
        raise FileNotFoundError(f"{p} holds no binding run ({STATE_FILE} missing)")
    return p / state["checkpoint"]


# --------------------------------------------------------------------------------------------------
# Training


@contextlib.contextmanager
def deterministic_mode(enabled: bool = True) -> Iterator[None]:
    """Deterministic kernels for the duration of a run (the caller's settings come back afterwards)."""
    prev = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    prev_bench = torch.backends.cudnn.benchmark
    prev_det = torch.backends.cudnn.deterministic
    prev_fill = torch.utils.deterministic.fill_uninitialized_memory
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        # A debugging aid that comes with deterministic mode: NaN-filling every new buffer (4,700
        # fills, about 5 % of a tiny-model step on CPU). Results never read uninitialized memory.
        torch.utils.deterministic.fill_uninitialized_memory = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev, warn_only=prev_warn)
        torch.backends.cudnn.benchmark = prev_bench
        torch.backends.cudnn.deterministic = prev_det
        torch.utils.deterministic.fill_uninitialized_memory = prev_fill


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: matrices decay; biases, norms, tokens and position embeddings do not."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim < 2 or name.endswith(("cls_token", "pos_embed", "bias_k", "bias_v")):
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def train_binding(
    dataset: str | Path,
    modality: str,
    target_encoder_id: str,
    out_dir: str | Path,
    config: TrainConfig = TrainConfig(),
    *,
    sample_ids: Sequence[str] | None = None,
    resume: bool = True,
    stop_after_epochs: int | None = None,
    dedup: str | None = None,
) -> TrainResult:
    """Train `modality`'s ImageBind tower against the frozen vectors of `embeddings/<target_encoder_id>/`.

    `sample_ids`: train on these samples only (e.g. a train split made by the caller). `dedup`: leave
    out the duplicates of that dedup table (`bindset dedup`; each group trains once).
    `resume`: continue a run found in `out_dir` (same data, target and settings, else
    `ResumeMismatch`); with False an existing run is an error. `stop_after_epochs`: end this call
    after that many more epochs (a time-boxed job; rerun to continue) without changing the schedule.
    """
    started = time.perf_counter()
    if modality not in BINDABLE:
        raise ValueError(f"cannot bind modality {modality!r}; choose one of {BINDABLE}")
    dataset = Path(dataset)
    out = Path(out_dir)
    pairs = load_pairs(dataset, modality, target_encoder_id, config.target_column, config.split, sample_ids, dedup)
    if len(pairs) < 2:
        raise ValueError(f"need at least 2 pairs to train, found {len(pairs)}")
    if pairs.missing:
        log.warning(
            "%d samples with %s have no %s vector in %s and are left out (e.g. %s)",
            len(pairs.missing),
            modality,
            config.target_column,
            target_encoder_id,
            pairs.missing[:3],
        )
    temperature = float(config.temperature or DEFAULT_TEMPERATURE[modality])
    ib_config = config.imagebind_config()
    target_dim = int(pairs.targets.shape[1])
    device, precision = _resolve_runtime(config.device, config.precision)
    n = len(pairs)
    batch = min(config.batch_size, n)
    steps_per_epoch = max(n // batch, 1)
    total_steps = steps_per_epoch * config.epochs
    warmup = int(round(config.warmup_fraction * total_steps))
    fingerprint = {
        "modality": modality,
        "target_encoder_id": target_encoder_id,
        "pairs": pairs.digest(),
        "n": n,
        "config": config.run_fingerprint(),
    }
    fingerprint_hash = hashlib.sha256(json.dumps(fingerprint, sort_keys=True, default=str).encode()).hexdigest()[:16]

    state = read_state(out)
    if state is not None:
        if not resume:
            raise FileExistsError(f"{out} already holds a binding run; pass resume=True or another out_dir")
        if state.get("fingerprint") != fingerprint_hash:
            raise ResumeMismatch(
                f"{out} holds a run with other data, target or settings (fingerprint {state.get('fingerprint')} "
                f"vs {fingerprint_hash}); use another out_dir, or delete it to start over"
            )

    out.mkdir(parents=True, exist_ok=True)
    (out / CHECKPOINT_DIR).mkdir(exist_ok=True)
    (out / "run.json").write_text(
        json.dumps(
            {
                "fingerprint": fingerprint_hash,
                **{k: v for k, v in fingerprint.items() if k != "config"},
                "config": config.to_dict(),
                "temperature": temperature,
                "steps_per_epoch": steps_per_epoch,
                "total_steps": total_steps,
                "warmup_steps": warmup,
                "dataset": str(dataset.resolve()),
            },
            indent=2,
            sort_keys=True,
            default=str,
        )
        + "\n"
    )

    inputs = ModalityInputs(dataset, modality, pairs.shards, pairs.rows, config.cache, config.cache_limit_mb)
    targets = torch.from_numpy(pairs.targets)
    records: list[tuple[int, int, float, float]] = []
    start_epoch, step, resumed_from = 0, 0, None
    checkpoints: list[Path] = []
    rng_devices = [device] if device.type == "cuda" else []
    with (
        contextlib.closing(inputs),
        deterministic_mode(config.deterministic),
        torch.random.fork_rng(devices=rng_devices),
    ):
        torch.manual_seed(_mix(config.seed, 0x7A11))
        model = BindingModel(ib_config, modality, target_dim, seed=config.seed)
        if config.init_checkpoint:
            _load_init(model, config.init_checkpoint)
        model = model.to(device)
        optimizer = torch.optim.AdamW(param_groups(model, config.weight_decay), lr=config.lr, betas=config.betas)
        scaler = torch.amp.GradScaler(device.type, enabled=(precision == "fp16"))

        if state is not None:
            from safetensors.torch import load_file

            model.load_state_dict(load_file(str(out / state["checkpoint"]), device=str(device)), strict=True)
            saved = torch.load(out / state["state"], map_location="cpu", weights_only=True)
            optimizer.load_state_dict(saved["optimizer"])
            if saved.get("scaler"):
                scaler.load_state_dict(saved["scaler"])
            torch.set_rng_state(saved["rng"]["cpu"])
            if device.type == "cuda" and "cuda" in saved["rng"]:
                torch.cuda.set_rng_state(saved["rng"]["cuda"], device)
            start_epoch, step = int(state["epoch"]), int(state["step"])
            resumed_from = start_epoch
            records = [r for r in read_losses(out) if r[1] < step]
            checkpoints = [out / c for c in state.get("checkpoints", [state["checkpoint"]])]
            log.info("resuming %s after epoch %d (step %d)", out, start_epoch, step)

        from tqdm.auto import tqdm

        end_epoch = config.epochs if stop_after_epochs is None else min(config.epochs, start_epoch + stop_after_epochs)
        bar = tqdm(
            total=total_steps,
            initial=step,
            desc=f"bind {modality}",
            unit="step",
            disable=not config.progress or start_epoch >= end_epoch,
        )
        model.train()
        with bar:
            for epoch in range(start_epoch, end_epoch):
                order = epoch_order(config.seed, epoch, n)
                for b in range(steps_per_epoch):
                    idx = order[b * batch : (b + 1) * batch]
                    lr = cosine_lr(step, total_steps, config.lr, warmup, config.min_lr_ratio)
                    for group in optimizer.param_groups:
                        group["lr"] = lr
                    x = inputs.batch(idx.tolist())
                    if config.clips == "random":
                        x = _pick_clips(x, config.seed, epoch, step)
                    x = x.to(device, non_blocking=True)
                    y = targets[idx].to(device, non_blocking=True)
                    with autocast(device, precision):
                        z = model(x)
                    loss = symmetric_infonce(z.float(), y, temperature)
                    if not torch.isfinite(loss):
                        raise FloatingPointError(f"loss is {loss.item()} at epoch {epoch + 1}, step {step}")
                    optimizer.zero_grad(set_to_none=True)
                    scaler.scale(loss).backward()
                    if config.grad_clip:
                        scaler.unscale_(optimizer)
                        nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                    scaler.step(optimizer)
                    scaler.update()
                    value = float(loss.detach())
                    records.append((epoch + 1, step, lr, value))
                    step += 1
                    bar.update(1)
                    bar.set_postfix(epoch=epoch + 1, loss=f"{value:.4f}", lr=f"{lr:.2e}")
                # checkpoint: weights, then optimizer/RNG, then losses, then state.json (the commit point)
                name = f"epoch-{epoch + 1:04d}"
                weights = out / CHECKPOINT_DIR / f"{name}.safetensors"
                _save_weights(
                    weights,
                    model,
                    {
                        "target_encoder_id": target_encoder_id,
                        "temperature": temperature,
                        "epoch": epoch + 1,
                        "target_column": config.target_column,
                    },
                )
                _save_state(
                    out / CHECKPOINT_DIR / f"{name}.state.pt", optimizer, scaler.state_dict(), device, epoch + 1, step
                )
                _write_losses(out / LOSSES_FILE, records)
                checkpoints = [c for c in checkpoints if c != weights] + [weights]
                dropped = []
                if config.keep_checkpoints is not None and len(checkpoints) > config.keep_checkpoints:
                    dropped, checkpoints = (
                        checkpoints[: -config.keep_checkpoints],
                        checkpoints[-config.keep_checkpoints :],
                    )
                _write_state(
                    out,
                    {
                        "fingerprint": fingerprint_hash,
                        "epoch": epoch + 1,
                        "step": step,
                        "epochs": config.epochs,
                        "finished": epoch + 1 == config.epochs,
                        "checkpoint": _rel(weights, out),
                        "state": _rel(out / CHECKPOINT_DIR / f"{name}.state.pt", out),
                        "checkpoints": [_rel(c, out) for c in checkpoints],
                        "modality": modality,
                        "target_encoder_id": target_encoder_id,
                    },
                )
                for old in dropped:  # only once the newer state is committed
                    old.unlink(missing_ok=True)
                    old.with_name(old.name.replace(".safetensors", ".state.pt")).unlink(missing_ok=True)
                epoch_mean = float(np.mean([r[3] for r in records if r[0] == epoch + 1]))
                log.info("epoch %d/%d: mean loss %.4f (lr %.2e)", epoch + 1, config.epochs, epoch_mean, lr)

    final_state = read_state(out)
    if final_state is None:
        raise RuntimeError(f"no epoch completed in {out}")
    final = out / final_state["checkpoint"]
    epochs_done = int(final_state["epoch"])
    epoch_losses = [float(np.mean([r[3] for r in records if r[0] == e])) for e in range(1, epochs_done + 1)]
    fp = sha256_file(final)[:12]
    return TrainResult(
        out_dir=out,
        modality=modality,
        target_encoder_id=target_encoder_id,
        target_dim=target_dim,
        temperature=temperature,
        encoder_id=make_encoder_id("bindset", f"imagebind-{ib_config.name}", modality, fp, DEFAULT_PREPROCESS_VERSION),
        checkpoint=final,
        checkpoints=[out / c for c in final_state["checkpoints"]],
        epochs=epochs_done,
        steps=int(final_state["step"]),
        final_loss=epoch_losses[-1],
        losses=[r[3] for r in records],
        epoch_losses=epoch_losses,
        n_samples=n,
        missing_targets=len(pairs.missing),
        resumed_from_epoch=resumed_from,
        device=str(device),
        seconds=time.perf_counter() - started,
        finished=bool(final_state["finished"]),
    )


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _write_state(out: Path, state: dict[str, Any]) -> None:
    from storage.atomic import write_bytes_atomic

    write_bytes_atomic(out / STATE_FILE, (json.dumps(state, indent=2, sort_keys=True) + "\n").encode())


# --------------------------------------------------------------------------------------------------
# The trained tower as a frozen Encoder


class BindingEncoder(Encoder):
    """A trained binding (tower + projection) as a frozen `Encoder`: model-ready batch of its
    modality -> L2-normalized vectors in the target (image) space.

    `encoder_id` = `bindset-imagebind-<size>-<modality>-<sha256[:12] of the weights>-p1`.
    """

    family = "bindset"

    def __init__(
        self,
        checkpoint: str | os.PathLike,
        device: str | torch.device | None = None,
        precision: str | torch.dtype | None = None,
        batch_size: int | None = None,
        preprocess_version: str = DEFAULT_PREPROCESS_VERSION,
    ) -> None:
        from safetensors import safe_open
        from safetensors.torch import load_file

        path = checkpoint_path(checkpoint)
        with safe_open(str(path), framework="pt") as fh:
            meta = (fh.metadata() or {}).get(METADATA_KEY)
        if meta is None:
            raise ValueError(f"{path} is not a bindset binding checkpoint (no '{METADATA_KEY}' metadata)")
        info = json.loads(meta)
        self.info = info
        self.device, self.precision = _resolve_runtime(device, precision)
        config = _config_from_dict(info["imagebind_config"])
        model = BindingModel(config, info["modality"], int(info["target_dim"]))
        model.load_state_dict(load_file(str(path)), strict=True)
        self.model = model.to(self.device).eval().requires_grad_(False)
        self.checkpoint = path
        self.modality = info["modality"]
        self.dim = int(info["target_dim"])
        self.batch_size = int(batch_size or 32)
        self.target_encoder_id = info.get("target_encoder_id")
        fp = sha256_file(path)[:12]
        self.fingerprint = fp
        self.encoder_id = make_encoder_id("bindset", f"imagebind-{config.name}", self.modality, fp, preprocess_version)
        self.model_id = make_encoder_id("bindset", f"imagebind-{config.name}", None, fp, preprocess_version)

    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        return self.model(batch)

    def metadata(self) -> dict[str, Any]:
        meta = super().metadata()
        meta.update(
            family="bindset",
            target_encoder_id=self.target_encoder_id,
            checkpoint_sha256_12=self.fingerprint,
            epoch=self.info.get("epoch"),
        )
        return meta


def load_binding_encoder(
    checkpoint: str | os.PathLike,
    device: str | torch.device | None = None,
    precision: str | torch.dtype | None = None,
    batch_size: int | None = None,
) -> BindingEncoder:
    """A trained binding from a run directory (its last checkpoint) or a `.safetensors` file."""
    return BindingEncoder(checkpoint, device=device, precision=precision, batch_size=batch_size)


__all__ = [
    "BINDABLE",
    "DEFAULT_TEMPERATURE",
    "BindingEncoder",
    "BindingModel",
    "ModalityInputs",
    "PairTable",
    "ResumeMismatch",
    "TrainConfig",
    "TrainResult",
    "checkpoint_path",
    "cosine_lr",
    "deterministic_mode",
    "epoch_order",
    "load_binding_encoder",
    "load_pairs",
    "read_losses",
    "read_state",
    "read_store_vectors",
    "symmetric_infonce",
    "train_binding",
]
