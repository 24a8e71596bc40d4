"""A binding run directory on disk, written so that a killed run resumes where it stopped:

    checkpoints/epoch-0003.safetensors   weights; metadata["bindset"] holds the JSON that rebuilds the model
    checkpoints/epoch-0003.state.pt      optimizer state + RNG states (tensors and numbers only:
                                         read back with torch.load(weights_only=True))
    state.json                           last completed epoch, step, paths, run fingerprint (the commit point)
    losses.csv                           epoch, step, lr, loss: one row per optimisation step

Every file is written atomically; nothing on the read path unpickles.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import torch

from encoders.binding import METADATA_KEY, BindingModel

STATE_FILE = "state.json"
LOSSES_FILE = "losses.csv"
CHECKPOINT_DIR = "checkpoints"


def save_weights(path: Path, model: BindingModel, extra: dict[str, Any]) -> None:
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


def save_state(
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


def write_losses(path: Path, records: list[tuple[int, int, float, float]]) -> None:
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


def relative(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def write_state(out: Path, state: dict[str, Any]) -> None:
    from storage.atomic import write_bytes_atomic

    write_bytes_atomic(out / STATE_FILE, (json.dumps(state, indent=2, sort_keys=True) + "\n").encode())


__all__ = [
    "CHECKPOINT_DIR",
    "LOSSES_FILE",
    "STATE_FILE",
    "checkpoint_path",
    "read_losses",
    "read_state",
    "relative",
    "save_state",
    "save_weights",
    "write_losses",
    "write_state",
]
