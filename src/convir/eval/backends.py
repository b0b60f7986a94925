"""Where an evaluation looks up the target's rank for a query.

* :class:`EmbeddingBackend`: a fixed corpus embedding matrix (the ChatIR protocol: users
  bring image embeddings aligned with the search-space list) and a text encoder;
* :class:`RankerBackend`: a gallery ranked by the product's own :class:`Ranker`
  (dense / BM25 / hybrid), built from an index directory or in memory.

Dense and BM25 ranks are exact over the whole gallery (ties: lower position first). Hybrid
ranks exist only inside the fused pool; a target outside it gets rank ``depth + 1``, which
is exact for Recall/Hits@K with K <= depth and makes MRR a lower bound (MRR@depth).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from convir.encoders.base import l2_normalize
from convir.errors import ConvirError
from convir.eval.metrics import ranks_from_scores
from convir.gallery.layer import query_vectors
from convir.index import DEFAULT_ALPHA, DEFAULT_FUSION
from convir.index.ranker import NO_TEXT, check_mode


class EmbeddingBackend:
    """Exact inner-product ranks against a corpus matrix."""

    def __init__(self, corpus: np.ndarray, encoder: Any) -> None:
        self.corpus = l2_normalize(np.asarray(corpus, dtype=np.float32))
        self.encoder = encoder
        if encoder.dim != self.corpus.shape[1]:
            raise ConvirError(
                f"text encoder {encoder.spec} gives {encoder.dim}-d vectors but the corpus embeddings are "
                f"{self.corpus.shape[1]}-d: use the text tower of the model that embedded the corpus"
            )

    def __len__(self) -> int:
        return int(self.corpus.shape[0])

    def ranks(self, queries: list[str], targets: np.ndarray, vectors: np.ndarray | None = None) -> list[int]:
        """1-based rank of ``targets[i]`` for ``queries[i]`` (or precomputed ``vectors[i]``)."""
        q = self.encoder.encode_text(queries) if vectors is None else vectors
        scores = np.asarray(q, dtype=np.float32) @ self.corpus.T
        return [int(r) for r in ranks_from_scores(scores, np.asarray(targets))]


class RankerBackend:
    """Ranks from a gallery's own ranker (what `convir search` does), for one mode.

    ``gallery`` is an index directory (:class:`convir.search.SearchIndex`) or a
    :class:`convir.gallery.memory.MemoryGallery`; queries are encoded by the gallery layer's
    one rule (:func:`convir.gallery.layer.query_vectors`)."""

    def __init__(
        self,
        gallery: Any,
        mode: str = "dense",
        fusion: str = DEFAULT_FUSION,
        alpha: float = DEFAULT_ALPHA,
        depth: int = 100,
    ) -> None:
        check_mode(mode, fusion)
        self.gallery, self.ranker, self.mode = gallery, gallery.ranker, mode
        self.fusion, self.alpha, self.depth = fusion, alpha, depth

    def __len__(self) -> int:
        return int(self.ranker.vectors.shape[0])

    def ranks(self, queries: list[str], targets: np.ndarray, vectors: np.ndarray | None = None) -> list[int]:
        """1-based rank of ``targets[i]`` for ``queries[i]`` (or precomputed ``vectors[i]``)."""
        targets = np.asarray(targets)
        if self.mode == "bm25":
            bm25 = self.ranker.bm25
            if getattr(bm25, "empty", False):
                raise ConvirError(NO_TEXT)
            scores = np.stack([bm25.scores(q) for q in queries])
            return [int(r) for r in ranks_from_scores(scores, targets)]
        q = query_vectors(self.gallery, queries, self.mode) if vectors is None else vectors
        if self.mode == "dense":
            scores = np.asarray(q, dtype=np.float32) @ np.asarray(self.ranker.vectors).T
            return [int(r) for r in ranks_from_scores(scores, targets)]
        out = []
        for text, vec, target in zip(queries, q, targets, strict=True):
            pos, _ = self.ranker.rank(
                vec, text, self.depth, "hybrid", self.fusion, self.alpha, pool=self.depth
            )
            hit = np.flatnonzero(pos == target)
            out.append(int(hit[0]) + 1 if len(hit) else self.depth + 1)
        return out


def load_corpus_embeddings(path: Any, expected_rows: int | None = None) -> np.ndarray:
    """Load a [N, d] matrix from .npy or .pt (a tensor, or a dict holding exactly one tensor)."""
    from pathlib import Path

    path = Path(path)
    if not path.exists():
        raise ConvirError(f"corpus embeddings {path} not found")
    if path.suffix == ".npy":
        arr = np.load(path, mmap_mode="r")
    elif path.suffix in (".pt", ".pth"):
        import torch

        obj = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(obj, dict):
            tensors = [v for v in obj.values() if hasattr(v, "shape")]
            if len(tensors) != 1:
                raise ConvirError(f"{path}: expected one tensor in the saved dict, found {len(tensors)}")
            obj = tensors[0]
        arr = obj.float().numpy()
    else:
        raise ConvirError(f"{path}: corpus embeddings must be .npy or .pt")
    if arr.ndim != 2:
        raise ConvirError(f"{path}: expected a 2-d [N, d] matrix, got shape {tuple(arr.shape)}")
    if expected_rows is not None and arr.shape[0] != expected_rows:
        raise ConvirError(
            f"{path} has {arr.shape[0]} rows but the search space lists {expected_rows} images: "
            "row i must be the embedding of search-space image i"
        )
    return np.asarray(arr, dtype=np.float32)
