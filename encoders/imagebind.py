"""ImageBind-architecture modality encoders, written here from the description in
`shared/reference/imagebind/README.md` ("Architecture of imagebind_huge").

Module names and nesting follow the reference state dict (`imagebind_huge_state_dict.tsv`), so a
user's own `imagebind_huge.pth` loads with `strict=True`:

    modality_preprocessors.<m>   tokens from the input (+ cls token, + position embedding)
    modality_trunks.<m>          pre-norm transformer blocks (nn.MultiheadAttention, packed in-proj)
    modality_heads.<m>           LayerNorm -> pick one token -> Linear (no bias)
    modality_postprocessors.<m>  L2 normalize (-> logit scale)

with <m> in vision, text, audio, depth, thermal, imu (in that order: it is the reference's key
order, which `state_dict()` reproduces exactly).

Input layouts (model-ready tensors, as `preprocess/` and the shard reader produce them):

    vision   image [B,3,224,224]; video [B,S,3,2,224,224] (S clips, e.g. 15 = 5 times x 3 crops)
    text     token ids [B,77] (int)
    audio    log-mel [B,S,1,128,204] (S = 3 clips) or a single clip [B,1,128,204]
    depth    disparity [B,1,224,224];  thermal [B,1,224,224]
    imu      [B,6,2000]

Any input with >= 5 dims is read as (B, S, ...): the S clips run through preprocessor, trunk, head
*and* postprocessor separately and the results are averaged over S, not renormalized. A 5-D video
tensor [B,3,2,224,224] would therefore be misread as 3 clips: pass video as 6-D.

Why one module of this size: the encoders mirror one reference state dict module for module;
keeping trunks, heads and postprocessors side by side is what lets a reader check them against
the listing.
"""

from __future__ import annotations

import contextlib
import math
import os
from typing import Any, Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from encoders.base import (
    DEFAULT_PREPROCESS_VERSION,
    Encoder,
    _resolve_runtime,
    checkpoint_fingerprint,
    load_state_dict,
    make_encoder_id,
    resolve_checkpoint,
)
from encoders.imagebind_config import CONFIGS, HUGE, MODALITIES, TINY, ImageBindConfig, TrunkConfig, get_config

__all__ = [
    "ImageBindModel",
    "ImageBindEncoder",
    "ImageBindConfig",
    "HUGE",
    "TINY",
    "MODALITIES",
    "build_model",
    "load_imagebind_state_dict",
    "available_models",
    "create",
]

# Block, pre-trunk and head LayerNorms use eps 1e-6; the patch-stem LayerNorms keep PyTorch's 1e-5.
_LN_EPS = 1e-6


# --------------------------------------------------------------------------------------------------
# Preprocessors


class PadIm2Video(nn.Module):
    """Give an image a time axis and repeat it to `ntimes` frames (only when T == 1)."""

    def __init__(self, ntimes: int) -> None:
        super().__init__()
        self.ntimes = ntimes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 4:  # [B,C,H,W] -> [B,C,1,H,W]
            x = x.unsqueeze(2)
        if x.ndim != 5:
            raise ValueError(f"vision input must be [B,3,H,W] or [B,3,T,H,W], got {tuple(x.shape)}")
        if x.shape[2] == 1:
            x = x.repeat(1, 1, self.ntimes, 1, 1)
        return x


class PatchStem(nn.Module):
    """`proj` (a conv) -> flatten the patch grid to tokens -> optional `norm_layer` on the tokens."""

    def __init__(self, proj: nn.Module, norm_layer: nn.Module | None = None) -> None:
        super().__init__()
        self.proj = proj
        self.norm_layer = norm_layer  # registered only when a module (keys `<stem>.norm_layer.*`)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)  # [B, W, *grid]
        x = x.flatten(2).transpose(1, 2)  # [B, N, W], grid flattened in (T,) H, W order
        if self.norm_layer is not None:
            x = self.norm_layer(x)
        return x


