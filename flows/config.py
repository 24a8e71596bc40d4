"""A dataset build described in a TOML file, validated with errors that name the bad key.

Every root (``dataset.out``, ``sources[].root``, ``encoders[].checkpoint``) is a local path (relative
to the TOML file) or a URL (``s3://``, ``gs://``, ``az://``, ``file://``).

```toml
[dataset]
out = "/data/shards/sunrgbd"  # or "s3://bucket/shards/sunrgbd"
shard_size = 256

[[sources]]
layout = "sunrgbd"
root = "/data/SUNRGBD"
name = "sun"                  # optional; also: split, options = {depth_dir = "depth_bfx"}

[preprocess.depth]            # overrides of the frozen per-modality configs
max_depth_m = 10.0

[executor]
kind = "auto"                 # default: Ray when a cluster is configured or the build is large,
                              # else in-process; "ray" or "local" to choose
address = "ray://head:10001"  # optional; default RAY_ADDRESS, else a local Ray
max_in_flight = 64            # optional; default 2 x the cluster's CPUs

[storage]                     # object-store options (obstore / Polars keys), under --storage-option
options = { aws_region = "eu-west-1", aws_endpoint = "http://127.0.0.1:9000", aws_allow_http = true }

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
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _url_or_path(value: str) -> str:
    """A malformed URL is an error of its key, not of the build that would mangle it later."""
    from storage.location import as_location

    as_location(value)
    return value


Root = Annotated[str, AfterValidator(_url_or_path)]


class DatasetSection(_Strict):
    out: Root
    shard_size: int = Field(256, gt=0)
    overwrite: bool = False
    retry_rejects: bool = False  # re-attempt the standing transient rejects as new shards
    keep_partial: bool = False  # store samples missing a partner of their layout (counted apart)


class SourceSection(_Strict):
    layout: str
    root: Root
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
    kind: Literal["auto", "ray", "local"] = "auto"
    address: str | None = None
    max_in_flight: int | None = Field(None, gt=0)


class EncoderSection(_Strict):
    name: str
    checkpoint: Root | None = None
    modalities: list[str] | None = None
    #: no checkpoint: a seeded random init. Must be asked for (random vectors look like real ones).
    random_weights: bool = False

    @model_validator(mode="after")
    def _weights_given(self) -> "EncoderSection":
        if self.checkpoint is None and not self.random_weights:
            raise ValueError(
                f"encoder {self.name!r} needs checkpoint = a local weights file (nothing is "
                f"downloaded), or random_weights = true for a smoke test"
            )
        return self


class ScheduleSection(_Strict):
    cron: str | None = None
    timezone: str = "UTC"


class StorageSection(_Strict):
    #: obstore/Polars storage options (``aws_region``, ``aws_endpoint``, ``aws_allow_http``...)
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("options")
    @classmethod
    def _scalars(cls, options: dict[str, Any]) -> dict[str, Any]:
        for key, value in options.items():
            if not isinstance(value, (str, bool, int, float)):
                raise ValueError(f"{key} = {value!r}: expected a string, number or boolean")
        return options

    def strings(self) -> dict[str, str]:
        return {k: (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in self.options.items()}


class RunConfig(_Strict):
    dataset: DatasetSection
    sources: list[SourceSection] = Field(min_length=1)
    preprocess: dict[str, dict[str, Any]] = Field(default_factory=dict)
    executor: ExecutorSection = ExecutorSection()
    encoders: list[EncoderSection] = Field(default_factory=list)
    schedule: ScheduleSection = ScheduleSection()
    storage: StorageSection = StorageSection()

    def build_config(self):
        from pipelines.config import BuildConfig

        overrides = {**self.preprocess, "shard_size": self.dataset.shard_size}
        if self.dataset.keep_partial:
            overrides["keep_partial"] = True
        return BuildConfig.from_dict(overrides)

    def create_sources(self):
        from pipelines.sources import create_source

        out = []
        for s in self.sources:
            kwargs = {k: v for k, v in (("name", s.name), ("split", s.split)) if v is not None}
            out.append(create_source(s.layout, s.root, **kwargs, **s.options))
        return out


class ConfigError(ValueError):
    """A bad config: one line naming the file, the key and the value."""


def _location(loc: tuple) -> str:
    return ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in loc).replace(".[", "[")


def _problem(error: dict, names: dict[str, str]) -> str:
    where = _location(error["loc"])
    where = names.get(where, where)
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "missing":
        return f"{where}: missing"
    if error["type"] == "extra_forbidden":
        return f"{where}: unknown key"
    value = error.get("input")
    if isinstance(value, (dict, list)):
        return f"{where}: {message}"
    return f"{where} = {value!r}: {message}"


def _prefixed(origin: str | None, message: str) -> str:
    return f"{origin}: {message}" if origin else message


def parse_run_config(
    data: dict[str, Any], origin: str | None = "config", names: dict[str, str] | None = None
) -> RunConfig:
    """Validate a run config. Errors start with ``origin`` (the file) and name each bad key, by its
    path in the file or by ``names`` (the command-line options it came from)."""
    names = names or {}
    try:
        config = RunConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(_problem(e, names) for e in exc.errors())
        raise ConfigError(_prefixed(origin, problems)) from None
    try:
        config.build_config()  # preprocessing overrides name their own bad keys
    except (TypeError, ValueError) as exc:
        raise ConfigError(_prefixed(origin, f"{names.get('preprocess', 'preprocess')}: {exc}")) from None
    return config


def read_text(path: str | Path) -> str:
    """A config file's text: a local file or an object (``s3://.../nightly.toml``)."""
    from storage.location import as_location

    location = as_location(str(path))
    try:
        return location.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a config file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file") from None


