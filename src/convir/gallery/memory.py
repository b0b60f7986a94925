"""The one in-memory gallery: evaluation protocols, tests and benchmarks build it on the fly.

Items are held in memory (ids, captions, one vector each) and ranked by the same
:class:`~convir.index.ranker.Ranker` an index directory uses; BM25 is built from the same
documents (:func:`convir.gallery.items.item_document`) on the first BM25/hybrid query.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from convir.gallery.items import item_documents, item_vectors
from convir.gallery.layer import TextRanking
from convir.index.ranker import Ranker


class MemoryGallery(TextRanking):
    """Items held in memory: vectors (one per item), captions, ids."""

    def __init__(self, ids: list[str], captions: list[list[str]], vectors: np.ndarray, encoder: Any) -> None:
        from convir.index.bm25 import BM25Index
        from convir.index.vector import AnnIndex

        vectors = np.asarray(vectors, dtype=np.float32)
        if not (len(ids) == len(captions) == vectors.shape[0]):
            raise ValueError(f"{len(ids)} ids, {len(captions)} caption lists and {vectors.shape[0]} vectors")
        self.ids = list(ids)
        self._captions = captions
        self._encoder = encoder
        docs = item_documents(captions)
        self.ranker = Ranker(AnnIndex(vectors, "flat", None), lambda: BM25Index.build(docs))
        self.position = {item_id: i for i, item_id in enumerate(self.ids)}

    @classmethod
    def from_captions(cls, ids: list[str], captions: list[list[str]], encoder: Any) -> MemoryGallery:
        """Item vectors from captions by the indexing rule (:func:`~convir.gallery.items.item_vectors`)."""
        return cls(ids, captions, item_vectors(encoder, captions), encoder)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def vectors(self) -> np.ndarray:
        return self.ranker.vectors

    @property
    def encoder(self) -> Any:
        return self._encoder

    def captions(self, positions: Sequence[int]) -> list[list[str]]:
        return [self._captions[int(p)] for p in positions]
