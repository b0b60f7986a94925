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


def _from_torch_object(obj: Any, path: Any) -> np.ndarray:
    """The [N, d] matrix inside what ``torch.load`` returned.

    Accepted: a tensor; a dict holding exactly one tensor; or the ChatIR/PlugIR corpus cache,
    ``torch.save((ids, vectors), path)`` with ``ids`` the search-space index of each row (the
    official code sorts by id before saving; rows are put in id order here either way).
    """
    if isinstance(obj, dict):
        tensors = [v for v in obj.values() if hasattr(v, "shape")]
        if len(tensors) != 1:
            raise ConvirError(f"{path}: expected one tensor in the saved dict, found {len(tensors)}")
        obj = tensors[0]
    if isinstance(obj, (tuple, list)):
        if len(obj) != 2 or not all(hasattr(x, "shape") for x in obj):
            raise ConvirError(
                f"{path}: a saved tuple must be the official corpus cache (ids, vectors), "
                f"got {len(obj)} item(s) of types {', '.join(type(x).__name__ for x in obj)}"
            )
        ids = np.asarray(obj[0].cpu().numpy() if hasattr(obj[0], "cpu") else obj[0])
        vectors = obj[1].detach().cpu().float().numpy() if hasattr(obj[1], "cpu") else np.asarray(obj[1])
        if ids.ndim != 1 or vectors.ndim != 2 or ids.shape[0] != vectors.shape[0]:
            raise ConvirError(
                f"{path}: corpus cache ids {tuple(ids.shape)} and vectors {tuple(vectors.shape)} do not "
                "match (expected ids [N] and vectors [N, d])"
            )
        if not np.issubdtype(ids.dtype, np.integer) or not np.array_equal(
            np.sort(ids), np.arange(ids.shape[0])
        ):
            raise ConvirError(f"{path}: corpus cache ids must be 0..N-1 (row indices of the search space)")
        return np.asarray(vectors[np.argsort(ids, kind="stable")], dtype=np.float32)
    if not hasattr(obj, "float"):
        raise ConvirError(
            f"{path}: expected a tensor or the (ids, vectors) corpus cache, got {type(obj).__name__}"
        )
    return obj.detach().cpu().float().numpy()


def load_corpus_embeddings(path: Any, expected_rows: int | None = None) -> np.ndarray:
    """Load a [N, d] matrix from .npy or .pt/.pth (a tensor, a dict holding exactly one tensor,
    or the official ChatIR corpus cache ``(ids, vectors)``)."""
    import pickle
    from pathlib import Path

    path = Path(path)
    if not path.exists():
        raise ConvirError(f"corpus embeddings {path} not found")
    if path.suffix == ".npy":
        try:
            arr = np.load(path, mmap_mode="r")
        except (ValueError, OSError) as exc:
            raise ConvirError(f"cannot read {path} as a numpy array: {exc}") from exc
    elif path.suffix in (".pt", ".pth"):
        import torch

        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, OSError, EOFError) as exc:
            raise ConvirError(f"cannot read {path} as saved tensors: {type(exc).__name__}: {exc}") from exc
        arr = _from_torch_object(obj, path)
    else:
        raise ConvirError(f"{path}: corpus embeddings must be .npy or .pt/.pth")
    if arr.ndim != 2:
        raise ConvirError(f"{path}: expected a 2-d [N, d] matrix, got shape {tuple(arr.shape)}")
    if expected_rows is not None and arr.shape[0] != expected_rows:
        raise ConvirError(
            f"{path} has {arr.shape[0]} rows but the search space lists {expected_rows} images: "
            "row i must be the embedding of search-space image i"
        )
    out = np.asarray(arr, dtype=np.float32)
    if not np.all(np.isfinite(out)):
        bad = int(np.count_nonzero(~np.isfinite(out).all(axis=1)))
        raise ConvirError(
            f"{path}: {bad} rows hold NaN or infinite values (images that were never embedded?)"
        )
    return out
