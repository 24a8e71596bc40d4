"""Training-time augmentations, as ImageBind/Omnivore trained with them, on the arrays a shard stores.

What is augmented (each part optional, see ``AugmentConfig``):

- **random resized crop + horizontal flip**, one box per sample shared by RGB and its depth or
  thermal map (the stored crops are already aligned, so one box on the stored ``S x S`` grid keeps
  them aligned): RGB bicubic, depth disparity and validity mask nearest (never blended), thermal
  bicubic clipped back to [0, 1]. Torchvision ``RandomResizedCrop`` semantics
  (``preprocess.crops.random_resized_crop_box``);
- **colour jitter** on RGB only (brightness, contrast, saturation; applied in a random order, as
  torchvision's ``ColorJitter``); depth and thermal carry no colour;
- **random erasing** of a rectangle of the *normalized* tensors (timm's "pixel" mode: per-pixel
  N(0, 1) values, which is noise at the data's own scale after normalization). Each spatial modality
  draws its own rectangle; on depth the rectangle becomes invalid (disparity 0, ``depth_valid``
  False), i.e. looks like a sensor dropout the model already knows how to read;
- **frequency masking** of the audio log-mel (SpecAugment, torchaudio ``FrequencyMasking``
  style: a band of up to ``F`` mel bins (width uniform in ``0..F``) per clip set to 0 in normalized
  units, i.e. to the dataset mean); time masking is available and off by default.

Video frames, IMU windows and text tokens are passed through untouched.

Style (torchvision v2): every random number is drawn first by ``draw_params`` into a small
``AugmentParams`` record, then applied deterministically by ``augment_stored`` (stored arrays, before
normalization) and ``augment_model_ready`` (normalized arrays, after it). Nothing reads global
random state and no input array is ever modified. ``sample_rng(seed, epoch, sample_id)`` gives the
generator of one sample in one epoch: the same triple always gives the same augmentation, whatever
worker, rank or order reads the sample.

Array layouts (keys as in a shard): ``image/pixels [3,S,S] uint8``, ``depth/disparity [1,S,S]``
float, ``depth/valid [1,S,S] bool``, ``thermal/intensity [1,S,S]`` float in [0,1],
``audio/log_mel [clips,1,mel,frames]``; model-ready keys ``image``, ``depth``, ``depth_valid``,
``thermal``, ``audio`` (what ``storage.reader.DatasetReader.model_ready`` returns).

Defaults (``AugmentConfig()``): the recipe of the ImageBind/Omnivore papers as far as they publish
it: crop scale (0.08, 1), ratio (3/4, 4/3), flip 0.5, jitter 0.4/0.4/0.4, random erasing p=0.25,
frequency masking up to 12 bins. RandAugment, mixup and cutmix are not implemented.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np

from preprocess.crops import CropBox, apply_crop, random_resized_crop_box


def _croppable():
    """The registered modalities a random crop applies to (spatial ones with a ``crop_resample``),
    in registry order: the order augmentation parameters are drawn in."""
    from preprocess.registry import modalities

    return tuple(s for s in modalities("spatial") if s.crop_resample)


def spatial_modalities() -> tuple[str, ...]:
    return tuple(s.name for s in _croppable())


_JITTER_OPS = ("brightness", "contrast", "saturation")
# ITU-R 601 luma, as torchvision's rgb_to_grayscale.
_LUMA = np.array([0.2989, 0.587, 0.114], np.float32).reshape(3, 1, 1)


@dataclass(frozen=True)
class AugmentConfig:
    """Which training augmentations run and how strong they are. ``AugmentConfig.off()`` disables all."""

    crop: bool = True
    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_prob: float = 0.5
    size: int | None = None  # output side of spatial crops; None keeps the stored size (224)
    # Colour jitter factors are drawn uniformly from [max(0, 1 - s), 1 + s]; 0 disables that part.
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    erase_prob: float = 0.25
    erase_scale: tuple[float, float] = (0.02, 1 / 3)
    erase_ratio: tuple[float, float] = (0.3, 3.3)
    erase_modalities: tuple[str, ...] | None = None  # None: every spatial modality
    freq_mask_bins: int = 12  # F: each mask spans uniform{0..F} mel bins; 0 disables
    freq_masks: int = 1  # masks per clip
    time_mask_frames: int = 0  # T for SpecAugment time masking; 0 (default) disables
    time_masks: int = 1

    def __post_init__(self) -> None:
        lo, hi = self.crop_scale
        if not 0.0 < lo <= hi <= 1.0:
            raise ValueError(f"crop_scale must satisfy 0 < min <= max <= 1, got {self.crop_scale}")
        if not 0.0 < self.crop_ratio[0] <= self.crop_ratio[1]:
            raise ValueError(f"crop_ratio must satisfy 0 < min <= max, got {self.crop_ratio}")
        for name in ("flip_prob", "erase_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        for name in _JITTER_OPS:
            if getattr(self, name) < 0:
                raise ValueError(f"{name} jitter strength must be >= 0, got {getattr(self, name)}")
        if not 0.0 < self.erase_scale[0] <= self.erase_scale[1] <= 1.0:
            raise ValueError(f"erase_scale must satisfy 0 < min <= max <= 1, got {self.erase_scale}")
        if not 0.0 < self.erase_ratio[0] <= self.erase_ratio[1]:
            raise ValueError(f"erase_ratio must satisfy 0 < min <= max, got {self.erase_ratio}")
        spatial = spatial_modalities()
        unknown = set(self.erase_modalities or ()) - set(spatial)
        if unknown:
            raise ValueError(f"erase_modalities {sorted(unknown)} are not spatial; choose from {spatial}")
        for name in ("freq_mask_bins", "freq_masks", "time_mask_frames", "time_masks"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.size is not None and self.size < 1:
            raise ValueError(f"size must be positive, got {self.size}")

    @classmethod
    def off(cls) -> "AugmentConfig":
        """Every augmentation disabled (the identity, also in training mode)."""
        return cls(
            crop=False,
            flip_prob=0.0,
            brightness=0.0,
            contrast=0.0,
            saturation=0.0,
            erase_prob=0.0,
            freq_mask_bins=0,
            time_mask_frames=0,
        )


@dataclass(frozen=True)
class EraseRect:
    top: int
    left: int
    height: int
    width: int
    seed: int  # of the N(0,1) fill values


@dataclass(frozen=True)
class AugmentParams:
    """Every random choice for one sample. The default instance is the identity."""

    box: CropBox | None = None
    size: int | None = None
    jitter: tuple[tuple[str, float], ...] = ()  # (op, factor) in application order
    erase: Mapping[str, EraseRect] = field(default_factory=dict)  # per spatial modality
    freq_masks: tuple[tuple[tuple[int, int], ...], ...] = ()  # per clip: ((first bin, width), ...)
    time_masks: tuple[tuple[tuple[int, int], ...], ...] = ()  # per clip: ((first frame, width), ...)

    @property
    def is_identity(self) -> bool:
        return self.box is None and not self.jitter and not self.erase and not self.freq_masks and not self.time_masks


def sample_rng(seed: int, epoch: int, sample_id: str) -> np.random.Generator:
    """The generator of one sample in one epoch. A stable hash (blake2b) of the sample id, never
    Python's salted ``hash()``, so every process, worker and rank agrees."""
    if int(seed) < 0 or int(epoch) < 0:
        raise ValueError(f"seed and epoch must be >= 0, got {seed}, {epoch}")
    digest = hashlib.blake2b(str(sample_id).encode("utf-8"), digest_size=16).digest()
    words = [int.from_bytes(digest[i : i + 4], "little") for i in range(0, 16, 4)]
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(epoch), *words]))


