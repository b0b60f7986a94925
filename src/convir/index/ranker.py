"""Ranking over one set of items: dense (vector index), BM25 (captions) or hybrid.

Shared by :class:`convir.search.SearchIndex` (an index directory) and the evaluation
protocols (in-memory galleries), so what is measured is exactly what users run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from convir.errors import ConvirError
from convir.index import DEFAULT_ALPHA, DEFAULT_FUSION
from convir.index.hybrid import FUSIONS, fuse
from convir.index.vector import AnnIndex

MODES = ("dense", "bm25", "hybrid")
NO_TEXT = (
    "this gallery has no caption text, so BM25 has nothing to rank: use --mode dense "
    "(--mode hybrid falls back to dense), or add captions (name.txt sidecars, manifest captions) and re-index"
)


def check_mode(mode: str, fusion: str = DEFAULT_FUSION) -> None:
    """Reject an unknown mode or fusion before anything is encoded."""
    if mode not in MODES:
        raise ConvirError(f"unknown mode {mode!r}; choose one of: {', '.join(MODES)}")
    if mode == "hybrid" and fusion not in FUSIONS:
        raise ConvirError(f"unknown fusion {fusion!r}; choose one of: {', '.join(FUSIONS)}")


class Ranker:
    """``rank()`` -> (positions, scores) best first; ties by lower position (deterministic).

    ``bm25`` is a BM25 index (or a loader called on the first BM25/hybrid query); an empty
    one (:class:`convir.index.bm25.EmptyBM25`, a gallery without caption text) makes
    ``bm25`` mode a clear error and ``hybrid`` mode rank exactly as ``dense``."""

    def __init__(self, ann: AnnIndex, bm25: Any | Callable[[], Any]) -> None:
        self.ann = ann
        self._bm25 = bm25

    @property
    def vectors(self) -> np.ndarray:
        return self.ann.vectors

    @property
    def bm25(self) -> Any:
        if callable(self._bm25) and not hasattr(self._bm25, "scores"):
            self._bm25 = self._bm25()  # loaded on first BM25/hybrid query only
        return self._bm25

    def rank(
        self,
        qvec: np.ndarray | None,
        text: str | None,
        k: int,
        mode: str = "dense",
        fusion: str = DEFAULT_FUSION,
        alpha: float = DEFAULT_ALPHA,
        pool: int = 100,
        weights: dict[str, float] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k``. Hybrid fuses the union of both top-``pool`` lists, each candidate with
        its exact cosine and its BM25 score; ``weights`` are per-term BM25 weights."""
        check_mode(mode, fusion)
        if k <= 0:
            raise ConvirError("k must be at least 1")
        if mode != "dense" and not text:
            raise ConvirError(f"--mode {mode} needs a text query (BM25 ranks captions by words)")
        if mode != "dense" and getattr(self.bm25, "empty", False):
            if mode == "bm25":
                raise ConvirError(NO_TEXT)
            mode = "dense"
        if mode == "bm25":
            scores = self.bm25.scores(text, weights)
            return top_k(scores, np.arange(len(scores)), k)
        if qvec is None:
            raise ConvirError(f"--mode {mode} needs a query vector")
        if mode == "dense":
            s, p = self.ann.search(qvec, k)
            keep = p[0] >= 0
            return p[0][keep], s[0][keep]
        n_pool = max(k, pool)
        _, dense_pos = self.ann.search(qvec, n_pool)
        sparse_all = self.bm25.scores(text, weights)
        sparse_pos = np.argsort(-sparse_all, kind="stable")[:n_pool]
        cand = np.union1d(dense_pos[0][dense_pos[0] >= 0], sparse_pos[sparse_all[sparse_pos] > 0])
        dense = np.asarray(self.vectors[cand] @ np.asarray(qvec, dtype=np.float32), dtype=np.float32)
        fused = fuse(dense, sparse_all[cand], method=fusion, alpha=alpha)
        return top_k(fused, cand, k)


def top_k(scores: np.ndarray, positions: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Best ``k`` by score; ties by lower position (deterministic)."""
    order = np.lexsort((positions, -scores))[:k]
    return positions[order], scores[order]
