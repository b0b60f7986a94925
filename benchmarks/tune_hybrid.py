"""Tune hybrid fusion on the coco5k *dev* split (items 0-3999; never the test split).

Prints R@1/5/10 of dense, BM25 and hybrid variants (RRF with dense/BM25 weights, weighted
min-max fusion with several alphas), all through the product's own Ranker.
Usage: python benchmarks/tune_hybrid.py [--split dev]
"""

from __future__ import annotations

import argparse
from functools import lru_cache

import numpy as np

from _common import SHARED
from convir.encoders import load_encoder
from convir.eval.metrics import recall_at_k
from convir.eval.retrieval import load_items
from convir.gallery.memory import MemoryGallery
from convir.index.bm25 import BM25Index


class CachedBM25:
    """BM25 scores memoised per query text, so each fusion variant costs only the fusion."""

    def __init__(self, inner: BM25Index) -> None:
        self.inner = inner
        self.scores = lru_cache(maxsize=None)(self._scores)

    def _scores(self, text: str, weights: None = None) -> np.ndarray:
        return self.inner.scores(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--split", default="dev")
    args = ap.parse_args()
    items = load_items("coco5k", SHARED / "coco5k", args.split)
    enc = load_encoder("caption:minilm")
    gallery = MemoryGallery.from_captions(
        [it.id for it in items], [list(it.captions[1:3]) for it in items], enc
    )
    ranker = gallery.ranker
    ranker._bm25 = CachedBM25(ranker.bm25)  # the gallery's own BM25, memoised per query
    queries = [it.captions[0] for it in items]
    qvecs = enc.encode_text(queries, batch_size=128)

    def evaluate(mode: str, **kw: object) -> str:
        ranks = []
        for i, (q, v) in enumerate(zip(queries, qvecs, strict=True)):
            pos, _ = ranker.rank(v, q, 100, mode, **kw)  # type: ignore[arg-type]
            hit = np.flatnonzero(pos == i)
            ranks.append(int(hit[0]) + 1 if len(hit) else 101)
        return " ".join(f"R@{k} {100 * recall_at_k(ranks, k):.1f}" for k in (1, 5, 10))

    print(f"coco5k {args.split}: {len(items)} queries")
    print("dense                 ", evaluate("dense"))
    print("bm25                  ", evaluate("bm25"))
    for a in (0.5, 0.7, 0.8, 0.9):
        print(f"rrf alpha={a:<4}        ", evaluate("hybrid", fusion="rrf", alpha=a))
    for a in (0.5, 0.7, 0.8, 0.85, 0.9, 0.95):
        print(f"weighted alpha={a:<4}   ", evaluate("hybrid", fusion="weighted", alpha=a))


if __name__ == "__main__":
    main()
