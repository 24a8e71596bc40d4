"""The modality registry: one ``ModalitySpec`` per modality, and everything that differs between
modalities derives from it (CLI choices, manifest and index columns, the build, the shard layout,
the reader's normalization, the loader's masks, augmentation, embed's inputs, report and inspect).

A new modality is one ``register_modality(ModalitySpec(...))`` call in the user's own module; the
package needs no edit. For the command line (and Ray workers, which are other processes), list such
modules in ``BINDSET_PLUGINS`` (comma-separated import paths): they are imported the first time the
registry is read, in every process.

The seven built-in specs (``preprocess.builtin_modalities``) are registered on first use, in a
fixed order: image first, because it is the anchor whose crop box every other spatial modality of a
sample is cropped with.
"""

from __future__ import annotations

import importlib
import os
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Mapping

import numpy as np

Kind = Literal["spatial", "temporal", "text"]


@dataclass(frozen=True)
class StoredArray:
    """One HDF5 dataset of a modality, stored per sample as ``<modality>/<name>``."""

    name: str
    dtype: str  # numpy dtype of the stored array ("uint8", "float16", "bool", ...)
    shape: str  # its layout, for people: "[3,S,S]", "[clips,1,mel,frames]"


@dataclass(frozen=True)
class SpatialFrame:
    """What an anchor (the image) hands its spatial partners: the crop box in source pixels and the
    source frame's size, so a partner is cropped exactly where the RGB was."""

    box: Any  # preprocess.crops.CropBox
    height: int
    width: int


@dataclass
class BuiltModality:
    """What a spec's ``preprocess`` returns for one sample: the stored arrays (keyed by array name,
    without the modality prefix) and index fields (quality figures, crop box...)."""

    arrays: dict[str, np.ndarray]
    fields: dict[str, Any] = field(default_factory=dict)
    frame: SpatialFrame | None = None  # set by an anchor


@dataclass(frozen=True)
class Preview:
    """How report shows one stored spatial modality: a 2-D image, its colour map and value range."""

    image: np.ndarray  # [H, W] float
    cmap: str = "viridis"
    vmin: float | None = None
    vmax: float | None = None
    valid: np.ndarray | None = None  # [H, W] bool: invalid pixels shown grey
    label: str = ""  # colour-bar label


@dataclass(frozen=True)
class ModalitySpec:
    """Everything bindset needs to know about one modality.

    Build (file-backed spatial modalities): ``decode(data: bytes, config, row) -> decoded``, then
    ``preprocess(decoded, config, row, frame) -> BuiltModality``; each runs as its own reject stage
    ("decode", "preprocess"). ``frame`` is the anchor's ``SpatialFrame`` (None for the anchor itself,
    and for a partner without an anchor, which is then a reject). Temporal modalities are built
    together on one clock by ``pipelines.temporal`` (``joint=True``); text from the row's caption.

    Read: ``model_ready(stored, config) -> {key: array}``, ``stored`` holding this modality's arrays
    keyed ``<modality>/<name>`` (one sample, or a batch with a leading axis: it must be elementwise).
    """

    name: str
    kind: Kind
    stored: tuple[StoredArray, ...]
    config: Callable[[], Any]  # the config class (a frozen dataclass) with ImageBind's defaults
    model_ready: Callable[[Mapping[str, np.ndarray], Any], dict[str, np.ndarray]]
    decode: Callable[[bytes, Any, dict], Any] | None = None
    preprocess: Callable[[Any, Any, dict, SpatialFrame | None], BuiltModality] | None = None
    anchor: bool = False  # its preprocess sets the sample's SpatialFrame (the image)
    joint: bool = False  # built with the other temporal modalities (pipelines.temporal)
    file_backed: bool = True  # read from a file named in the row's ``uri_<name>`` column
    mask: str | None = None  # stored array marking valid elements; model-ready key "<name>_valid"
    # Augmentation of a spatial modality: how its main array is resampled by the shared random
    # crop, and the range it is clipped to afterwards (None: not clipped). None: not cropped.
    crop_resample: str | None = None
    crop_clip: tuple[float, float] | None = None
    quality: Mapping[str, str] = field(default_factory=dict)  # index column "q_*" -> its label in report
    preview: Callable[[Mapping[str, np.ndarray]], Preview] | None = None
    missing_reason: str = ""  # "no thermal image": a partner reject's reason
    # The InfoNCE temperature a binding trainer (pipelines.binding) starts from; None: the trainer
    # does not bind this modality (it needs an ImageBind-architecture trunk for it).
    temperature: float | None = None

    def __post_init__(self) -> None:
        if not self.name.isidentifier() or self.name != self.name.lower():
            raise ValueError(f"modality name {self.name!r} must be a lower-case identifier")
        if self.kind not in ("spatial", "temporal", "text"):
            raise ValueError(f"modality {self.name!r}: kind must be spatial, temporal or text, got {self.kind!r}")
        if not self.stored:
            raise ValueError(f"modality {self.name!r} stores no array")
        names = [a.name for a in self.stored]
        if self.mask is not None and self.mask not in names:
            raise ValueError(f"modality {self.name!r}: mask {self.mask!r} is not one of its arrays {names}")
        if self.kind == "spatial" and not self.joint and (self.decode is None or self.preprocess is None):
            raise ValueError(f"spatial modality {self.name!r} needs decode and preprocess functions")
        bad = [q for q in self.quality if not q.startswith("q_")]
        if bad:
            raise ValueError(f"modality {self.name!r}: quality columns must start with 'q_', got {bad}")

    @property
    def uri_column(self) -> str | None:
        return f"uri_{self.name}" if self.file_backed else None

    @property
    def main_key(self) -> str:
        """The stored key whose presence says a sample holds this modality."""
        return f"{self.name}/{self.stored[0].name}"

    @property
    def valid_key(self) -> str | None:
        return f"{self.name}_valid" if self.mask else None

    def stored_keys(self) -> tuple[str, ...]:
        return tuple(f"{self.name}/{a.name}" for a in self.stored)

    def default_config(self) -> Any:
        return self.config()