def _spatial_size(stored: Mapping[str, np.ndarray]) -> tuple[int, int] | None:
    sizes = {tuple(np.shape(stored[s.main_key])[-2:]) for s in _croppable() if s.main_key in stored}
    if not sizes:
        return None
    if len(sizes) > 1:
        raise ValueError(f"spatial modalities of one sample must share the stored grid, got sizes {sorted(sizes)}")
    return sizes.pop()  # type: ignore[return-value]


def _erase_rect(rng: np.random.Generator, h: int, w: int, cfg: AugmentConfig) -> EraseRect | None:
    """timm ``RandomErasing`` geometry: area fraction uniform in ``erase_scale``, aspect log-uniform
    in ``erase_ratio``, up to 10 tries to fit inside the frame (none fitting: no erasing)."""
    log_ratio = (math.log(cfg.erase_ratio[0]), math.log(cfg.erase_ratio[1]))
    for _ in range(10):
        area = h * w * rng.uniform(*cfg.erase_scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        eh = int(round(math.sqrt(area * aspect)))
        ew = int(round(math.sqrt(area / aspect)))
        if 0 < eh < h and 0 < ew < w:
            top = int(rng.integers(0, h - eh + 1))
            left = int(rng.integers(0, w - ew + 1))
            return EraseRect(top, left, eh, ew, int(rng.integers(0, 2**63 - 1)))
    return None


def _bands(rng: np.random.Generator, clips: int, count: int, max_width: int, extent: int) -> tuple:
    """SpecAugment masking: width uniform in ``0..max_width`` (clamped to the axis), start uniform
    in ``0..extent - width``; independent per clip."""
    out = []
    for _ in range(clips):
        bands = []
        for _ in range(count):
            width = min(int(rng.integers(0, max_width + 1)), extent)
            start = int(rng.integers(0, extent - width + 1))
            bands.append((start, width))
        out.append(tuple(bands))
    return tuple(out)


def draw_params(
    stored: Mapping[str, np.ndarray], cfg: AugmentConfig | None, rng: np.random.Generator, train: bool = True
) -> AugmentParams:
    """All random choices for one sample, from the shapes of its stored arrays. In evaluation mode
    (``train=False``) or without a config: the identity, and ``rng`` is not touched."""
    if not train or cfg is None:
        return AugmentParams()
    hw = _spatial_size(stored)
    box = None
    size = None
    if hw is not None:
        size = cfg.size or hw[0]
        if cfg.crop:
            box = random_resized_crop_box(rng, hw[0], hw[1], cfg.crop_scale, cfg.crop_ratio, cfg.flip_prob)
        elif cfg.flip_prob > 0:
            box = CropBox(0.0, 0.0, 1.0, 1.0, flip=bool(rng.random() < cfg.flip_prob))
        if box is None and size == hw[0] == hw[1]:
            size = None
        elif box is None:
            box = CropBox(0.0, 0.0, 1.0, 1.0)  # only a resize to cfg.size
    jitter: list[tuple[str, float]] = []
    if "image/pixels" in stored:
        for k in rng.permutation(len(_JITTER_OPS)):
            op = _JITTER_OPS[int(k)]
            strength = getattr(cfg, op)
            if strength > 0:
                jitter.append((op, float(rng.uniform(max(0.0, 1.0 - strength), 1.0 + strength))))
    erase: dict[str, EraseRect] = {}
    if hw is not None and cfg.erase_prob > 0:
        out_h, out_w = (size, size) if size is not None else hw
        for spec in _croppable():
            chosen = cfg.erase_modalities is None or spec.name in cfg.erase_modalities
            if chosen and spec.main_key in stored and rng.random() < cfg.erase_prob:
                rect = _erase_rect(rng, out_h, out_w, cfg)
                if rect is not None:
                    erase[spec.name] = rect
    freq_masks = time_masks = ()
    if "audio/log_mel" in stored:
        clips, _, mels, frames = np.shape(stored["audio/log_mel"])
        if cfg.freq_mask_bins > 0 and cfg.freq_masks > 0:
            freq_masks = _bands(rng, clips, cfg.freq_masks, cfg.freq_mask_bins, mels)
        if cfg.time_mask_frames > 0 and cfg.time_masks > 0:
            time_masks = _bands(rng, clips, cfg.time_masks, cfg.time_mask_frames, frames)
    return AugmentParams(
        box=box, size=size, jitter=tuple(jitter), erase=erase, freq_masks=freq_masks, time_masks=time_masks
    )


# -- kernels: deterministic, new arrays out -------------------------------------------------------
def crop_channels(array: np.ndarray, box: CropBox, size: int, resample: str) -> np.ndarray:
    """``[C,H,W]`` -> ``[C,size,size]`` of the same dtype: ``box`` cut and resized, flipped if asked."""
    if array.ndim != 3:
        raise ValueError(f"expected a [C,H,W] array, got shape {array.shape}")
    if array.shape[0] == 3 and array.dtype == np.uint8:
        # One PIL RGB call: the same 8-bit path as the build's crop.
        return np.ascontiguousarray(apply_crop(array.transpose(1, 2, 0), box, size, resample).transpose(2, 0, 1))
    return np.stack([apply_crop(plane, box, size, resample) for plane in array])


def color_jitter(pixels: np.ndarray, ops: tuple[tuple[str, float], ...]) -> np.ndarray:
    """``[3,H,W] uint8`` RGB -> jittered ``[3,H,W] uint8``; ``ops`` as drawn by ``draw_params``.
    Computed in float32 with a clamp after every op (as torchvision's ``_blend``), rounded once."""
    if pixels.ndim != 3 or pixels.shape[0] != 3:
        raise ValueError(f"expected [3,H,W] RGB pixels, got shape {pixels.shape}")
    x = pixels.astype(np.float32)
    for op, factor in ops:
        f = np.float32(factor)
        if op == "brightness":
            x = x * f
        elif op == "contrast":
            x = x * f + (1 - f) * (x * _LUMA).sum(axis=0).mean()
        elif op == "saturation":
            x = x * f + (1 - f) * (x * _LUMA).sum(axis=0, keepdims=True)
        else:
            raise ValueError(f"unknown jitter op {op!r}")
        x = np.clip(x, 0.0, 255.0)
    return np.rint(x).astype(np.uint8)


def erase(x: np.ndarray, rect: EraseRect) -> np.ndarray:
    """``[C,H,W]`` float -> a copy with ``rect`` filled by N(0,1) values (seeded by the rect)."""
    out = np.array(x, dtype=np.float32, copy=True)
    noise = np.random.default_rng(rect.seed).standard_normal((out.shape[0], rect.height, rect.width), dtype=np.float32)
    out[:, rect.top : rect.top + rect.height, rect.left : rect.left + rect.width] = noise
    return out


def mask_bands(log_mel: np.ndarray, freq_masks: tuple = (), time_masks: tuple = (), value: float = 0.0) -> np.ndarray:
    """``[clips,1,mel,frames]`` -> a copy with each clip's frequency and time bands set to ``value``."""
    out = np.array(log_mel, dtype=np.float32, copy=True)
    for clip, bands in enumerate(freq_masks):
        for start, width in bands:
            out[clip, ..., start : start + width, :] = value
    for clip, bands in enumerate(time_masks):
        for start, width in bands:
            out[clip, ..., start : start + width] = value
    return out


def augment_stored(stored: Mapping[str, np.ndarray], params: AugmentParams) -> dict[str, np.ndarray]:
    """Stored arrays -> augmented stored arrays (crop/flip of every spatial modality with the one
    box, colour jitter of RGB). Keys it does not augment keep their (unmodified) arrays."""
    out = dict(stored)
    if params.box is not None:
        size = params.size or _spatial_size(stored)[0]  # type: ignore[index]
        for spec in _croppable():
            key = spec.main_key
            if key not in stored:
                continue
            array = np.asarray(stored[key])
            if spec.crop_clip is not None:  # a bounded range (thermal [0,1]): no bicubic overshoot
                cropped = crop_channels(array.astype(np.float32), params.box, size, spec.crop_resample)
                out[key] = np.clip(cropped, *spec.crop_clip)
            else:
                out[key] = crop_channels(array, params.box, size, spec.crop_resample)
            mask_key = f"{spec.name}/{spec.mask}" if spec.mask else None
            if mask_key in stored:
                out[mask_key] = crop_channels(np.asarray(stored[mask_key], bool), params.box, size, "nearest")
    if params.jitter and "image/pixels" in out:
        out["image/pixels"] = color_jitter(np.asarray(out["image/pixels"]), params.jitter)
    return out


def augment_model_ready(ready: Mapping[str, np.ndarray], params: AugmentParams) -> dict[str, np.ndarray]:
    """Normalized arrays -> augmented ones (random erasing, audio band masking)."""
    out = dict(ready)
    from preprocess.registry import get_modality

    for modality, rect in params.erase.items():
        if modality not in ready:
            continue
        valid_key = get_modality(modality).valid_key
        if valid_key is not None:
            # An erased patch of a masked modality (depth) is a dropout: invalid, hence 0, as
            # every invalid pixel of it.
            keep = np.ones(np.shape(ready[modality]), bool)
            keep[..., rect.top : rect.top + rect.height, rect.left : rect.left + rect.width] = False
            out[modality] = np.where(keep, ready[modality], np.float32(0.0)).astype(np.float32)
            if valid_key in ready:
                out[valid_key] = np.asarray(ready[valid_key], bool) & keep
        else:
            out[modality] = erase(ready[modality], rect)
    if (params.freq_masks or params.time_masks) and "audio" in ready:
        out["audio"] = mask_bands(ready["audio"], params.freq_masks, params.time_masks)
    return out


def augment(
    stored: Mapping[str, np.ndarray],
    cfg: AugmentConfig | None,
    rng: np.random.Generator,
    normalize: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]],
    train: bool = True,
) -> dict[str, np.ndarray]:
    """Stored arrays -> augmented model-ready arrays in one call: draw, augment the stored arrays,
    ``normalize`` them (e.g. ``DatasetReader.model_ready``), augment the normalized ones. In
    evaluation mode this is exactly ``normalize(stored)``."""
    params = draw_params(stored, cfg, rng, train)
    if params.is_identity:
        return normalize(dict(stored))
    return augment_model_ready(normalize(augment_stored(stored, params)), params)


__all__ = [
    "AugmentConfig",
    "AugmentParams",
    "EraseRect",
    "augment",
    "augment_model_ready",
    "augment_stored",
    "color_jitter",
    "crop_channels",
    "draw_params",
    "erase",
    "mask_bands",
    "sample_rng",
    "spatial_modalities",
]