class LinearStem(nn.Module):
    """IMU stem: Linear (no bias) on flattened windows, then LayerNorm."""

    def __init__(self, in_features: int, width: int) -> None:
        super().__init__()
        self.proj = nn.Linear(in_features, width, bias=False)
        self.norm_layer = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm_layer(self.proj(x))


class PosEmbedding(nn.Module):
    def __init__(self, num_tokens: int, width: int) -> None:
        super().__init__()
        self.pos_embed = nn.Parameter(torch.zeros(1, num_tokens, width))


class PatchPreprocessor(nn.Module):
    """Vision / audio / depth / thermal: stem tokens, a cls token in front, position embedding added."""

    def __init__(self, stem_name: str, stem: nn.Module, num_patches: int, width: int, input_hint: str) -> None:
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.stem_name = stem_name
        setattr(self, stem_name, stem)
        self.pos_embedding_helper = PosEmbedding(1 + num_patches, width)
        self.num_patches = num_patches
        self.input_hint = input_hint

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        tokens = getattr(self, self.stem_name)(x)
        if tokens.shape[1] != self.num_patches:
            raise ValueError(
                f"input {tuple(x.shape)} gives {tokens.shape[1]} patch tokens, the model has position "
                f"embeddings for {self.num_patches}; expected input {self.input_hint}"
            )
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)
        tokens = torch.cat((cls, tokens), dim=1) + self.pos_embedding_helper.pos_embed
        return tokens, None


def causal_mask(n: int) -> torch.Tensor:
    """Additive causal mask: -inf above the diagonal, 0 elsewhere."""
    return torch.full((n, n), float("-inf")).triu_(1)


class TextPreprocessor(nn.Module):
    """Token embedding + position embedding; no cls token. Hands the causal mask to the trunk."""

    def __init__(self, vocab_size: int, context_length: int, width: int) -> None:
        super().__init__()
        self.pos_embed = nn.Parameter(torch.zeros(1, context_length, width))
        self.register_buffer("mask", causal_mask(context_length))
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.context_length = context_length

    def forward(self, token_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if token_ids.ndim != 2 or token_ids.shape[1] > self.context_length:
            raise ValueError(f"text input must be token ids [B,{self.context_length}], got {tuple(token_ids.shape)}")
        length = token_ids.shape[1]
        tokens = self.token_embedding(token_ids) + self.pos_embed[:, :length]
        return tokens, self.mask[:length, :length]


class IMUPreprocessor(nn.Module):
    """[B,C,L] -> L/K windows of K samples, each flattened channel-major (C*K features) -> tokens."""

    def __init__(self, channels: int, length: int, kernel: int, width: int) -> None:
        super().__init__()
        num_patches = length // kernel
        # registration order matters: the reference lists pos_embed before cls_token
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + num_patches, width))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.imu_stem = LinearStem(channels * kernel, width)
        self.channels, self.length, self.kernel = channels, length, kernel

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        if x.ndim != 3 or tuple(x.shape[1:]) != (self.channels, self.length):
            raise ValueError(f"imu input must be [B,{self.channels},{self.length}], got {tuple(x.shape)}")
        b = x.shape[0]
        windows = x.unfold(-1, self.kernel, self.kernel)  # [B, C, N, K]
        windows = windows.permute(0, 2, 1, 3).reshape(b, -1, self.channels * self.kernel)  # [B, N, C*K]
        tokens = self.imu_stem(windows)
        cls = self.cls_token.expand(b, -1, -1)
        tokens = torch.cat((cls, tokens), dim=1) + self.pos_embed
        return tokens, None


