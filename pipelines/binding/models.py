"""The encoders binding commands use, reached through the pipeline (flows never import `encoders`).

    load_binding_encoder("runs/audio")                        # a run directory's last checkpoint, or a file
    load_encoder("runs/audio", "audio")                       # the same, checked to embed audio
    load_encoder("openclip:ViT-H-14", "text", "/models/vit-h-14.safetensors")   # any factory name

A trained binding is also the encoder family `binding:<size>` (`encoders/binding.py`), which is how
`bindset embed` reaches it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.binding.checkpoints import checkpoint_path

if TYPE_CHECKING:
    import torch

    from encoders.base import Encoder
    from encoders.binding import BindingEncoder


def load_binding_encoder(
    checkpoint: str | os.PathLike,
    device: "str | torch.device | None" = None,
    precision: "str | torch.dtype | None" = None,
    batch_size: int | None = None,
) -> "BindingEncoder":
    """A trained binding from a run directory (its last checkpoint) or a `.safetensors` file."""
    from encoders.binding import BindingEncoder

    return BindingEncoder(checkpoint_path(checkpoint), device=device, precision=precision, batch_size=batch_size)


def register_openclip_config_beside(name: str, checkpoint: str | os.PathLike | None) -> None:
    """Register `<checkpoint dir>/<model>.json` with open_clip when such a config file lies beside the
    checkpoint: a model trained here (the bind demo's tiny CLIP) can then be named in a new process."""
    if not name.startswith("openclip:") or checkpoint is None:
        return
    model = name.split(":", 1)[1]
    config = Path(checkpoint).parent / f"{model}.json"
    if config.is_file():
        from encoders.openclip import available_models, register_model_config

        if model not in available_models():
            register_model_config(model, config)


def load_encoder(
    name_or_path: str | os.PathLike, modality: str, checkpoint: str | os.PathLike | None = None, **kw: Any
) -> "Encoder":
    """An encoder for queries or class prompts: a trained binding (a run directory or its
    .safetensors) or any factory name (`openclip:<model>`, `imagebind:<size>`, `binding:<size>`) with
    an optional local checkpoint (an open_clip config beside it is registered first)."""
    path = Path(str(name_or_path))
    if path.exists():
        enc = load_binding_encoder(path, **kw)
        if enc.modality != modality:
            raise ValueError(f"{path} embeds {enc.modality}, not {modality}")
        return enc
    from encoders import create_encoder

    register_openclip_config_beside(str(name_or_path), checkpoint)
    return create_encoder(str(name_or_path), checkpoint=checkpoint, modality=modality, **kw)


__all__ = ["load_binding_encoder", "load_encoder", "register_openclip_config_beside"]
