"""What the conversation loop needs from a gallery, for an index directory or in memory.

A gallery has item ids, a :class:`Ranker` (dense / BM25 / hybrid), the text encoder of its
vector space and the captions of any item. :class:`convir.search.SearchIndex` provides this
for an index directory; :class:`MemoryGallery` for evaluation galleries built on the fly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from convir.index.ranker import Ranker


class Gallery(Protocol):
    ids: list[str]
    position: dict[str, int]  # item id -> position in ``ids`` (and in the ranker's vectors)
    ranker: Ranker

    @property
    def encoder(self) -> Any: ...

    def captions(self, positions: Sequence[int]) -> list[list[str]]: ...

    def rank_text(
        self, text: str, k: int, mode: str = "dense", **options: Any
    ) -> tuple[np.ndarray, np.ndarray]:
        """(positions, scores) of the top ``k`` for a text query (see :func:`rank_text`)."""
        ...


def rank_text(
    gallery: Any, text: str, k: int, mode: str = "dense", **options: Any
) -> tuple[np.ndarray, np.ndarray]:
    """The one rule for a text query: encode it (unless BM25 alone ranks), then rank.
    ``options`` go to :meth:`Ranker.rank` (fusion, alpha, pool, weights)."""
    vec = None if mode == "bm25" else gallery.encoder.encode_text([text])[0]
    return gallery.ranker.rank(vec, text, k, mode, **options)


class MemoryGallery:
    """Items held in memory: vectors (one per item), captions, ids."""

    def __init__(self, ids: list[str], captions: list[list[str]], vectors: np.ndarray, encoder: Any) -> None:
        from convir.index.bm25 import BM25Index
        from convir.index.vector import AnnIndex

        self.ids = ids
        self._captions = captions
        self._encoder = encoder
        docs = [" . ".join(c) for c in captions]
        self.ranker = Ranker(
            AnnIndex(np.asarray(vectors, dtype=np.float32), "flat", None), lambda: BM25Index.build(docs)
        )
        self.position = {item_id: i for i, item_id in enumerate(ids)}

    @property
    def encoder(self) -> Any:
        return self._encoder

    def captions(self, positions: Sequence[int]) -> list[list[str]]:
        return [self._captions[int(p)] for p in positions]

    def rank_text(
        self, text: str, k: int, mode: str = "dense", **options: Any
    ) -> tuple[np.ndarray, np.ndarray]:
        return rank_text(self, text, k, mode, **options)