# --------------------------------------------------------------------------------------------------
# Trunks


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch per sample (training only)."""

    def __init__(self, p: float, batch_dim: int) -> None:
        super().__init__()
        self.p = float(p)
        self.batch_dim = batch_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        shape = [1] * x.ndim
        shape[self.batch_dim] = x.shape[self.batch_dim]
        return x * x.new_empty(shape).bernoulli_(keep).div_(keep)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Mlp(nn.Module):
    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.act = nn.GELU()  # exact (erf)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm residual block: x + Attn(LN1(x)), then x + MLP(LN2(x)). Sequence-first input [L,B,W]."""

    def __init__(self, width: int, heads: int, bias_kv: bool, drop_path: float) -> None:
        super().__init__()
        # packed q,k,v in-projection with bias, out-proj with bias, scaling 1/sqrt(head_dim);
        # add_bias_kv appends one learned key/value position (bias_k, bias_v: [1,1,W])
        self.attn = nn.MultiheadAttention(width, heads, dropout=0.0, bias=True, add_bias_kv=bias_kv)
        self.drop_path = DropPath(drop_path, batch_dim=1)
        self.norm_1 = nn.LayerNorm(width, eps=_LN_EPS)
        self.mlp = Mlp(width, 4 * width)
        self.norm_2 = nn.LayerNorm(width, eps=_LN_EPS)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        h = self.norm_1(x)
        x = x + self.drop_path(self.attn(h, h, h, need_weights=False, attn_mask=attn_mask)[0])
        x = x + self.drop_path(self.mlp(self.norm_2(x)))
        return x


def drop_path_rates(max_rate: float, depth: int) -> list[float]:
    """Linearly from 0 (first block) to `max_rate` (last block)."""
    if depth <= 1:
        return [0.0] * depth
    return [max_rate * i / (depth - 1) for i in range(depth)]


class Trunk(nn.Module):
    """Optional pre-trunk LayerNorm, then the blocks. No final LayerNorm (the head has one)."""

    def __init__(self, cfg: TrunkConfig) -> None:
        super().__init__()
        self.pre_transformer_layer: nn.Module = (
            nn.Sequential(nn.LayerNorm(cfg.width, eps=_LN_EPS)) if cfg.pre_trunk_ln else nn.Identity()
        )
        self.blocks = nn.ModuleList(
            Block(cfg.width, cfg.heads, cfg.bias_kv, rate) for rate in drop_path_rates(cfg.drop_path, cfg.depth)
        )

    def forward(self, tokens: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.pre_transformer_layer(tokens)
        x = x.transpose(0, 1)  # [B,L,W] -> [L,B,W]: the reference runs sequence-first
        for block in self.blocks:
            x = block(x, attn_mask=attn_mask)
        return x.transpose(0, 1)


# --------------------------------------------------------------------------------------------------
# Heads and postprocessors


class SelectToken(nn.Module):
    def __init__(self, index: int = 0) -> None:
        super().__init__()
        self.index = index

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, self.index, ...]