def load_overrides(path: str | Path) -> dict[str, Any]:
    """``bindset build --config``: preprocessing overrides from TOML (or JSON), checked here so a bad
    key names this file."""
    import json

    text = read_text(path)
    try:
        data = json.loads(text) if str(path).endswith(".json") else tomllib.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not valid {'JSON' if str(path).endswith('.json') else 'TOML'} ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a table of modality settings")
    from pipelines.config import BuildConfig

    try:
        BuildConfig.from_dict(data)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return data


def load_run_config(path: str | Path) -> RunConfig:
    from storage.location import as_location, is_url
    from storage.object_path import ObjectPath
    from storage.object_store import LocationError

    location = as_location(str(path))
    text = read_text(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    # Relative paths in the file are relative to the file, not to wherever the command runs.
    base = location.parent if isinstance(location, ObjectPath) else Path(location).resolve().parent

    def rebase(table: Any, key: str) -> None:
        if not isinstance(table, dict) or not isinstance(table.get(key), str) or is_url(table[key]):
            return
        try:
            as_location(table[key])
        except LocationError:
            return  # a malformed URL ("s3:/x"): validation names it as it was written
        table[key] = str(base / Path(table[key]).expanduser())

    rebase(data.get("dataset"), "out")
    for src in data.get("sources", []) or []:
        rebase(src, "root")
    for enc in data.get("encoders", []) or []:
        rebase(enc, "checkpoint")
    return parse_run_config(data, str(path))


def check_locations(run: RunConfig, origin: str | None = "config", names: dict[str, str] | None = None) -> None:
    """Every root of the config can be used, before anything starts: source roots exist (URLs: the
    bucket answers these credentials), the output root can be written, checkpoints exist. The error
    names the key."""
    from flows.runtime import check_write

    checks = [(f"sources[{i}].root", s.root, _source_check(s.layout)) for i, s in enumerate(run.sources)]
    checks.append(("dataset.out", run.dataset.out, check_write))
    checks += [
        (f"encoders[{i}].checkpoint", e.checkpoint, _check_file) for i, e in enumerate(run.encoders) if e.checkpoint
    ]
    names = names or {}
    for key, value, check in checks:
        key = names.get(key, key)
        try:
            check(value, key)
        except OSError as exc:  # StoreError is one: missing bucket, no credentials, denied
            message = str(exc)
            if not message.startswith(key):
                message = f"{key} {value}: {message}"
            raise ConfigError(_prefixed(origin, message)) from None


def _source_check(layout: str):
    """A source root must exist and, for every layout but ``generic`` (a table file), be a folder."""
    from flows.runtime import check_read

    def check(value: str, what: str) -> None:
        check_read(value, what)
        local = Path(str(value))
        if layout != "generic" and "://" not in str(value) and local.is_file():
            raise NotADirectoryError(
                f"{what} {value} is a file; layout {layout} reads a folder (a table of paths is --layout generic)"
            )

    return check


def _check_file(value: str, what: str) -> None:
    from storage.location import as_location

    if not as_location(value).is_file():
        raise FileNotFoundError(f"{what} {value} does not exist")
