"""Long-text policies with the real MiniLM tokenizer."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convir.encoders import load_encoder
from convir.encoders.caption import CaptionEncoder
from convir.encoders.longtext import may_exceed, split_to_fit


@pytest.fixture(scope="module")
def minilm() -> CaptionEncoder:
    enc = load_encoder("caption:minilm")
    assert isinstance(enc, CaptionEncoder)
    return enc


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=60))
def test_byte_bound_never_hides_an_overlong_text(text: str) -> None:
    enc = load_encoder("caption:minilm")
    n = enc.count_tokens(text)  # type: ignore[attr-defined]
    for limit in range(0, n):  # any limit the text truly exceeds must be flagged
        assert may_exceed(text, limit)


def test_split_to_fit_respects_the_limit(minilm: CaptionEncoder) -> None:
    text = " ".join(f"word{i}" for i in range(300))
    pieces = split_to_fit(text, minilm.count_tokens, 50)
    assert len(pieces) > 1 and all(minilm.count_tokens(p) <= 50 for p in pieces)
    assert " ".join(pieces) == text


def test_chunk_keeps_the_tail_truncate_warns(
    minilm: CaptionEncoder, caplog: pytest.LogCaptureFixture
) -> None:
    head = "a photo of a kitchen with white cabinets and a wooden table " * 30
    long_a, long_b = head + "and a black cat on the floor", head + "and a red bicycle by the door"
    chunked = minilm.encode_text([long_a, long_b])
    assert not np.allclose(chunked[0], chunked[1], atol=1e-3)  # the tail changes the vector
    trunc = CaptionEncoder("minilm", long_text="truncate")
    with caplog.at_level(logging.WARNING, logger="convir"):
        cut = trunc.encode_text([long_a, long_b])
    assert np.allclose(cut[0], cut[1], atol=1e-5)  # both cut before the tail: identical
    assert "truncated" in caplog.text