class TextHead(nn.Module):
    """Token at argmax(token_ids) of each row (the EOT: 49407 is the largest id), then LN -> Linear."""

    def __init__(self, width: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Sequential(nn.LayerNorm(width, eps=_LN_EPS), nn.Linear(width, embed_dim, bias=False))

    def forward(self, tokens: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
        index = token_ids.argmax(dim=-1)
        picked = tokens[torch.arange(tokens.shape[0], device=tokens.device), index]
        return self.proj(picked)


def cls_head(width: int, embed_dim: int, dropout: float | None = None) -> nn.Sequential:
    layers: list[nn.Module] = [nn.LayerNorm(width, eps=_LN_EPS), SelectToken(0)]
    if dropout is not None:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(width, embed_dim, bias=False))
    return nn.Sequential(*layers)


class Normalize(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=-1, p=2)


class LogitScale(nn.Module):
    """Multiply by min(exp(log_logit_scale), max_scale); a Parameter if learnable, else a buffer."""

    def __init__(self, init: float, learnable: bool, max_scale: float = 100.0) -> None:
        super().__init__()
        value = torch.tensor(math.log(init), dtype=torch.float32)
        if learnable:
            self.log_logit_scale = nn.Parameter(value)
        else:
            self.register_buffer("log_logit_scale", value)
        self.learnable = learnable
        self.max_scale = max_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(self.log_logit_scale.exp(), max=self.max_scale) * x

    def extra_repr(self) -> str:
        return f"learnable={self.learnable}, max_scale={self.max_scale}"


# --------------------------------------------------------------------------------------------------
# The model


class ImageBindModel(nn.Module):
    """All (or some) of ImageBind's six modality towers, each ending in a `embed_dim` embedding."""

    def __init__(self, config: ImageBindConfig = HUGE, modalities: Iterable[str] = MODALITIES) -> None:
        super().__init__()
        wanted = set(modalities)
        unknown = wanted - set(MODALITIES)
        if unknown:
            raise ValueError(f"unknown ImageBind modalities {sorted(unknown)}; valid: {MODALITIES}")
        self.config = config
        order = [m for m in MODALITIES if m in wanted]  # reference key order, whatever the caller's
        self.modality_preprocessors = nn.ModuleDict({m: self._preprocessor(m) for m in order})
        self.modality_trunks = nn.ModuleDict({m: Trunk(config.trunk(m)) for m in order})
        self.modality_heads = nn.ModuleDict({m: self._head(m) for m in order})
        self.modality_postprocessors = nn.ModuleDict({m: self._postprocessor(m) for m in order})
        self.reset_parameters()

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.modality_trunks.keys())

    # construction --------------------------------------------------------------------------------
    def _preprocessor(self, m: str) -> nn.Module:
        c = self.config
        w = c.trunk(m).width
        if m == "vision":
            t, ph, pw = c.vision_patch
            conv = nn.Conv3d(3, w, kernel_size=(t, ph, pw), stride=(t, ph, pw), bias=False)
            stem = PatchStem(nn.Sequential(PadIm2Video(c.num_frames), conv))
            hint = f"[B,3,{c.image_size},{c.image_size}] or [B,3,{c.num_frames},{c.image_size},{c.image_size}]"
            return PatchPreprocessor("rgbt_stem", stem, c.vision_tokens, w, hint)
        if m == "text":
            return TextPreprocessor(c.vocab_size, c.context_length, w)
        if m == "audio":
            conv = nn.Conv2d(1, w, kernel_size=c.audio_kernel, stride=c.audio_stride, bias=False)
            stem = PatchStem(conv, nn.LayerNorm(w))
            return PatchPreprocessor(
                "rgbt_stem", stem, c.audio_tokens, w, f"[B,1,{c.audio_mel_bins},{c.audio_target_len}]"
            )
        if m == "depth":
            conv = nn.Conv2d(1, w, kernel_size=c.depth_patch, stride=c.depth_patch, bias=False)
            stem = PatchStem(conv, nn.LayerNorm(w))
            s = c.depth_image_size
            return PatchPreprocessor("depth_stem", stem, c.depth_tokens, w, f"[B,1,{s},{s}]")
        if m == "thermal":
            conv = nn.Conv2d(1, w, kernel_size=c.thermal_patch, stride=c.thermal_patch, bias=False)
            stem = PatchStem(conv, nn.LayerNorm(w))
            s = c.thermal_image_size
            return PatchPreprocessor("rgbt_stem", stem, c.thermal_tokens, w, f"[B,1,{s},{s}]")
        if m == "imu":
            return IMUPreprocessor(c.imu_channels, c.imu_length, c.imu_kernel, w)
        raise AssertionError(m)

    def _head(self, m: str) -> nn.Module:
        c = self.config
        w = c.trunk(m).width
        if m == "text":
            return TextHead(w, c.embed_dim)
        if m == "imu":
            return cls_head(w, c.embed_dim, dropout=c.imu_head_dropout)
        return cls_head(w, c.embed_dim)

    def _postprocessor(self, m: str) -> nn.Module:
        c = self.config
        if m == "vision":
            return Normalize()
        if m == "text":
            scale = LogitScale(c.text_logit_scale_init, learnable=True, max_scale=c.max_logit_scale)
        else:
            init = getattr(c, f"{m}_logit_scale")
            scale = LogitScale(init, learnable=False, max_scale=c.max_logit_scale)
        return nn.Sequential(Normalize(), scale)

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """A sensible random init for training from scratch (no effect on the meta device)."""
        for module in self.modules():
            if isinstance(module, nn.Linear) and not module.weight.is_meta:
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        for name, param in self.named_parameters():
            if param.is_meta:
                continue
            if name.endswith(("cls_token", "pos_embed")) or name.endswith("token_embedding.weight"):
                nn.init.normal_(param, std=0.02)

    # forward -------------------------------------------------------------------------------------
    def embed_single(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        """Preprocessor -> trunk -> head -> postprocessor on one clip per row: [B,...] -> [B,D]."""
        tokens, attn_mask = self.modality_preprocessors[modality](x)
        if attn_mask is not None:
            attn_mask = attn_mask.to(tokens.dtype)
        tokens = self.modality_trunks[modality](tokens, attn_mask=attn_mask)
        head = self.modality_heads[modality]
        out = head(tokens, token_ids=x) if modality == "text" else head(tokens)
        return self.modality_postprocessors[modality](out)

    def embed(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        """One modality's embedding [B,D]; inputs with >= 5 dims are (B,S,...) clips, averaged over S."""
        if modality not in self.modality_trunks:
            raise KeyError(f"modality {modality!r} is not in this model (has {self.modalities})")
        if x.ndim >= 5:
            b, s = x.shape[:2]
            out = self.embed_single(modality, x.reshape(b * s, *x.shape[2:]))
            return out.reshape(b, s, -1).mean(dim=1)
        return self.embed_single(modality, x)

    def forward(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {m: self.embed(m, x) for m, x in inputs.items() if x is not None}

    def retain(self, modalities: Iterable[str]) -> "ImageBindModel":
        """Drop every tower not in `modalities` (frees their weights)."""
        keep = set(modalities)
        for dict_ in (
            self.modality_preprocessors,
            self.modality_trunks,
            self.modality_heads,
            self.modality_postprocessors,
        ):
            for m in list(dict_.keys()):
                if m not in keep:
                    del dict_[m]
        return self


def build_model(
    config: ImageBindConfig | str = HUGE,
    modalities: Iterable[str] = MODALITIES,
    device: str | torch.device | None = None,
    seed: int | None = None,
) -> ImageBindModel:
    """Build a model; `device="meta"` allocates nothing (instant even for huge).

    With `seed`, the init is drawn from that seed without touching the caller's global RNG state.
    """
    if isinstance(config, str):
        config = get_config(config)
    ctx = torch.device(device) if device is not None else contextlib.nullcontext()
    rng = torch.random.fork_rng(devices=[]) if seed is not None else contextlib.nullcontext()
    with rng, ctx:
        if seed is not None:
            torch.manual_seed(seed)
        return ImageBindModel(config, modalities)


def load_imagebind_state_dict(
    model: ImageBindModel, state_dict: Mapping[str, torch.Tensor], assign: bool = False
) -> None:
    """Strict load with a readable error (counts and examples) when the layout does not match."""
    expected = model.state_dict(keep_vars=True)
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [
        f"{k}: checkpoint {list(state_dict[k].shape)} vs model {list(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or mismatched:
        raise ValueError(
            f"checkpoint does not match ImageBind {model.config.name!r} "
            f"({len(missing)} missing, {len(unexpected)} unexpected, {len(mismatched)} shape mismatches); "
            f"missing e.g. {missing[:3]}, unexpected e.g. {unexpected[:3]}, mismatched e.g. {mismatched[:3]}"
        )
    model.load_state_dict(state_dict, strict=True, assign=assign)


# --------------------------------------------------------------------------------------------------
# Encoder wrapper

_ALIASES = {"vision": "vision", "image": "vision", "video": "vision", "rgb": "vision"}
_DEFAULT_BATCH = {"vision": 32, "video": 4, "text": 256, "audio": 32, "depth": 64, "thermal": 64, "imu": 128}


def _tower(modality: str) -> str:
    m = modality.strip().lower()
    tower = _ALIASES.get(m, m)
    if tower not in MODALITIES:
        raise ValueError(
            f"unknown ImageBind modality {modality!r}; valid: {MODALITIES} (also 'image' and 'video' for vision)"
        )
    return tower


class ImageBindEncoder(Encoder):
    """One ImageBind tower as a frozen `Encoder`.

    Output: the model's own embedding, i.e. per clip L2-normalized then multiplied by the modality's
    scale (text: learned, clamped at 100; audio 20; depth 5; thermal 10; imu 5; vision 1), then
    averaged over clips for >= 5-D inputs (not renormalized).

    With a `checkpoint` the full model is built on the meta device, the file is loaded strictly
    (every key and shape must match the config) with `assign=True` from a memory map, and every other
    tower is dropped. Without one, only this tower is built, randomly initialised from `seed`.
    """

    family = "imagebind"

    def __init__(
        self,
        size: str | ImageBindConfig = "huge",
        modality: str | None = None,
        checkpoint: str | os.PathLike | None = None,
        device: str | torch.device | None = None,
        precision: str | torch.dtype | None = None,
        batch_size: int | None = None,
        preprocess_version: str = DEFAULT_PREPROCESS_VERSION,
        seed: int = 0,
    ) -> None:
        config = get_config(size) if isinstance(size, str) else size
        self.config = config
        self.modality = (modality or "vision").strip().lower()
        self.tower = _tower(self.modality)
        path = resolve_checkpoint(checkpoint, what=f"imagebind:{config.name}")
        self.checkpoint = path
        self.device, self.precision = _resolve_runtime(device, precision)

        if path is not None:
            model = build_model(config, device="meta")
            load_imagebind_state_dict(model, load_state_dict(path), assign=True)
            model.retain([self.tower])
        else:
            model = build_model(config, modalities=[self.tower], seed=seed)
        self.model = model.to(device=self.device, dtype=torch.float32).eval().requires_grad_(False)

        self.dim = config.embed_dim
        self.batch_size = int(batch_size or _DEFAULT_BATCH.get(self.modality, _DEFAULT_BATCH[self.tower]))
        fingerprint = checkpoint_fingerprint(path)
        self.fingerprint = fingerprint
        self.preprocess_version = preprocess_version
        self.encoder_id = make_encoder_id("imagebind", config.name, self.modality, fingerprint, preprocess_version)
        self.model_id = make_encoder_id("imagebind", config.name, None, fingerprint, preprocess_version)

    @property
    def scale(self) -> float:
        post = self.model.modality_postprocessors[self.tower]
        if isinstance(post, nn.Sequential):
            s = post[1]
            return float(torch.clamp(s.log_logit_scale.detach().float().exp(), max=s.max_scale))
        return 1.0

    def _prepare(self, batch: Any) -> torch.Tensor:
        tensor = super()._prepare(batch)
        if self.tower == "text":
            if tensor.is_floating_point():
                raise TypeError("ImageBind text input must be integer token ids [N,77]")
            return tensor.long()
        return tensor if tensor.is_floating_point() else tensor.float()

    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        return self.model.embed(self.tower, batch)

    def metadata(self) -> dict[str, Any]:
        meta = super().metadata()
        meta.update(
            family="imagebind",
            size=self.config.name,
            tower=self.tower,
            scale=self.scale,
            checkpoint_sha256_12=self.fingerprint,
            preprocess_version=self.preprocess_version,
        )
        return meta


def available_models() -> list[str]:
    return sorted(CONFIGS)


def create(
    model: str,
    checkpoint: str | os.PathLike | None = None,
    modality: str | None = None,
    device: str | torch.device | None = None,
    precision: str | torch.dtype | None = None,
    **kw: Any,
) -> ImageBindEncoder:
    return ImageBindEncoder(model, modality=modality, checkpoint=checkpoint, device=device, precision=precision, **kw)
