"""Inner-product vector search with faiss: exact ``flat`` and approximate ``hnsw``/``lsh``/``ivfpq``.

All vectors are L2-normalised, so inner product = cosine. ``lsh`` (random hyperplanes, as
in QueryFormer) and ``ivfpq`` compress vectors; their candidates (k x ``refine_factor``,
growing with the index) are re-scored exactly against the stored vectors, so returned scores
are true cosines and comparable across kinds, which hybrid fusion relies on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from convir.errors import ConvirError

ANN_KINDS = {
    "flat": "exact inner product (default; best up to ~1M items)",
    "hnsw": "graph ANN (faiss HNSW, M=32): fast, high recall, more memory",
    "lsh": "random-hyperplane LSH (QueryFormer) + exact re-scoring of candidates",
    "ivfpq": "inverted lists + product quantisation + exact re-scoring: large galleries",
}


HNSW_EF_SEARCH = 128  # per started million items (benchmarks/ann_quality.py, benchmarks/scale.py)
REFINE_FACTOR = 20  # candidates re-scored per result, per started million items


def per_million(base: int, n: int) -> int:
    """``base`` up to 1M items, then ``base`` per started million.

    Approximate search must do more work as the collection grows to keep its recall, and both
    measured knobs grew about linearly (docs/benchmarks.md, "Scale", faiss at 5M x 512):
    HNSW (M 32) recall@10 fell from 0.964 at 1M to 0.864 at 5M with efSearch 128, and 512
    restored 0.953 (1.0 ms p50); IVF-PQ fell from 0.979 to 0.915 with 200 candidates re-scored
    for k = 10, and 1,000 restored 0.993 (1.9 ms p50). More IVF lists probed did not help
    (nprobe 16 / 32 / 128: 0.910 / 0.915 / 0.916): the loss is PQ's ranking of the candidates."""
    return base * max(1, math.ceil(n / 1_000_000))


@dataclass
class AnnParams:
    """Build/search knobs; defaults chosen by benchmarks/ann_quality.py and benchmarks/scale.py
    (see docs/benchmarks.md). ``hnsw_ef_search`` / ``refine_factor`` of None grow with the
    index (:func:`per_million`); a number fixes them."""

    hnsw_m: int = 32
    hnsw_ef_construction: int = 80
    hnsw_ef_search: int | None = None
    lsh_bits_per_dim: int = 2
    refine_factor: int | None = None
    ivf_nprobe: int = 32
    filter_exact_max: int = 50_000  # a --where admitting at most this many items is searched exactly
    extra: dict[str, Any] = field(default_factory=dict)

    def ef_search(self, n: int) -> int:
        """efSearch for a graph of ``n`` items."""
        return self.hnsw_ef_search or per_million(HNSW_EF_SEARCH, n)

    def candidates(self, k: int, n: int) -> int:
        """Compressed-index candidates to re-score exactly for the top ``k`` of ``n`` items."""
        return min(n, k * (self.refine_factor or per_million(REFINE_FACTOR, n)))

    def nprobe(self, nlist: int) -> int:
        """Lists to probe in an IVF index of ``nlist`` lists."""
        return min(nlist, self.ivf_nprobe)


def _faiss() -> Any:
    import faiss

    return faiss


def build_ann(vectors: np.ndarray, kind: str, params: AnnParams | None = None) -> Any:
    """Build a faiss index over ``vectors`` ((n, d) float32, normalised)."""
    if kind not in ANN_KINDS:
        raise ConvirError(f"unknown --ann {kind!r}; choose one of: {', '.join(ANN_KINDS)}")
    p = params or AnnParams()
    faiss = _faiss()
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    n, d = x.shape
    if kind == "flat":
        index = faiss.IndexFlatIP(d)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, p.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = p.hnsw_ef_construction
        index.hnsw.efSearch = p.ef_search(n)
    elif kind == "lsh":
        index = faiss.IndexLSH(d, p.lsh_bits_per_dim * d, True, True)  # rotate + trained thresholds
    else:
        if n < 1000:
            raise ConvirError(f"--ann ivfpq needs at least 1,000 items to train (have {n}); use flat or hnsw")
        nlist, m, nbits = ivfpq_layout(n, d)
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFPQ(quantizer, d, nlist, m, nbits, faiss.METRIC_INNER_PRODUCT)
        index.nprobe = p.nprobe(nlist)
        index.train(x[ivfpq_train_rows(n, nlist)])
    if not index.is_trained:
        index.train(x)
    index.add(x)
    return index


