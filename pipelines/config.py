"""BuildConfig: every knob of a dataset build, one frozen dataclass per modality inside.

Its ``to_dict`` is what ``dataset.json`` records and hashes: a rerun with a different config is
detected instead of silently mixing two preprocessings in one dataset.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from preprocess.audio import AudioConfig
from preprocess.depth import DepthConfig
from preprocess.image import ImageConfig
from preprocess.imu import ImuConfig
from preprocess.text import TextConfig
from preprocess.thermal import ThermalConfig
from preprocess.video import VideoConfig

PREPROCESS_VERSION = 1  # bump when stored content changes for the same config


@dataclass(frozen=True)
class FilterConfig:
    """Optional quality filters on the per-sample figures of the index (None = off). A sample that
    fails one is not stored and is counted in rejects with stage "filter" and the figure's name."""

    min_depth_valid_fraction: float | None = None
    max_audio_silence_fraction: float | None = None
    min_thermal_dynamic_range: float | None = None
    max_imu_gap_fraction: float | None = None
    max_imu_saturation_fraction: float | None = None
    min_image_mean: float | None = None  # drops black frames
    max_image_mean: float | None = None  # drops blown-out frames

    def failures(self, fields: dict[str, Any]) -> list[str]:
        """Names and values of the figures that fail, for the reject message."""
        checks = (
            ("q_depth_valid_fraction", self.min_depth_valid_fraction, min),
            ("q_audio_silence_fraction", self.max_audio_silence_fraction, max),
            ("q_thermal_dynamic_range", self.min_thermal_dynamic_range, min),
            ("q_imu_gap_fraction", self.max_imu_gap_fraction, max),
            ("q_imu_saturation_fraction", self.max_imu_saturation_fraction, max),
            ("q_image_mean", self.min_image_mean, min),
            ("q_image_mean", self.max_image_mean, max),
        )
        out = []
        for column, bound, kind in checks:
            value = fields.get(column)
            if bound is None or value is None:
                continue
            if (kind is min and value < bound) or (kind is max and value > bound):
                out.append(f"{column}={value:.3f} {'<' if kind is min else '>'} {bound}")
        return out


@dataclass(frozen=True)
class BuildConfig:
    image: ImageConfig = field(default_factory=ImageConfig)
    depth: DepthConfig = field(default_factory=DepthConfig)
    thermal: ThermalConfig = field(default_factory=ThermalConfig)
    text: TextConfig = field(default_factory=TextConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    video: VideoConfig = field(default_factory=VideoConfig)
    imu: ImuConfig = field(default_factory=ImuConfig)
    filters: FilterConfig = field(default_factory=FilterConfig)
    shard_size: int = 256
    # Store a sample that lacks a partner its layout requires (AudioSet video without audio...)
    # instead of rejecting it; the build summary counts such partial samples separately.
    keep_partial: bool = False
    # Overridden configs of modalities registered outside the package (preprocess.registry),
    # modality name -> its config; a registered modality not named here uses its defaults.
    extra: dict[str, Any] = field(default_factory=dict)

    def section(self, modality: str) -> Any:
        """The config of one modality: a field of this class, or a registered modality's."""
        if modality not in ("filters", "extra") and dataclasses.is_dataclass(getattr(self, modality, None)):
            return getattr(self, modality)
        if modality in self.extra:
            return self.extra[modality]
        from preprocess.registry import get_modality

        return get_modality(modality).default_config()

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["preprocess_version"] = PREPROCESS_VERSION
        if not d["keep_partial"]:
            del d["keep_partial"]  # the default stays out of the hash: datasets built before it resume
        del d["extra"]  # registered modalities' overrides sit beside the built-in sections
        d.update({name: dataclasses.asdict(cfg) for name, cfg in sorted(self.extra.items())})
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "BuildConfig":
        """Build from nested overrides, naming any unknown key (``{"depth": {"max_depth_m": 10}}``)."""
        from preprocess.registry import modality_names

        data = {k: v for k, v in data.items() if k not in ("preprocess_version", "extra")}
        fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "extra"}
        registered = set(modality_names()) - fields.keys()
        unknown = set(data) - fields.keys() - registered
        if unknown:
            valid = sorted(fields.keys() | registered)
            raise ValueError(f"unknown build config key(s): {sorted(unknown)}; valid: {valid}")
        kwargs: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        default = cls()
        for name, value in data.items():
            if name in registered:
                extra[name] = _replace_dataclass(default.section(name), value, name)
                continue
            current = getattr(default, name)
            if dataclasses.is_dataclass(current):
                kwargs[name] = _replace_dataclass(current, value, name)
            else:
                kwargs[name] = value
        return cls(**kwargs, extra=extra)


def _replace_dataclass(current: Any, overrides: dict[str, Any], prefix: str) -> Any:
    if not isinstance(overrides, dict):
        raise ValueError(f"{prefix} must be a table of settings, got {overrides!r}")
    valid = {f.name for f in dataclasses.fields(current)}
    unknown = set(overrides) - valid
    if unknown:
        raise ValueError(f"unknown key(s) {sorted(f'{prefix}.{k}' for k in unknown)}; valid: {sorted(valid)}")
    types = {f.name: f.type for f in dataclasses.fields(current)}
    converted = {}
    for k, v in overrides.items():
        _check_value_type(f"{prefix}.{k}", types[k], v)
        # TOML/JSON give lists where the dataclasses hold tuples; keep hashing and equality stable.
        if isinstance(getattr(current, k), tuple) and isinstance(v, list):
            v = tuple(v)
        if isinstance(getattr(current, k), dict) and isinstance(v, dict):
            v = {**getattr(current, k), **v}
        converted[k] = v
    return _validated(current, converted, prefix)


def _validated(current: Any, converted: dict[str, Any], prefix: str) -> Any:
    """The config with the overrides. Each overridden field is checked against its annotation by
    pydantic, strictly (the elements of tuples too: ``percentiles = ["a", 99]``), then the config's
    own checks run; a failure is one ValueError naming the key and the value. Values are kept as
    given, so the recorded config and its hash are those of earlier versions (10 stays 10)."""
    import typing

    from pydantic import TypeAdapter, ValidationError

    hints = typing.get_type_hints(type(current))
    for key, value in converted.items():
        try:
            TypeAdapter(hints[key]).validate_python(value, strict=True)
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(part) for part in (prefix, key, *error["loc"]))
            raise ValueError(f"{where} = {error.get('input')!r}: {error['msg']}") from None
    try:
        return dataclasses.replace(current, **converted)
    except (TypeError, ValueError) as exc:  # the config's own checks (__post_init__)
        raise ValueError(f"{prefix}: {exc}") from None


#: what a TOML/JSON value may be for a field annotated with each simple type
_ACCEPTS: dict[str, tuple[type, ...]] = {
    "int": (int,),
    "float": (int, float),
    "str": (str,),
    "bool": (bool,),
    "tuple": (list, tuple),
    "list": (list, tuple),
    "dict": (dict,),
}


def _check_value_type(key: str, annotation: Any, value: Any) -> None:
    """A config value of the wrong type is an error naming its key (not a failure deep in a build)."""
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    options = [part.strip().split("[", 1)[0] for part in text.split("|")]
    if value is None and "None" in options:
        return
    accepted = tuple(t for name in options for t in _ACCEPTS.get(name, ()))
    if not accepted or any(name not in _ACCEPTS and name != "None" for name in options):
        return  # an annotation this check does not know: leave it to the dataclass
    if isinstance(value, bool) and bool not in accepted or not isinstance(value, accepted):
        raise ValueError(f"{key} = {value!r}: expected {text}")
