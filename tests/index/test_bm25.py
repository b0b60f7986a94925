"""convir.index.bm25 directly: scores against the reference implementation (rank_bm25), the
tokenizer settings saved with an index, and galleries without any caption text."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convir.errors import ConvirError
from convir.index.bm25 import TOKENIZER_FILE, BM25Index, EmptyBM25, TokenizerSettings
from convir.index.ranker import Ranker
from convir.index.vector import AnnIndex

rank_bm25 = pytest.importorskip("rank_bm25")

CORPUS = [
    "a brown dog running on a sandy beach . a puppy plays by the sea",
    "a small red sailboat on blue water . a boat sailing near the shore",
    "a yellow school bus parked on a city street",
    "people drinking coffee at an outdoor cafe table",
    "a white kitchen with a bowl of green apples on the counter",
    "a skier going down a snowy mountain slope . winter sports in the alps",
    "two dogs playing in the snow near a red boat",
    "surfers riding waves at the beach at sunset",
]
QUERIES = ["dog on the beach", "red boat", "snowy dogs", "surfing at sunset", "coffee", "a cat"]


def _reference_scores(model: object, query_terms: list[str]) -> np.ndarray:
    return np.asarray(model.get_scores(query_terms), dtype=np.float64)  # type: ignore[attr-defined]


@pytest.mark.parametrize(("k1", "b"), [(1.5, 0.75), (1.2, 0.4), (2.0, 1.0)])
def test_okapi_matches_rank_bm25(k1: float, b: float) -> None:
    """bm25s documents method="atire" with idf_method="robertson" as rank_bm25's BM25Okapi
    (with epsilon=0, rank_bm25's floor for negative IDFs, which bm25s clips to 0)."""
    idx = BM25Index.build(CORPUS, k1=k1, b=b, method="atire", idf_method="robertson")
    assert isinstance(idx, BM25Index)
    ref = rank_bm25.BM25Okapi(idx.tokenizer.terms(CORPUS), k1=k1, b=b, epsilon=0.0)
    for q in QUERIES:
        assert np.allclose(idx.scores(q), _reference_scores(ref, idx.tokens(q)), atol=1e-5), q


def test_bm25_plus_matches_rank_bm25() -> None:
    """(rank_bm25's BM25L multiplies its score by the term frequency, unlike the published
    BM25L that bm25s implements, so only BM25+ is compared besides Okapi.)"""
    idx = BM25Index.build(CORPUS, k1=1.5, b=0.75, delta=0.5, method="bm25+")
    ref = rank_bm25.BM25Plus(idx.tokenizer.terms(CORPUS), k1=1.5, b=0.75, delta=0.5)
    for q in QUERIES:
        toks = idx.tokens(q)
        if not toks:
            continue  # BM25+ gives unknown words delta x idf 0 in both; nothing to compare
        assert np.allclose(idx.scores(q), _reference_scores(ref, toks), atol=1e-5), q


def test_the_default_lucene_variant_is_okapi_with_lucene_idf() -> None:
    """What `convir index` builds: Lucene BM25 = Okapi's tf part without the (k1 + 1) factor and
    IDF log(1 + (N - df + 0.5) / (df + 0.5)); checked on rank_bm25's own document statistics."""
    idx = BM25Index.build(CORPUS)
    assert idx.params["method"] == "lucene" and idx.params["k1"] == 1.5 and idx.params["b"] == 0.75
    ref = rank_bm25.BM25Okapi(idx.tokenizer.terms(CORPUS), k1=1.5, b=0.75)
    n = ref.corpus_size
    df: dict[str, int] = {}
    for doc in ref.doc_freqs:
        for term in doc:
            df[term] = df.get(term, 0) + 1
    ref.idf = {t: float(np.log(1 + (n - d + 0.5) / (d + 0.5))) for t, d in df.items()}
    for q in QUERIES:
        expected = _reference_scores(ref, idx.tokens(q)) / (1.5 + 1)
        assert np.allclose(idx.scores(q), expected, atol=1e-5), q
    for word in ("dog", "beach", "kitchen"):
        term = idx.tokens(word)[0]
        assert idx.idf(word) == pytest.approx(ref.idf[term], rel=1e-6)
    assert idx.idf("giraffe") == 0.0


@settings(max_examples=30, deadline=None)
@given(
    st.lists(
        st.lists(st.sampled_from(["red", "boat", "dog", "beach", "snow", "city", "bus", "tree"]), max_size=8),
        min_size=2,
        max_size=12,
    ),
    st.lists(st.sampled_from(["red", "boat", "dog", "beach", "snow", "cat"]), min_size=1, max_size=4),
)
def test_okapi_parity_on_random_corpora(docs: list[list[str]], query: list[str]) -> None:
    texts = [" ".join(d) for d in docs]
    idx = BM25Index.build(texts, method="atire", idf_method="robertson")
    if idx.empty:
        assert not any(docs)
        return
    ref = rank_bm25.BM25Okapi(idx.tokenizer.terms(texts), epsilon=0.0)
    q = " ".join(query)
    assert np.allclose(idx.scores(q), _reference_scores(ref, idx.tokens(q)), atol=1e-4)


def test_term_weights_scale_each_terms_scores() -> None:
    idx = BM25Index.build(CORPUS)
    dog, beach = idx.scores("dog"), idx.scores("beach")
    assert np.allclose(idx.scores("dog beach"), dog + beach, atol=1e-5)
    assert np.allclose(idx.scores("dog beach", weights={"dog": 1.0, "beach": 0.25}), dog + 0.25 * beach)


def test_tokenizer_settings_are_saved_and_honoured(tmp_path: Path) -> None:
    stemmed = BM25Index.build(CORPUS)
    stemmed.save(tmp_path / "stemmed")
    saved = json.loads((tmp_path / "stemmed" / TOKENIZER_FILE).read_text())
    assert saved == {
        "lower": True,
        "stopwords": "en",
        "stemmer": "english",
        "library": "bm25s",
        "stemmed": True,
    }
    loaded = BM25Index.load(tmp_path / "stemmed")
    assert loaded.settings == stemmed.settings
    assert loaded.scores("rides")[7] > 0  # stemmed: "rides" matches "riding"

    plain = BM25Index.build(CORPUS, TokenizerSettings(stemmer=None))
    plain.save(tmp_path / "plain")
    assert json.loads((tmp_path / "plain" / TOKENIZER_FILE).read_text())["stemmed"] is False
    reopened = BM25Index.load(tmp_path / "plain")  # PyStemmer is installed, yet not used
    assert reopened.settings.stemmer is None
    assert reopened.scores("rides")[7] == 0 and reopened.scores("riding")[7] > 0
    assert np.allclose(reopened.scores("red boat"), plain.scores("red boat"))


def test_a_stemmed_index_needs_pystemmer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    BM25Index.build(CORPUS).save(tmp_path / "bm25")
    monkeypatch.setitem(sys.modules, "Stemmer", None)  # import Stemmer now raises ImportError
    with pytest.raises(ConvirError, match="PyStemmer 'english' stemmer, which is not installed"):
        BM25Index.load(tmp_path / "bm25")
    assert TokenizerSettings.default().stemmer is None  # and a new build says it is unstemmed


def test_indexes_saved_before_the_settings_load_stemmed(tmp_path: Path) -> None:
    BM25Index.build(CORPUS).save(tmp_path / "old")
    (tmp_path / "old" / TOKENIZER_FILE).unlink()
    assert BM25Index.load(tmp_path / "old").settings.stemmer == "english"


@pytest.mark.parametrize("docs", [["", ""], ["the a", "of", ""], [" . ", ""]])
def test_documents_without_terms_give_an_empty_index(docs: list[str]) -> None:
    empty = BM25Index.build(docs)
    assert isinstance(empty, EmptyBM25) and empty.empty and empty.size == len(docs)
    assert empty.tokens("a dog") == [] and empty.idf("dog") == 0.0
    assert list(empty.scores("a dog")) == [0.0] * len(docs)


def test_partly_empty_documents_score_finitely() -> None:
    idx = BM25Index.build(["", "a red dog", "", "a boat"])
    scores = idx.scores("red dog")
    assert np.all(np.isfinite(scores)) and scores[1] > 0 and scores[[0, 2, 3]].tolist() == [0, 0, 0]


def test_ranker_without_caption_text_refuses_bm25_and_ranks_hybrid_as_dense() -> None:
    vecs = np.eye(3, dtype=np.float32)
    ranker = Ranker(AnnIndex(vecs, "flat", None), lambda: BM25Index.build(["", "", ""]))
    q = np.array([0.1, 0.9, 0.3], dtype=np.float32)
    with pytest.raises(ConvirError, match="no caption text"):
        ranker.rank(q, "a dog", 2, "bm25")
    dense = ranker.rank(q, "a dog", 3, "dense")
    for fusion in ("weighted", "rrf"):
        hybrid = ranker.rank(q, "a dog", 3, "hybrid", fusion=fusion)
        assert list(hybrid[0]) == list(dense[0]) == [1, 2, 0]
        assert np.allclose(hybrid[1], dense[1])
