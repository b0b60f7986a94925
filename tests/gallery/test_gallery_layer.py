"""The gallery layer: rank_text written once, the one in-memory gallery, the item rules."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest

from convir import ingest, open_index
from convir.encoders.base import l2_normalize
from convir.errors import ConvirError
from convir.eval.backends import RankerBackend
from convir.gallery.items import MAX_CAPTION_CHARS, cap_captions, item_document, item_vectors
from convir.gallery.layer import query_vectors
from convir.gallery.memory import MemoryGallery

CAPTIONS = [
    ["a brown dog running on a sandy beach", "a puppy plays by the sea"],
    ["a small red sailboat on blue water"],
    ["a yellow school bus parked on a city street", "a bus in town"],
    ["people drinking coffee at an outdoor cafe table"],
    ["a skier going down a snowy mountain slope", "winter sports in the alps"],
]


class HashEncoder:
    """A real (if crude) text encoder: hashed bag of words, L2-normalised; counts its calls."""

    spec = "test:hash"
    dim = 64

    def __init__(self) -> None:
        self.calls = 0

    def encode_text(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        self.calls += 1
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in t.lower().split():
                out[i, zlib.crc32(w.encode()) % self.dim] += 1.0
        return l2_normalize(out)


@pytest.fixture()
def mem() -> MemoryGallery:
    return MemoryGallery.from_captions([f"img{i}" for i in range(len(CAPTIONS))], CAPTIONS, HashEncoder())


def test_item_vector_is_the_normalised_mean_of_caption_vectors() -> None:
    enc = HashEncoder()
    vecs = item_vectors(enc, CAPTIONS)
    for row, caps in zip(vecs, CAPTIONS, strict=True):
        mean = enc.encode_text(caps).mean(axis=0)
        assert np.allclose(row, mean / np.linalg.norm(mean), atol=1e-6)
    assert enc.calls == 1 + len(CAPTIONS)  # all items' captions in one encoder call
    assert np.all(item_vectors(enc, [[], ["a dog"]])[0] == 0)  # no captions: matches nothing


def test_document_rule_and_caption_cap() -> None:
    assert item_document(["a dog", "on a beach"]) == "a dog . on a beach"
    long = "word " * 5000
    capped, cut = cap_captions(["short", long])
    assert cut == 1 and capped[0] == "short"
    assert len(capped[1]) <= MAX_CAPTION_CHARS and long.startswith(capped[1]) and not capped[1].endswith(" ")


@pytest.mark.parametrize("mode", ["dense", "bm25", "hybrid"])
def test_rank_text_is_encode_unless_bm25_then_rank(mem: MemoryGallery, mode: str) -> None:
    text = "a dog on the beach"
    vec = None if mode == "bm25" else mem.encoder.encode_text([text])[0]
    expected = mem.ranker.rank(vec, text, 3, mode)
    calls = mem.encoder.calls
    pos, scores = mem.rank_text(text, 3, mode)
    assert list(pos) == list(expected[0]) and np.allclose(scores, expected[1])
    assert mem.encoder.calls == calls + (0 if mode == "bm25" else 1)
    assert pos[0] == 0


def test_bm25_mode_never_loads_the_encoder() -> None:
    class Unloadable(MemoryGallery):
        @property
        def encoder(self) -> HashEncoder:
            raise AssertionError("the encoder was loaded")

    vecs = item_vectors(HashEncoder(), CAPTIONS)
    g = Unloadable([f"img{i}" for i in range(len(CAPTIONS))], CAPTIONS, vecs, None)
    assert g.rank_text("yellow school bus", 1, "bm25")[0][0] == 2
    assert query_vectors(g, ["a bus"], "bm25") is None
    backend = RankerBackend(g, "bm25")
    assert backend.ranks(["yellow school bus"], np.array([2])) == [1]


def test_bad_mode_fusion_and_empty_text_are_refused_before_encoding(mem: MemoryGallery) -> None:
    calls = mem.encoder.calls
    with pytest.raises(ConvirError, match="unknown mode"):
        mem.rank_text("a dog", 3, "nonsense")
    with pytest.raises(ConvirError, match="unknown fusion"):
        mem.rank_text("a dog", 3, "hybrid", fusion="max")
    with pytest.raises(ConvirError, match="empty"):
        mem.rank_text("  ", 3)
    with pytest.raises(ConvirError, match="unknown mode"):
        RankerBackend(mem, "nonsense")
    assert mem.encoder.calls == calls


def test_ranker_backend_ranks_agree_with_rank_text(mem: MemoryGallery) -> None:
    queries = ["a dog on the beach", "red sailboat", "coffee at a cafe", "snowy mountain skier"]
    targets = np.array([0, 1, 3, 4])
    for mode in ("dense", "bm25", "hybrid"):
        ranks = RankerBackend(mem, mode, depth=5).ranks(queries, targets)
        for q, t, r in zip(queries, targets, ranks, strict=True):
            pos, _ = mem.rank_text(q, 5, mode, pool=5)
            assert list(pos).index(t) + 1 == r, (mode, q)


def test_search_index_rank_text_is_what_search_returns(gallery: Path, tmp_path: Path) -> None:
    ingest(gallery, tmp_path / "ix")
    idx = open_index(tmp_path / "ix")
    for mode in ("dense", "bm25", "hybrid"):
        pos, scores = idx.rank_text("a dog running on the beach", 3, mode)
        hits = idx.search("a dog running on the beach", k=3, mode=mode)
        assert [idx.ids[int(p)] for p in pos] == [h.id for h in hits]
        assert np.allclose(scores, [h.score for h in hits])
    with pytest.raises(ConvirError, match="unknown mode"):
        idx.search("a dog", mode="nonsense")
    idx.close()
