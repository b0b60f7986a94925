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
    ranker: Ranker

    @property
    def encoder(self) -> Any: ...

    def captions(self, positions: Sequence[int]) -> list[list[str]]: ...


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
