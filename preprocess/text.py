"""Text -> CLIP BPE token ids (open_clip's tokenizer: the vocabulary ImageBind uses)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TextConfig:
    context_length: int = 77


def tokenize(texts: list[str], cfg: TextConfig = TextConfig()) -> np.ndarray:
    """``[N, context_length] int64``: SOT, BPE ids truncated so EOT is always last, zero padding."""
    import open_clip  # heavy import; only text needs it

    if isinstance(texts, str):
        raise ValueError("tokenize expects a list of strings, got a single string")
    return open_clip.tokenize([str(t) for t in texts], context_length=cfg.context_length).numpy()
