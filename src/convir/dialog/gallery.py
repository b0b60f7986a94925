"""What the conversation loop needs from a gallery, for an index directory or in memory.

A gallery has item ids, a :class:`Ranker` (dense / BM25 / hybrid), the text encoder of its
vector space, ``rank_text`` (encode unless BM25, then rank: :mod:`convir.gallery.layer`) and
the captions of any item. :class:`convir.search.SearchIndex` provides this for an index
directory; :class:`~convir.gallery.memory.MemoryGallery` for evaluation galleries built on the fly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from convir.gallery.memory import MemoryGallery
from convir.index import DEFAULT_ALPHA, DEFAULT_FUSION
from convir.index.ranker import Ranker

__all__ = ["Gallery", "MemoryGallery"]


class Gallery(Protocol):
    ids: list[str]
    position: dict[str, int]  # item id -> position in ``ids`` (and in the ranker's vectors)
    ranker: Ranker

    @property
    def encoder(self) -> Any: ...

    def captions(self, positions: Sequence[int]) -> list[list[str]]: ...

    def rank_text(
        self,
        text: str,
        k: int,
        mode: str = "dense",
        fusion: str = DEFAULT_FUSION,
        alpha: float = DEFAULT_ALPHA,
        pool: int = 100,
        weights: dict[str, float] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]: ...
