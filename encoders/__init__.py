"""Encoders: frozen models that turn model-ready batches into float32 embeddings.

    from encoders import create_encoder
    enc = create_encoder("openclip:ViT-H-14", checkpoint="/models/vit-h-14.safetensors")
    enc = create_encoder("imagebind:huge", checkpoint="/models/imagebind_huge.pth", modality="audio")
    enc = create_encoder("binding:tiny", checkpoint="runs/audio/checkpoints/epoch-0010.safetensors")
    emb = enc.encode(batch)            # np.float32 [N, enc.dim]; enc.encoder_id names the store

Model code is imported lazily (open_clip alone takes seconds to import).
"""

from encoders.base import (
    Encoder,
    available_encoders,
    create_encoder,
    load_state_dict,
    register_encoder_family,
    resolve_checkpoint,
    sha256_file,
)
from encoders.device import autocast, select_device, select_precision

__all__ = [
    "Encoder",
    "create_encoder",
    "available_encoders",
    "register_encoder_family",
    "load_state_dict",
    "resolve_checkpoint",
    "sha256_file",
    "select_device",
    "select_precision",
    "autocast",
]
