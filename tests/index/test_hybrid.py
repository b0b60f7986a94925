"""Fusion and top-k rules against hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convir.index.hybrid import fuse, minmax
from convir.index.ranker import top_k
from convir.index.vector import exact_topk


def test_rrf_classic_and_no_vote_for_zero_bm25() -> None:
    dense = np.array([0.9, 0.5, 0.1])
    sparse = np.array([0.0, 2.0, 1.0])
    got = fuse(dense, sparse, "rrf", alpha=0.5)
    # dense ranks 1,2,3; BM25 ranks item1=1, item2=2, item0 has score 0 -> no BM25 vote
    want = [1 / 61, 1 / 62 + 1 / 61, 1 / 63 + 1 / 62]
    assert np.allclose(got, want)
    assert list(np.argsort(-got)) == [1, 2, 0]


def test_weighted_fusion_minmax() -> None:
    dense = np.array([0.9, 0.5, 0.1])
    sparse = np.array([0.0, 2.0, 1.0])
    # minmax: dense -> [1, .5, 0], sparse -> [0, 1, .5]
    assert np.allclose(fuse(dense, sparse, "weighted", alpha=0.5), [0.5, 0.75, 0.25])
    assert np.allclose(fuse(dense, sparse, "weighted", alpha=0.9), [0.9, 0.55, 0.05])
    assert np.allclose(minmax(np.array([3.0, 3.0])), [0.0, 0.0])  # flat list carries no signal
    with pytest.raises(ValueError):
        fuse(dense, sparse, "max")


def test_ties_are_broken_by_lower_position() -> None:
    pos, scores = top_k(np.array([0.5, 0.7, 0.5, 0.7]), np.array([10, 11, 12, 13]), 3)
    assert list(pos) == [11, 13, 10] and list(scores) == [0.7, 0.7, 0.5]
    vecs = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]], dtype=np.float32)
    s, p = exact_topk(vecs, np.array([1.0, 0.0]), 2)
    assert list(p[0]) == [0, 2] and np.allclose(s[0], [1, 1])


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(-3, 3), min_size=1, max_size=30), st.integers(1, 40))
def test_exact_topk_matches_a_full_stable_sort(values: list[int], k: int) -> None:
    vecs = np.array([[float(v)] for v in values], dtype=np.float32)
    s, p = exact_topk(vecs, np.array([1.0]), k)
    order = sorted(range(len(values)), key=lambda i: (-values[i], i))[:k]
    assert list(p[0]) == order and list(s[0]) == [values[i] for i in order]


def test_ranker_rejects_unknown_fusion_and_mode() -> None:
    from convir.errors import ConvirError
    from convir.index.ranker import Ranker
    from convir.index.vector import AnnIndex

    ranker = Ranker(AnnIndex(np.eye(3, dtype=np.float32), "flat", None), None)
    with pytest.raises(ConvirError, match="unknown fusion"):
        ranker.rank(np.ones(3), "x", 2, "hybrid", fusion="max")
    with pytest.raises(ConvirError, match="unknown mode"):
        ranker.rank(np.ones(3), "x", 2, "fuzzy")
    pos, _ = ranker.rank(np.array([0, 1, 0], dtype=np.float32), None, 2)
    assert list(pos) == [1, 0]
