"""Text: CLIP BPE ids with ImageBind's framing (SOT, ids, EOT always last, zero padding)."""

import numpy as np
import pytest

from preprocess.text import EOT_TOKEN, SOT_TOKEN, TextConfig, tokenize


def test_tokens_match_imagebind_reference(shared_dir):
    ref = np.load(shared_dir / "reference" / "imagebind" / "text_tokens.npy")
    out = tokenize(["A dog.", "A car", "A bird"])
    assert out.shape == (3, 77) and out.dtype == np.int64
    assert np.array_equal(out, ref)


def _ids(text: str) -> list[int]:
    row = tokenize([text])[0]
    return row[row != 0].tolist()


def test_framing_at_and_beyond_the_context_length():
    word = _ids("dog")[1:-1]
    assert len(word) == 1 and _ids("dog") == [SOT_TOKEN, word[0], EOT_TOKEN]
    exact = tokenize(["dog " * 75])[0]  # SOT + 75 ids + EOT = 77: fits, nothing cut
    assert exact[0] == SOT_TOKEN and exact[-1] == EOT_TOKEN and (exact[1:76] == word[0]).all()
    over = tokenize(["dog " * 76, "word " * 200])  # too long: truncated, EOT forced into the last slot
    assert (over[:, 0] == SOT_TOKEN).all() and (over[:, 76] == EOT_TOKEN).all()
    assert (over[0, 1:76] == word[0]).all() and (over != 0).all()
    short = tokenize(["dog " * 10], TextConfig(context_length=5))[0]
    assert short.tolist() == [SOT_TOKEN, word[0], word[0], word[0], EOT_TOKEN]


def test_empty_text_is_sot_eot_then_zeros():
    empty = tokenize([""])[0]
    assert empty.tolist() == [SOT_TOKEN, EOT_TOKEN] + [0] * 75
    assert np.array_equal(tokenize(["   "])[0], empty)  # whitespace only cleans to empty


def test_cleaning_lowercases_unescapes_and_collapses_whitespace():
    assert np.array_equal(tokenize(["  A   Dog &amp;amp;\n\tCat  "]), tokenize(["a dog & cat"]))
    assert not np.array_equal(tokenize(["a dog"]), tokenize(["a cat"]))


def test_input_validation():
    with pytest.raises(ValueError, match="list of strings"):
        tokenize("A dog.")
    with pytest.raises(ValueError, match="strings"):
        tokenize(["ok", 3])
    assert tokenize([]).shape == (0, 77)
    with pytest.raises(ValueError, match="context_length"):
        TextConfig(context_length=1)
