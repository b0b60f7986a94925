"""BM25 over item captions with bm25s (sparse matrices; fast to build and to score).

Tokenisation: lower-case, English stop words removed, Snowball stemming when PyStemmer is
installed, so "surfers"/"surfing" match "surfboard"-free captions about "surf".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def _lib() -> Any:
    """Import bm25s; it forces its logger to DEBUG on import, which would print to users."""
    import logging

    import bm25s

    logging.getLogger("bm25s").setLevel(logging.WARNING)
    return bm25s


def _stemmer() -> Any:
    try:
        import Stemmer

        return Stemmer.Stemmer("english")
    except ImportError:  # optional: plain tokens still work, just less recall
        return None


class BM25Index:
    """Caption BM25; one document per item = all its captions joined."""

    def __init__(self, retriever: Any) -> None:
        self.retriever = retriever
        self._stem = _stemmer()
        self._vocab: dict[str, int] = retriever.vocab_dict

    @classmethod
    def build(cls, documents: list[str]) -> BM25Index:
        bm25s = _lib()
        stem = _stemmer()
        tokens = bm25s.tokenize(documents, stopwords="en", stemmer=stem, show_progress=False)
        retriever = bm25s.BM25()
        retriever.index(tokens, show_progress=False)
        return cls(retriever)

    def save(self, folder: Path) -> None:
        self.retriever.save(str(folder), show_progress=False)

    @classmethod
    def load(cls, folder: Path) -> BM25Index:
        return cls(_lib().BM25.load(str(folder), mmap=False, show_progress=False))

    @property
    def size(self) -> int:
        return int(self.retriever.scores["num_docs"])

    def tokens(self, text: str) -> list[str]:
        """Query tokens known to the index (unknown words cannot score anyway)."""
        toks = _lib().tokenize(
            [text], stopwords="en", stemmer=self._stem, return_ids=False, show_progress=False
        )
        return [t for t in toks[0] if t in self._vocab]

    def idf(self, word: str) -> float:
        """BM25 IDF of ``word`` (after stemming; 0 for words absent from the gallery)."""
        toks = [
            t
            for t in _lib().tokenize(
                [word], stopwords="en", stemmer=self._stem, return_ids=False, show_progress=False
            )[0]
            if t in self._vocab
        ]
        if not toks:
            return 0.0
        n = self.size
        csc = self.retriever.scores
        df = [int(csc["indptr"][self._vocab[t] + 1] - csc["indptr"][self._vocab[t]]) for t in toks]
        return float(np.mean([np.log(1 + (n - d + 0.5) / (d + 0.5)) for d in df]))

    def scores(self, text: str, weights: dict[str, float] | None = None) -> np.ndarray:
        """BM25 score of every item for ``text``; ``weights`` (term -> w) scale per-term scores,
        which query expansion with adaptive term weights uses."""
        toks = self.tokens(text)
        if not toks:
            return np.zeros(self.size, dtype=np.float32)
        if not weights:
            return np.asarray(self.retriever.get_scores(toks), dtype=np.float32)
        bm25s = _lib()
        total = np.zeros(self.size, dtype=np.float32)
        for word, w in weights.items():
            wt = bm25s.tokenize(
                [word], stopwords="en", stemmer=self._stem, return_ids=False, show_progress=False
            )
            known = [t for t in wt[0] if t in self._vocab]
            if known and w:
                total += float(w) * np.asarray(self.retriever.get_scores(known), dtype=np.float32)
        return total
