"""What one sample's processing produces and how it fails: shared by the spatial (pipelines.samples)
and temporal (pipelines.temporal) steps, so neither imports the other's module for them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


class SampleError(Exception):
    def __init__(self, stage: str, cause: BaseException | str, input_path: str = ""):
        super().__init__(str(cause))
        self.stage = stage
        self.cause = cause
        self.input_path = input_path

    @property
    def error_type(self) -> str:
        return type(self.cause).__name__ if isinstance(self.cause, BaseException) else "Rejected"


@dataclass
class ProcessedSample:
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    fields: dict[str, Any] = field(default_factory=dict)
    modalities: list[str] = field(default_factory=list)

    def add(self, modality: str, arrays: dict[str, np.ndarray], **fields: Any) -> None:
        self.arrays.update({f"{modality}/{k}": v for k, v in arrays.items()})
        self.fields.update(fields)
        self.modalities.append(modality)


def _input_errors() -> tuple[type[BaseException], ...]:
    """What bad input makes decoders and checks raise. Anything else (a TypeError, KeyError,
    AttributeError...) is a bug in bindset or a plugin: it must stop the shard with its traceback,
    not hide among the rejects."""
    import struct
    import zlib

    errors: list[type[BaseException]] = [ValueError, OSError, EOFError, SyntaxError, struct.error, zlib.error]
    try:  # corrupt media: PyAV's errors are not all OSError/ValueError subclasses
        from av.error import FFmpegError

        errors.append(FFmpegError)
    except ImportError:
        pass
    try:  # a file that decodes to more pixels than Pillow allows
        from PIL.Image import DecompressionBombError

        errors.append(DecompressionBombError)
    except ImportError:
        pass
    return tuple(errors)


INPUT_ERRORS = _input_errors()


def _stage(stage: str, rel: str, fn, *args, **kwargs):
    """Run one step of a sample; an error bad input raises becomes a ``SampleError`` (a recorded
    reject of that stage), any other error propagates (a bug: the shard stops with its traceback)."""
    try:
        return fn(*args, **kwargs)
    except SampleError:
        raise
    except INPUT_ERRORS as exc:
        raise SampleError(stage, exc, rel) from exc
