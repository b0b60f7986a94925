"""The gallery layer: "encode the text unless the mode is BM25, then rank", written once.

Every gallery (an index directory, :class:`convir.search.SearchIndex`; an in-memory one,
:class:`convir.gallery.memory.MemoryGallery`) has a :class:`~convir.index.ranker.Ranker` and
the encoder of its vector space; :class:`TextRanking` gives both the same ``rank_text``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from convir.errors import ConvirError
from convir.index import DEFAULT_ALPHA, DEFAULT_FUSION
from convir.index.ranker import check_mode


def query_vectors(gallery: Any, texts: list[str], mode: str, batch_size: int = 128) -> np.ndarray | None:
    """Query vectors for ``texts`` from ``gallery.encoder``, or None in ``bm25`` mode (BM25
    needs words, not vectors: the encoder is then never touched, so never loaded)."""
    check_mode(mode)
    if mode == "bm25":
        return None
    return np.asarray(gallery.encoder.encode_text(list(texts), batch_size=batch_size), dtype=np.float32)


class TextRanking:
    """Mixin: ``rank_text`` for any gallery with ``ranker`` and ``encoder`` attributes."""

    ranker: Any
    encoder: Any

    def rank_text(
        self,
        text: str,
        k: int,
        mode: str = "dense",
        fusion: str = DEFAULT_FUSION,
        alpha: float = DEFAULT_ALPHA,
        pool: int = 100,
        weights: dict[str, float] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(positions, scores) of the top ``k`` items for ``text``, best first.

        The mode and fusion are checked before the encoder is touched, so a misspelt mode
        costs no model load; ``weights`` are per-term BM25 weights (query expansion)."""
        if not isinstance(text, str) or not text.strip():
            raise ConvirError("the query is empty")
        check_mode(mode, fusion)
        vec = query_vectors(self, [text], mode)
        return self.ranker.rank(None if vec is None else vec[0], text, k, mode, fusion, alpha, pool, weights)
