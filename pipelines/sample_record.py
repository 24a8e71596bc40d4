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


def _stage(stage: str, rel: str, fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except SampleError:
        raise
    except Exception as exc:  # decoders raise many types; every one becomes a recorded reject
        raise SampleError(stage, exc, rel) from exc
