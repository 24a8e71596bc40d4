"""Bind a new modality to a frozen image embedding space (ImageBind's recipe) from the shards.

    from pipelines.binding.train import TrainConfig, train_binding
    result = train_binding("/data/audioset", "audio", "openclip-ViT-H-14-3f2a9c0d1b7e-p1", "/runs/audio",
                           TrainConfig(epochs=10))
    result.final_loss, result.checkpoint          # -> load_binding_encoder(result.out_dir)
    # or: bindset embed /data/audioset --encoder binding:tiny --checkpoint <result.checkpoint> --modalities audio

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

The pieces live beside this module: the model in `encoders/binding.py` (an encoder family), the
settings in `config.py`, loss/schedule/order in `objective.py`, the data in `pairs.py`, the run
directory in `checkpoints.py`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from encoders.base import _resolve_runtime, sha256_file
from encoders.binding import BindingModel, binding_encoder_id, mix_seed
from encoders.device import autocast
from encoders.imagebind import load_imagebind_state_dict
from pipelines.binding.checkpoints import (
    CHECKPOINT_DIR,
    LOSSES_FILE,
    read_losses,
    read_state,
    relative,
    save_state,
    save_weights,
    write_losses,
    write_state,
)
from pipelines.binding.config import (
    ResumeMismatch,
    TrainConfig,
    TrainResult,
)
from pipelines.binding.objective import (
    cosine_lr,
    deterministic_mode,
    epoch_order,
    param_groups,
    pick_clips,
    symmetric_infonce,
)
from pipelines.binding.pairs import ModalityInputs, load_pairs
from preprocess.registry import bindable_names, get_modality

log = logging.getLogger("bindset.train")

#: modalities a binding can be trained for -> ImageBind's temperature for them (1 / logit scale)


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
    bindable = bindable_names()
    if modality not in bindable:
        raise ValueError(f"cannot bind modality {modality!r}; choose one of {bindable}")
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
    temperature = float(config.temperature or get_modality(modality).temperature)
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
        torch.manual_seed(mix_seed(config.seed, 0x7A11))
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
                        x = pick_clips(x, config.seed, epoch, step)
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
                save_weights(
                    weights,
                    model,
                    {
                        "target_encoder_id": target_encoder_id,
                        "temperature": temperature,
                        "epoch": epoch + 1,
                        "target_column": config.target_column,
                    },
                )
                save_state(
                    out / CHECKPOINT_DIR / f"{name}.state.pt", optimizer, scaler.state_dict(), device, epoch + 1, step
                )
                write_losses(out / LOSSES_FILE, records)
                checkpoints = [c for c in checkpoints if c != weights] + [weights]
                dropped = []
                if config.keep_checkpoints is not None and len(checkpoints) > config.keep_checkpoints:
                    dropped, checkpoints = (
                        checkpoints[: -config.keep_checkpoints],
                        checkpoints[-config.keep_checkpoints :],
                    )
                write_state(
                    out,
                    {
                        "fingerprint": fingerprint_hash,
                        "epoch": epoch + 1,
                        "step": step,
                        "epochs": config.epochs,
                        "finished": epoch + 1 == config.epochs,
                        "checkpoint": relative(weights, out),
                        "state": relative(out / CHECKPOINT_DIR / f"{name}.state.pt", out),
                        "checkpoints": [relative(c, out) for c in checkpoints],
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
        encoder_id=binding_encoder_id(ib_config.name, modality, fp),
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


__all__ = [
    "ResumeMismatch",
    "TrainConfig",
    "TrainResult",
    "train_binding",
]
