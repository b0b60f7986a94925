"""BM25 over item captions with bm25s (sparse matrices; fast to build and to score).

Tokenisation: lower-case, English stop words removed, Snowball stemming with PyStemmer, so
"surfers"/"surfing" match captions about "surf". The tokenizer settings are part of the
index: they are saved beside bm25s's own files (``tokenizer.json``) and a loaded index
tokenises queries exactly as its documents were tokenised, whatever is installed at load
time; an index stemmed with PyStemmer refuses to open without it instead of silently
matching nothing.

A gallery without any caption text (a folder of photos indexed with an image tower) has no
BM25 index: :class:`EmptyBM25` stands in for it, scoring every item 0, and
:class:`convir.index.ranker.Ranker` turns that into a clear error for ``--mode bm25`` and
dense-only ranking for ``--mode hybrid``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from convir.errors import ConvirError

TOKENIZER_FILE = "tokenizer.json"
DEFAULT_STEMMER = "english"
log = logging.getLogger("convir")


def _lib() -> Any:
    """Import bm25s; it forces its logger to DEBUG on import, which would print to users."""
    import bm25s

    logging.getLogger("bm25s").setLevel(logging.WARNING)
    return bm25s


def _load_stemmer(name: str) -> Any:
    """A PyStemmer stemmer, or ConvirError when the library or the language is missing."""
    try:
        import Stemmer
    except ImportError as exc:
        raise ConvirError(
            f"this BM25 index was built with the PyStemmer {name!r} stemmer, which is not installed: "
            "pip install PyStemmer (or rebuild the index with `convir index ... --rebuild`)"
        ) from exc
    try:
        return Stemmer.Stemmer(name)
    except KeyError as exc:
        raise ConvirError(f"PyStemmer has no {name!r} stemmer; available: {Stemmer.algorithms()}") from exc


def stemmer_available() -> bool:
    try:
        import Stemmer  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass(frozen=True)
class TokenizerSettings:
    """How documents and queries are split into terms (saved with every BM25 index).

    ``stemmer`` is the Snowball stemmer actually used (None = none), so ``stemmed`` records
    whether the index was stemmed at all."""

    lower: bool = True
    stopwords: str | None = "en"
    stemmer: str | None = DEFAULT_STEMMER
    library: str = "bm25s"

    @property
    def stemmed(self) -> bool:
        return self.stemmer is not None

    @classmethod
    def default(cls) -> TokenizerSettings:
        """Stem with PyStemmer (a core dependency); without it, warn and build unstemmed."""
        if stemmer_available():
            return cls()
        log.warning("PyStemmer is not installed: BM25 is built without stemming (less recall)")
        return cls(stemmer=None)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "stemmed": self.stemmed}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TokenizerSettings:
        return cls(
            lower=bool(data.get("lower", True)),
            stopwords=data.get("stopwords"),
            stemmer=data.get("stemmer") if data.get("stemmed", True) else None,
        )


class Tokenizer:
    """Applies :class:`TokenizerSettings` with bm25s's tokenizer."""

    def __init__(self, settings: TokenizerSettings) -> None:
        self.settings = settings
        self._stemmer = _load_stemmer(settings.stemmer) if settings.stemmer else None

    def __call__(self, texts: list[str], return_ids: bool = False) -> Any:
        return _lib().tokenize(
            texts,
            lower=self.settings.lower,
            stopwords=self.settings.stopwords,
            stemmer=self._stemmer,
            return_ids=return_ids,
            show_progress=False,
        )

    def terms(self, texts: list[str]) -> list[list[str]]:
        """Term strings per text (what rank_bm25 and friends take as input)."""
        return [list(t) for t in self(texts, return_ids=False)]


class BM25Index:
    """Caption BM25; one document per item (:func:`convir.gallery.items.item_document`).

    ``params`` go to ``bm25s.BM25`` (k1, b, delta, method, idf_method) and are saved by bm25s
    itself; the defaults (Lucene BM25, k1 1.5, b 0.75) are what ``convir index`` builds."""

    empty = False

    def __init__(self, retriever: Any, tokenizer: Tokenizer) -> None:
        self.retriever = retriever
        self.tokenizer = tokenizer
        self._vocab: dict[str, int] = retriever.vocab_dict

    @property
    def settings(self) -> TokenizerSettings:
        return self.tokenizer.settings

    @classmethod
    def build(
        cls, documents: list[str], settings: TokenizerSettings | None = None, **params: Any
    ) -> BM25Index | EmptyBM25:
        """Index ``documents``; an :class:`EmptyBM25` when none of them has a single term."""
        tokenizer = Tokenizer(settings or TokenizerSettings.default())
        tokens = tokenizer(list(documents), return_ids=True)
        if not tokens.vocab:
            return EmptyBM25(len(documents))
        retriever = _lib().BM25(**params)
        with np.errstate(invalid="ignore", divide="ignore"):  # empty documents: 0/0 in unused cells
            retriever.index(tokens, show_progress=False)
        return cls(retriever, tokenizer)

    def save(self, folder: Path) -> None:
        folder = Path(folder)
        self.retriever.save(str(folder), show_progress=False)
        (folder / TOKENIZER_FILE).write_text(json.dumps(self.settings.to_dict(), indent=2), encoding="utf-8")

    @classmethod
    def load(cls, folder: Path) -> BM25Index:
        """Open a saved index with the tokenizer it was built with.

        Indexes written before the settings were saved (no ``tokenizer.json``) were stemmed
        whenever PyStemmer was installed, which it is as a core dependency."""
        folder = Path(folder)
        spec = folder / TOKENIZER_FILE
        if spec.exists():
            settings = TokenizerSettings.from_dict(json.loads(spec.read_text(encoding="utf-8")))
        else:
            settings = TokenizerSettings() if stemmer_available() else TokenizerSettings(stemmer=None)
        tokenizer = Tokenizer(settings)
        return cls(_lib().BM25.load(str(folder), mmap=False, show_progress=False), tokenizer)

    @property
    def size(self) -> int:
        return int(self.retriever.scores["num_docs"])

    @property
    def params(self) -> dict[str, Any]:
        r = self.retriever
        return {"k1": r.k1, "b": r.b, "delta": r.delta, "method": r.method, "idf_method": r.idf_method}

    def _known(self, text: str) -> list[str]:
        return [t for t in self.tokenizer.terms([text])[0] if t in self._vocab]

    def tokens(self, text: str) -> list[str]:
        """Query tokens known to the index (unknown words cannot score anyway)."""
        return self._known(text)

    def idf(self, word: str) -> float:
        """Lucene BM25 IDF of ``word`` (after stemming; 0 for words absent from the gallery);
        query expansion weighs its terms by it."""
        toks = self._known(word)
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
        total = np.zeros(self.size, dtype=np.float32)
        for word, w in weights.items():
            known = self._known(word)
            if known and w:
                total += float(w) * np.asarray(self.retriever.get_scores(known), dtype=np.float32)
        return total


class EmptyBM25:
    """The BM25 side of a gallery without caption text: no terms, every score 0."""

    empty = True
    settings = None

    def __init__(self, size: int) -> None:
        self._size = int(size)

    @property
    def size(self) -> int:
        return self._size

    def tokens(self, text: str) -> list[str]:
        return []

    def idf(self, word: str) -> float:
        return 0.0

    def scores(self, text: str, weights: dict[str, float] | None = None) -> np.ndarray:
        return np.zeros(self._size, dtype=np.float32)
