"""Size configs of the ImageBind-architecture model (`encoders/imagebind.py`).

`HUGE` holds the widths, depths and heads of ImageBind's `imagebind_huge` as described in
`shared/reference/imagebind/README.md`; `TINY` keeps every structural choice (patch geometry, token
counts, bias_kv, drop-path schedule, scales) and shrinks widths and depths so tests and small
training runs are cheap. Configs are frozen dataclasses and load from TOML:

    name = "small"
    embed_dim = 256
    [vision]
    width = 384
    depth = 6
    heads = 6
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MODALITIES = ("vision", "text", "audio", "depth", "thermal", "imu")


@dataclass(frozen=True)
class TrunkConfig:
    """One modality's transformer trunk."""

    width: int
    depth: int
    heads: int
    #: drop-path rate of the last block; rates rise linearly from 0 in the first (training only)
    drop_path: float = 0.0
    #: learnable bias_k / bias_v: one extra key/value position every query attends to
    bias_kv: bool = False
    #: LayerNorm on the tokens before the first block (vision only in ImageBind)
    pre_trunk_ln: bool = False

    def __post_init__(self) -> None:
        if self.width % self.heads:
            raise ValueError(f"trunk width {self.width} is not divisible by heads {self.heads}")


@dataclass(frozen=True)
class ImageBindConfig:
    name: str
    embed_dim: int
    vision: TrunkConfig
    text: TrunkConfig
    audio: TrunkConfig
    depth: TrunkConfig
    thermal: TrunkConfig
    imu: TrunkConfig

    # vision: 3-D patch conv over (T, H, W); images are repeated to `num_frames` frames
    image_size: int = 224
    vision_patch: tuple[int, int, int] = (2, 14, 14)
    num_frames: int = 2
    # text
    vocab_size: int = 49408
    context_length: int = 77
    # audio: log-mel (1, mel_bins, target_len), overlapping conv patches
    audio_mel_bins: int = 128
    audio_target_len: int = 204
    audio_kernel: int = 16
    audio_stride: int = 10
    # depth / thermal: 1-channel images, non-overlapping patches
    depth_image_size: int = 224
    depth_patch: int = 16
    thermal_image_size: int = 224
    thermal_patch: int = 16
    # imu: (channels, length) cut into windows of `imu_kernel` samples
    imu_channels: int = 6
    imu_length: int = 2000
    imu_kernel: int = 8
    imu_head_dropout: float = 0.5
    # postprocessor scales: text learnable (clamped), the others fixed
    text_logit_scale_init: float = 1 / 0.07
    max_logit_scale: float = 100.0
    audio_logit_scale: float = 20.0
    depth_logit_scale: float = 5.0
    thermal_logit_scale: float = 10.0
    imu_logit_scale: float = 5.0

    def trunk(self, modality: str) -> TrunkConfig:
        if modality not in MODALITIES:
            raise ValueError(f"unknown ImageBind modality {modality!r}; valid: {MODALITIES}")
        return getattr(self, modality)

    # token counts (without cls) ------------------------------------------------------------------
    @property
    def vision_tokens(self) -> int:
        t, ph, pw = self.vision_patch
        return (self.num_frames // t) * (self.image_size // ph) * (self.image_size // pw)

    @property
    def audio_grid(self) -> tuple[int, int]:
        k, s = self.audio_kernel, self.audio_stride
        return (self.audio_mel_bins - k) // s + 1, (self.audio_target_len - k) // s + 1

    @property
    def audio_tokens(self) -> int:
        h, w = self.audio_grid
        return h * w

    @property
    def depth_tokens(self) -> int:
        return (self.depth_image_size // self.depth_patch) ** 2

    @property
    def thermal_tokens(self) -> int:
        return (self.thermal_image_size // self.thermal_patch) ** 2

    @property
    def imu_tokens(self) -> int:
        return self.imu_length // self.imu_kernel

    def replace(self, **changes: Any) -> "ImageBindConfig":
        return dataclasses.replace(self, **changes)

    # TOML ---------------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict[str, Any], base: "ImageBindConfig | None" = None) -> "ImageBindConfig":
        """A config from a dict; missing fields come from `base` (default: the `tiny` layout)."""
        base = base or TINY
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown ImageBind config keys: {sorted(unknown)}")
        changes: dict[str, Any] = {}
        for key, value in data.items():
            if key in MODALITIES:
                trunk_fields = {f.name for f in dataclasses.fields(TrunkConfig)}
                bad = set(value) - trunk_fields
                if bad:
                    raise ValueError(f"unknown keys in [{key}]: {sorted(bad)}")
                changes[key] = dataclasses.replace(getattr(base, key), **value)
            elif key == "vision_patch":
                changes[key] = tuple(int(v) for v in value)
            else:
                changes[key] = value
        return dataclasses.replace(base, **changes)

    @classmethod
    def from_toml(cls, path: str | Path, base: "ImageBindConfig | None" = None) -> "ImageBindConfig":
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
        base_name = data.pop("base", None)
        if base is None and base_name is not None:
            base = get_config(base_name)
        return cls.from_dict(data, base=base)


HUGE = ImageBindConfig(
    name="huge",
    embed_dim=1024,
    vision=TrunkConfig(width=1280, depth=32, heads=16, drop_path=0.0, bias_kv=False, pre_trunk_ln=True),
    text=TrunkConfig(width=1024, depth=24, heads=16, drop_path=0.0, bias_kv=False),
    audio=TrunkConfig(width=768, depth=12, heads=12, drop_path=0.1, bias_kv=True),
    depth=TrunkConfig(width=384, depth=12, heads=8, drop_path=0.0, bias_kv=True),
    thermal=TrunkConfig(width=768, depth=12, heads=12, drop_path=0.0, bias_kv=True),
    imu=TrunkConfig(width=512, depth=6, heads=8, drop_path=0.7, bias_kv=True),
)

TINY = dataclasses.replace(
    HUGE,
    name="tiny",
    embed_dim=32,
    vision=dataclasses.replace(HUGE.vision, width=32, depth=2, heads=2),
    text=dataclasses.replace(HUGE.text, width=32, depth=2, heads=2),
    audio=dataclasses.replace(HUGE.audio, width=32, depth=2, heads=2),
    depth=dataclasses.replace(HUGE.depth, width=32, depth=2, heads=2),
    thermal=dataclasses.replace(HUGE.thermal, width=32, depth=2, heads=2),
    imu=dataclasses.replace(HUGE.imu, width=32, depth=2, heads=2),
)

CONFIGS: dict[str, ImageBindConfig] = {"huge": HUGE, "tiny": TINY}


def get_config(name: str) -> ImageBindConfig:
    try:
        return CONFIGS[name]
    except KeyError:
        raise ValueError(f"unknown ImageBind size {name!r}; valid: {sorted(CONFIGS)}") from None