def ivfpq_layout(n: int, d: int) -> tuple[int, int, int]:
    """(nlist, PQ sub-vectors, bits per code) for ``n`` vectors of dimension ``d``."""
    nlist = max(16, min(int(4 * math.sqrt(n)), n // 39))
    m = next(m for m in (d // 8, d // 4, d // 2, d) if m > 0 and d % m == 0)
    return nlist, m, 8 if n >= 256 * 39 else 6


def ivfpq_train_rows(n: int, nlist: int) -> np.ndarray:
    """Rows IVF-PQ trains on: all up to 100k, else a fixed sample of max(100k, 39 x nlist)
    (k-means cost grows with n x nlist; faiss asks for >= 39 points per list)."""
    size = max(100_000, 39 * nlist)
    if n <= size:
        return np.arange(n)
    return np.sort(np.random.default_rng(0).choice(n, size=size, replace=False))


_controller: Any = None


def one_blas_thread() -> Any:
    """Context limiting BLAS to one thread for a single query's scoring.

    A (1 x d) @ (d x n) product is memory-bound, and right after a torch text encoding the
    OpenMP threads are still spinning on both cores: a 2-thread BLAS call then waits for
    them (measured 2.1 ms p50 vs 0.44 ms single-threaded on the 5k coco index).
    """
    global _controller
    if _controller is None:
        from threadpoolctl import ThreadpoolController

        _controller = ThreadpoolController()
    return _controller.limit(limits=1, user_api="blas")


def save_ann(index: Any, path: Path) -> None:
    _faiss().write_index(index, str(path))


class AnnIndex:
    """Search over one build: an ANN index (or none for flat) plus the exact vectors."""

    def __init__(self, vectors: np.ndarray, kind: str, index: Any | None, params: AnnParams | None = None):
        self.vectors = vectors
        self.kind = kind
        self.params = params or AnnParams()
        self.index = index
        if index is not None and kind == "hnsw":
            index.hnsw.efSearch = self.params.ef_search(len(vectors))
        if index is not None and kind == "ivfpq":
            index.nprobe = self.params.nprobe(index.nlist)

    @classmethod
    def load(
        cls, vectors: np.ndarray, kind: str, path: Path | None, params: AnnParams | None = None
    ) -> AnnIndex:
        index = _faiss().read_index(str(path)) if kind != "flat" and path is not None else None
        return cls(vectors, kind, index, params)

    def __len__(self) -> int:
        return int(self.vectors.shape[0])

    def search(self, queries: np.ndarray, k: int, flt: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """(scores, positions) of shape (m, min(k, n)), best first, exact cosines.

        ``flt`` (:class:`convir.store.filters.BoundFilter`) keeps only the positions it
        allows: a small allowed set is searched exactly, a large one through faiss' ID
        selector (HNSW, IVF-PQ); rows with fewer than k allowed hits are padded with -1."""
        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        k = min(k, len(self))
        if k <= 0:
            return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
        if flt is not None:
            return self._search_filtered(q, k, flt.positions)
        if self.index is None:
            if len(q) > 4:
                return exact_topk(self.vectors, q, k)
            with one_blas_thread():
                return exact_topk(self.vectors, q, k)
        if self.kind == "hnsw":
            return self.index.search(q, k)
        n_cand = self.params.candidates(k, len(self))
        _, cand = self.index.search(q, n_cand)
        return self._refine(q, k, cand)

    def _refine(self, q: np.ndarray, k: int, cand: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact re-scoring of compressed-index candidates (true cosines, comparable across kinds)."""
        out_s = np.empty((len(q), k), np.float32)
        out_p = np.empty((len(q), k), np.int64)
        for row, c in enumerate(cand):
            c = c[c >= 0]
            s = np.asarray(self.vectors[c], dtype=np.float32) @ q[row]
            order = np.lexsort((c, -s))[:k]
            got = len(order)
            out_s[row, :got], out_p[row, :got] = s[order], c[order]
            out_s[row, got:], out_p[row, got:] = -np.inf, -1
        return out_s, out_p

    def _search_filtered(self, q: np.ndarray, k: int, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out_s = np.full((len(q), k), -np.inf, np.float32)
        out_p = np.full((len(q), k), -1, np.int64)
        if len(allowed) == 0:
            return out_s, out_p
        if self.index is None or self.kind == "lsh" or len(allowed) <= self.params.filter_exact_max:
            sub = np.asarray(self.vectors[allowed], dtype=np.float32)
            s, p = exact_topk(sub, q, min(k, len(allowed)))
            out_s[:, : s.shape[1]], out_p[:, : s.shape[1]] = s, allowed[p]
            return out_s, out_p
        faiss = _faiss()
        sel = faiss.IDSelectorBatch(allowed)
        if self.kind == "hnsw":
            params = faiss.SearchParametersHNSW(sel=sel, efSearch=max(self.params.ef_search(len(self)), k))
            s, p = self.index.search(q, k, params=params)
            return s, p
        params = faiss.SearchParametersIVF(sel=sel, nprobe=self.params.nprobe(self.index.nlist))
        _, cand = self.index.search(q, self.params.candidates(k, len(allowed)), params=params)
        return self._refine(q, k, cand)


def exact_topk(vectors: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by inner product; ties broken by lower position first (deterministic)."""
    q = np.atleast_2d(np.asarray(queries, dtype=np.float32))
    scores = q @ vectors.T
    k = min(k, vectors.shape[0])
    n = vectors.shape[0]
    if k < n:
        # argpartition on a perturbed-free key keeps this O(n): take the k-th best score, then
        # keep everything >= it and sort that small set with the tie-break.
        kth = np.partition(scores, n - k, axis=1)[:, n - k : n - k + 1]
    else:
        kth = np.full((len(q), 1), -np.inf, dtype=scores.dtype)
    out_s = np.empty((len(q), k), np.float32)
    out_p = np.empty((len(q), k), np.int64)
    for row in range(len(q)):
        cand = np.flatnonzero(scores[row] >= kth[row, 0])
        order = cand[np.lexsort((cand, -scores[row, cand]))][:k]
        out_s[row], out_p[row] = scores[row, order], order
    return out_s, out_p
