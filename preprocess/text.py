"""Text -> CLIP BPE token ids with open_clip's tokenizer (the vocabulary ImageBind uses).

Reference framing, which open_clip's ``SimpleTokenizer`` reproduces exactly (checked against
ImageBind's golden tokens): clean (``ftfy.fix_text``, ``html.unescape`` twice, strip, collapse
whitespace, lowercase), SOT 49406, BPE ids, truncate to ``context_length`` with EOT 49407 forced
into the last slot (so EOT is always present), zero padding. Layout: ``tokens: [N, 77] int64``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

SOT_TOKEN = 49406
EOT_TOKEN = 49407


@dataclass(frozen=True)
class TextConfig:
    context_length: int = 77

    def __post_init__(self) -> None:
        if self.context_length < 2:
            raise ValueError(f"context_length must leave room for SOT and EOT, got {self.context_length}")


@lru_cache(maxsize=1)
def _tokenizer():
    # Imported lazily: open_clip pulls in torch and timm, which only text needs. clean="lower" is
    # pinned explicitly so a change of open_clip's default cannot change the ids silently.
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer(clean="lower")


def tokenize(texts: list[str], cfg: TextConfig = TextConfig()) -> np.ndarray:
    """``texts`` (N strings) -> ``tokens: [N, context_length] int64``: SOT, BPE ids truncated so
    that EOT is always the last non-zero id, then zero padding. An empty string gives
    ``[SOT, EOT, 0, ...]``."""
    if isinstance(texts, (str, bytes)):
        raise ValueError("tokenize expects a list of strings, got a single string")
    texts = list(texts)
    if not all(isinstance(t, str) for t in texts):
        bad = next(type(t).__name__ for t in texts if not isinstance(t, str))
        raise ValueError(f"tokenize expects strings, got a {bad}")
    if not texts:
        return np.zeros((0, cfg.context_length), dtype=np.int64)
    return _tokenizer()(texts, context_length=cfg.context_length).numpy().astype(np.int64, copy=False)