class PluginError(ImportError):
    """A module named in ``BINDSET_PLUGINS`` cannot be imported."""


_REGISTRY: dict[str, ModalitySpec] = {}
_LOCK = threading.RLock()
_LOADED = False


def _ensure_loaded() -> None:
    global _LOADED
    if _LOADED:
        return
    with _LOCK:
        if _LOADED:
            return
        _LOADED = True  # set first: plugin modules call register_modality, which reads the registry
        importlib.import_module("preprocess.builtin_modalities")
        for module in filter(None, (m.strip() for m in os.environ.get("BINDSET_PLUGINS", "").split(","))):
            try:
                importlib.import_module(module)
            except ImportError as exc:
                raise PluginError(f"BINDSET_PLUGINS names {module!r}, which cannot be imported: {exc}") from exc


def register_modality(spec: ModalitySpec, *, replace: bool = False) -> ModalitySpec:
    """Add ``spec`` to the registry (``replace=True`` to redefine a name already registered)."""
    _ensure_loaded()
    with _LOCK:
        if spec.name in _REGISTRY and not replace and _REGISTRY[spec.name] is not spec:
            raise ValueError(f"modality {spec.name!r} is already registered (pass replace=True to redefine it)")
        _REGISTRY[spec.name] = spec
    return spec


def unregister_modality(name: str) -> None:
    """Remove a registered modality (tests that define their own)."""
    _ensure_loaded()
    with _LOCK:
        _REGISTRY.pop(name, None)


def get_modality(name: str) -> ModalitySpec:
    _ensure_loaded()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown modality {name!r}; choose one of {', '.join(_REGISTRY)}") from None


def modalities(kind: Kind | None = None) -> tuple[ModalitySpec, ...]:
    """Every registered spec in registration order (built-ins first), optionally of one kind."""
    _ensure_loaded()
    with _LOCK:
        specs = tuple(_REGISTRY.values())
    return specs if kind is None else tuple(s for s in specs if s.kind == kind)


def modality_names(kind: Kind | None = None) -> tuple[str, ...]:
    return tuple(s.name for s in modalities(kind))


def bindable_names() -> tuple[str, ...]:
    """The modalities a binding trainer binds to the frozen image space (those with a temperature)."""
    return tuple(s.name for s in modalities() if s.temperature is not None)


def uri_columns() -> dict[str, str]:
    """modality -> its manifest/index path column, for every file-backed modality."""
    return {s.name: s.uri_column for s in modalities() if s.uri_column}


def quality_labels() -> dict[str, str]:
    """Every registered per-sample quality column ("q_*") -> its label (report's axis title)."""
    return {q: text for s in modalities() for q, text in s.quality.items()}


def config_for(name: str, sections: Mapping[str, Any] | None) -> Any:
    """The config of modality ``name`` from a dataset's recorded config sections (``dataset.json``'s
    ``config``): the recorded values over the spec's defaults; unknown recorded keys are ignored (a
    dataset written by a newer version)."""
    import dataclasses

    spec = get_modality(name)
    default = spec.default_config()
    section = (sections or {}).get(name)
    if section is None or not dataclasses.is_dataclass(default):
        return default
    known = {f.name for f in dataclasses.fields(default)}
    values = {k: (tuple(v) if isinstance(v, list) else v) for k, v in section.items() if k in known}
    return dataclasses.replace(default, **values)


def model_ready(stored: Mapping[str, np.ndarray], sections: Mapping[str, Any] | None) -> dict[str, np.ndarray]:
    """Stored arrays of one sample (or a batch of one modality) -> model-ready arrays of every
    modality they hold, normalized with the dataset's recorded configs."""
    out: dict[str, np.ndarray] = {}
    for spec in modalities():
        if spec.main_key in stored:
            own = {k: stored[k] for k in spec.stored_keys() if k in stored}
            out.update(spec.model_ready(own, config_for(spec.name, sections)))
    return out


__all__ = [
    "BuiltModality",
    "ModalitySpec",
    "PluginError",
    "Preview",
    "SpatialFrame",
    "StoredArray",
    "config_for",
    "bindable_names",
    "get_modality",
    "modalities",
    "modality_names",
    "model_ready",
    "quality_labels",
    "register_modality",
    "unregister_modality",
    "uri_columns",
]
