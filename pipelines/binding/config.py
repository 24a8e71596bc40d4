"""What a binding run is asked to do (`TrainConfig`) and what it did (`TrainResult`)."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from encoders.imagebind_config import ImageBindConfig, get_config


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


__all__ = ["ResumeMismatch", "TrainConfig", "TrainResult", "resolve_imagebind_config"]
