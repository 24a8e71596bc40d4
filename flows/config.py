"""A dataset build described in a TOML file, validated with errors that name the bad key.

```toml
[dataset]
out = "/data/shards/sunrgbd"
shard_size = 256

[[sources]]
layout = "sunrgbd"
root = "/data/SUNRGBD"
name = "sun"                  # optional; also: split, options = {depth_dir = "depth_bfx"}

[preprocess.depth]            # overrides of the frozen per-modality configs
max_depth_m = 10.0

[executor]
kind = "ray"                  # or "local"
address = "ray://head:10001"  # optional; default RAY_ADDRESS, else a local Ray

[[encoders]]                  # run after the build (embed-backfill of what is missing)
name = "openclip:ViT-B-32"
checkpoint = "/ckpt/vit-b-32.safetensors"
modalities = ["image"]        # optional, default ["image"]

[schedule]
cron = "0 3 * * *"
```
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatasetSection(_Strict):
    out: Path
    shard_size: int = Field(256, gt=0)
    overwrite: bool = False


class SourceSection(_Strict):
    layout: str
    root: Path
    name: str | None = None
    split: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("layout")
    @classmethod
    def _known_layout(cls, value: str) -> str:
        from pipelines.sources import LAYOUTS

        if value not in LAYOUTS:
            raise ValueError(f"unknown layout {value!r}; choose one of {', '.join(LAYOUTS)}")
        return value


class ExecutorSection(_Strict):
    kind: Literal["ray", "local"] = "ray"
    address: str | None = None
    max_in_flight: int | None = Field(None, gt=0)


class EncoderSection(_Strict):
    name: str
    checkpoint: Path | None = None
    modalities: list[str] | None = None
    #: no checkpoint: a seeded random init. Must be asked for (random vectors look like real ones).
    random_weights: bool = False

    @model_validator(mode="after")
    def _weights_given(self) -> "EncoderSection":
        if self.checkpoint is None and not self.random_weights:
            raise ValueError(f"encoder {self.name!r} needs checkpoint = a local weights file (nothing is "
                             f"downloaded), or random_weights = true for a smoke test")
        return self


class ScheduleSection(_Strict):
    cron: str | None = None
    timezone: str = "UTC"


class RunConfig(_Strict):
    dataset: DatasetSection
    sources: list[SourceSection] = Field(min_length=1)
    preprocess: dict[str, dict[str, Any]] = Field(default_factory=dict)
    executor: ExecutorSection = ExecutorSection()
    encoders: list[EncoderSection] = Field(default_factory=list)
    schedule: ScheduleSection = ScheduleSection()

    def build_config(self):
        from pipelines.config import BuildConfig

        return BuildConfig.from_dict({**self.preprocess, "shard_size": self.dataset.shard_size})

    def create_sources(self):
        from pipelines.sources import create_source

        out = []
        for s in self.sources:
            kwargs = {k: v for k, v in (("name", s.name), ("split", s.split)) if v is not None}
            out.append(create_source(s.layout, s.root, **kwargs, **s.options))
        return out


class ConfigError(ValueError):
    pass


def _location(loc: tuple) -> str:
    return ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in loc).replace(".[", "[")


def parse_run_config(data: dict[str, Any], origin: str = "config") -> RunConfig:
    try:
        config = RunConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{_location(e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{origin}: {problems}") from None
    try:
        config.build_config()  # preprocessing overrides name their own bad keys
    except ValueError as exc:
        raise ConfigError(f"{origin}: preprocess: {exc}") from None
    return config


def load_run_config(path: str | Path) -> RunConfig:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    # Relative paths in the file are relative to the file, not to wherever the command runs.
    base = path.resolve().parent
    for section, key in (("dataset", "out"),):
        if isinstance(data.get(section, {}).get(key), str):
            data[section][key] = str(base / data[section][key])
    for src in data.get("sources", []) or []:
        if isinstance(src, dict) and isinstance(src.get("root"), str):
            src["root"] = str(base / src["root"])
    return parse_run_config(data, str(path))
