"""Texts longer than an encoder's context window.

Dialogue queries grow every turn and CLIP's text tower stops at 77 tokens, so silently
truncating would drop exactly the latest answers. Two explicit policies:

* ``truncate``: keep the first tokens (what the model does anyway) and warn once;
* ``chunk``: split on word boundaries into windows that fit, encode each, average the
  (normalised) window vectors, renormalise. Every word then influences the query.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

from convir.encoders.base import l2_normalize

log = logging.getLogger("convir")
_warned: set[str] = set()


def may_exceed(text: str, max_tokens: int) -> bool:
    """Cheap pre-check before tokenising. A WordPiece/BPE token covers at least one UTF-8 byte,
    and SentencePiece adds at most one word-boundary token per word, so a text cannot have
    more than 2 x its byte length in tokens. Keeps indexing short captions from paying for a
    second tokenisation."""
    return 2 * len(text.encode("utf-8")) > max_tokens


def split_to_fit(text: str, count_tokens: Callable[[str], int], max_tokens: int) -> list[str]:
    """Greedy word-window split so each piece has <= max_tokens tokens (a single overlong
    word becomes its own piece and is truncated by the model).

    Each piece is the longest run of words from where the previous one ended that still fits,
    found by binary search: a word is at least one token, so a piece has at most
    ``max_tokens`` words, and ``count_tokens`` is called O(log max_tokens) times per piece on
    at most that many words. (Adding words one by one re-tokenised the growing piece every
    time: minutes for one pasted page.)"""
    if not may_exceed(text, max_tokens) or count_tokens(text) <= max_tokens:
        return [text]
    words = text.split()
    pieces: list[str] = []
    start = 0
    while start < len(words):
        lo, hi = start + 1, min(len(words), start + max(1, max_tokens))  # lo always fits (own piece)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if count_tokens(" ".join(words[start:mid])) <= max_tokens:
                lo = mid
            else:
                hi = mid - 1
        pieces.append(" ".join(words[start:lo]))
        start = lo
    return pieces


def encode_long(
    texts: list[str],
    encode: Callable[[list[str]], np.ndarray],
    count_tokens: Callable[[str], int],
    max_tokens: int,
    policy: str,
    model_name: str,
) -> np.ndarray:
    """Encode ``texts`` with ``encode`` (which may truncate) applying ``policy`` to long ones."""
    if policy not in ("truncate", "chunk"):
        raise ValueError(f"long-text policy must be 'truncate' or 'chunk', not {policy!r}")
    if policy == "truncate":
        if model_name not in _warned and any(
            may_exceed(t, max_tokens) and count_tokens(t) > max_tokens for t in texts
        ):
            _warned.add(model_name)
            log.warning(
                "%s: text longer than %d tokens is truncated (use long_text='chunk' to keep it all)",
                model_name,
                max_tokens,
            )
        return encode(texts)
    pieces: list[str] = []
    owner: list[int] = []
    for i, text in enumerate(texts):
        for piece in split_to_fit(text, count_tokens, max_tokens):
            pieces.append(piece)
            owner.append(i)
    vecs = encode(pieces)
    if len(pieces) == len(texts):
        return vecs
    out = np.zeros((len(texts), vecs.shape[1]), dtype=np.float32)
    np.add.at(out, np.asarray(owner), vecs)
    return l2_normalize(out)
