"""Fusing dense and BM25 rankings.

* ``rrf``: reciprocal rank fusion, score = 2 * (alpha / (k + rank_dense) + (1 - alpha) /
  (k + rank_bm25)); alpha = 0.5 is classic RRF (Cormack et al. 2009; k = 60). Robust when
  score scales are unrelated, but it discards how confident each system is.
* ``weighted``: alpha * dense + (1 - alpha) * bm25 after min-max normalising each list over
  the shared candidate pool, so one system's scale cannot dominate.
Candidates are the union of both top-N lists; every candidate gets *both* scores (exact
dense cosine and full BM25), so a document missing from one list is not silently scored 0.
"""

from __future__ import annotations

import numpy as np

from convir.index import DEFAULT_ALPHA, DEFAULT_FUSION

FUSIONS = ("rrf", "weighted")


def _ranks(scores: np.ndarray) -> np.ndarray:
    """1-based ranks, ties by lower candidate position first."""
    order = np.lexsort((np.arange(len(scores)), -scores))
    ranks = np.empty(len(scores), dtype=np.int64)
    ranks[order] = np.arange(1, len(scores) + 1)
    return ranks


def minmax(x: np.ndarray) -> np.ndarray:
    lo, hi = float(np.min(x)), float(np.max(x))
    if hi - lo < 1e-12:
        return np.zeros_like(x, dtype=np.float32)
    return ((x - lo) / (hi - lo)).astype(np.float32)


def fuse(
    dense: np.ndarray,
    sparse: np.ndarray,
    method: str = DEFAULT_FUSION,
    alpha: float = DEFAULT_ALPHA,
    rrf_k: int = 60,
) -> np.ndarray:
    """Fused scores for a candidate pool given each candidate's dense and BM25 score."""
    dense = np.asarray(dense, dtype=np.float32)
    sparse = np.asarray(sparse, dtype=np.float32)
    if method == "rrf":
        # a candidate BM25 gave 0 (no shared term) gets no BM25 vote rather than an arbitrary rank
        sparse_vote = np.where(sparse > 0, 1.0 / (rrf_k + _ranks(sparse)), 0.0)
        return (2 * (alpha / (rrf_k + _ranks(dense)) + (1 - alpha) * sparse_vote)).astype(np.float32)
    if method == "weighted":
        return alpha * minmax(dense) + (1.0 - alpha) * minmax(sparse)
    raise ValueError(f"fusion must be one of {FUSIONS}, not {method!r}")
