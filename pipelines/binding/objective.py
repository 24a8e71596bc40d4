"""The training recipe's pieces that depend on neither data nor files: ImageBind's symmetric
InfoNCE, the warmup + cosine learning-rate schedule, the seeded data order and clip choice, AdamW's
parameter groups, and deterministic kernels for the duration of a run. The bind demo's tiny CLIP
trains with the same pieces.
"""

from __future__ import annotations

import contextlib
import math
import os
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from encoders.binding import mix_seed


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
    g = torch.Generator().manual_seed(mix_seed(seed, epoch, 0x5EED))
    return torch.randperm(n, generator=g)


def pick_clips(x: torch.Tensor, seed: int, epoch: int, step: int) -> torch.Tensor:
    """[B,S,...] multi-clip batch -> [B,...] with one clip per sample, drawn from (seed, epoch, step)."""
    if x.ndim < 5:
        return x
    g = torch.Generator().manual_seed(mix_seed(seed, epoch, step, 0xC11F))
    pick = torch.randint(x.shape[1], (x.shape[0],), generator=g)
    return x[torch.arange(x.shape[0]), pick]


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


__all__ = ["cosine_lr", "deterministic_mode", "epoch_order", "param_groups", "pick_clips", "symmetric_infonce"]
