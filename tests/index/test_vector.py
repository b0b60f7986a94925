"""convir.index.vector: search effort that grows with the index (efSearch, re-scored candidates)."""

from __future__ import annotations

import faiss
import numpy as np

from convir.index.vector import AnnIndex, AnnParams, build_ann, per_million


def _unit(n: int, d: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_effort_is_the_base_up_to_a_million_then_the_base_per_started_million() -> None:
    assert [per_million(128, n) for n in (10, 1_000_000, 1_000_001, 5_000_000)] == [128, 128, 256, 640]
    p = AnnParams()
    assert [p.candidates(10, n) for n in (50, 1_000_000, 5_000_000)] == [50, 200, 1000]
    assert AnnParams(refine_factor=3).candidates(10, 5_000_000) == 30  # a number fixes it


def test_a_built_hnsw_searches_with_the_effort_its_size_needs() -> None:
    x = _unit(200, 8)
    index = build_ann(x, "hnsw")
    assert index.hnsw.efSearch == 128
    # the same graph under 1.5M stored vectors (zeros: only their count sets the effort)
    big = np.zeros((1_500_000, 8), np.float32)
    assert AnnIndex(big, "hnsw", index).index.hnsw.efSearch == 256
    assert AnnIndex(big, "hnsw", index, AnnParams(hnsw_ef_search=40)).index.hnsw.efSearch == 40
    _, found = AnnIndex(x, "hnsw", index).search(x[:5], 3)
    assert list(found[:, 0]) == [0, 1, 2, 3, 4]


class _Recorder:
    """A faiss IVF-PQ index that records how many candidates it was asked for."""

    def __init__(self, index: faiss.Index) -> None:
        self.index, self.asked = index, []
        self.nlist = index.nlist

    def search(self, q: np.ndarray, k: int, **kw: object) -> tuple[np.ndarray, np.ndarray]:
        self.asked.append(k)
        return self.index.search(q, k, **kw)


def test_ivfpq_re_scores_more_candidates_in_a_larger_index() -> None:
    x = _unit(2000, 16)
    index = _Recorder(build_ann(x, "ivfpq"))
    assert index.index.nprobe == 32
    ann = AnnIndex(x, "ivfpq", index)
    _, found = ann.search(x[:3], 5)
    assert index.asked == [100] and list(found[:, 0]) == [0, 1, 2]  # exact re-scoring finds each itself
    ann.vectors = np.zeros((2_500_000, 16), np.float32)  # same index, counted as 2.5M items
    ann.search(x[:1], 5)
    assert index.asked[-1] == 300
