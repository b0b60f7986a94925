"""Attributes from the encoder itself: the conversation on a gallery without captions (issue 29)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from convir.dialog.answers import AnswerModel, Fact, evidence, posterior_rerank
from convir.dialog.attributes import CaptionFreeGallery, soft_has, vocabulary
from convir.dialog.infogain import InfoGainOpenQuestioner, attribute_likelihoods
from convir.dialog.session import SessionSpec
from convir.dialog.state import DialogState, Exchange
from convir.dialog.strategies import Ranking
from convir.errors import ConvirError
from convir.gallery.memory import MemoryGallery

DIM = 32
DOG = np.eye(DIM, dtype=np.float32)[0]


class ControlledEncoder:
    """Text vectors under the test's control: "a photo of dog" is axis 0, any other text a fixed
    pseudo-random unit vector (so the photos' similarity to "dog" is known exactly)."""

    spec = "test:controlled"

    def encode_text(self, texts: list[str], batch_size: int = 128) -> np.ndarray:
        out = []
        for t in texts:
            if t == "a photo of dog":
                out.append(DOG)
                continue
            seed = int(hashlib.sha256(t.encode()).hexdigest()[:8], 16)
            v = np.random.default_rng(seed).normal(size=DIM).astype(np.float32)
            out.append(v / np.linalg.norm(v))
        return np.stack(out)


def photo_gallery(n: int = 40, dogs: tuple[int, ...] = (0, 1, 2)) -> MemoryGallery:
    """n caption-less photos; the ``dogs`` show a dog (their vectors lean to the dog axis)."""
    rng = np.random.default_rng(1)
    v = rng.normal(size=(n, DIM)).astype(np.float32) * 0.3
    v[:, 0] = 0.0
    for d in dogs:
        v[d, 0] = 2.0
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return MemoryGallery([f"p{i}" for i in range(n)], [[] for _ in range(n)], v, ControlledEncoder())


def test_encoder_scores_attributes_of_caption_less_photos() -> None:
    g = photo_gallery()
    p = soft_has(g, ["dog"], [0, 1, 2, 3, 4, 5])[0]
    assert p[:3].min() > 0.9 and p[3:].max() < 0.5


def test_no_moves_a_photo_that_shows_it_down_and_yes_lifts_it() -> None:
    g = photo_gallery()
    pos = np.array([0, *range(3, 12)])  # photo 0 shows a dog, is first; the others do not
    scores = np.linspace(0.5, 0.49, len(pos)).astype(np.float32)
    ranking = Ranking(pos, scores, "a photo")
    down = posterior_rerank(ranking, g, [Fact("dog", "no")], AnswerModel())
    assert int(down.positions[0]) != 0 and list(down.positions).index(0) == len(pos) - 1
    last = Ranking(pos[::-1].copy(), scores, "a photo")  # photo 0 last
    up = posterior_rerank(last, g, [Fact("dog", "yes")], AnswerModel())
    assert int(up.positions[0]) == 0


def test_yes_no_about_any_mentioned_attribute_is_scored_without_captions() -> None:
    g = photo_gallery()
    state = DialogState("a photo", [Exchange("Is there a dog?", "no")])
    facts = evidence(state)
    assert [(f.phrase, f.reading) for f in facts] == [("dog", "no")]
    pos = np.array([0, 3, 4, 5])
    out = posterior_rerank(Ranking(pos, np.full(4, 0.5, np.float32), "a photo"), g, facts, AnswerModel())
    assert int(out.positions[-1]) == 0


def test_infogain_open_asks_an_attribute_question_without_captions() -> None:
    g = photo_gallery()
    pos = np.arange(20)
    ranking = Ranking(pos, np.full(20, 0.5, np.float32), "a photo")
    q = InfoGainOpenQuestioner().ask(DialogState("a photo"), g, ranking)
    assert q is not None and q.attribute, q
    assert q.attribute in vocabulary()


def test_infogain_open_asks_an_open_question_when_no_attribute_helps() -> None:
    g = MemoryGallery(["a", "b"], [[], []], np.eye(2, DIM, dtype=np.float32), ControlledEncoder())
    ranking = Ranking(np.arange(2), np.array([9.0, 0.0], np.float32), "x")  # already certain
    q = InfoGainOpenQuestioner().ask(DialogState("x"), g, ranking)
    assert q is not None and q.info.get("open")


def test_soft_likelihoods_match_the_boolean_ones_at_0_and_1() -> None:
    hard = attribute_likelihoods(np.array([[True, False]]), 0.15, 0.3, 0.1)
    soft = attribute_likelihoods(np.array([[1.0, 0.0]]), 0.15, 0.3, 0.1)
    assert np.allclose(hard, soft)
    half = attribute_likelihoods(np.array([[0.5]]), 0.15, 0.3, 0.1)
    assert np.isclose(half[0, 0, 0], (0.5 * 0.85 + 0.5 * 0.1) * 0.7)


def test_caption_free_gallery_hides_captions_and_refuses_bm25() -> None:
    inner = MemoryGallery(["a"], [["a red boat"]], np.eye(1, DIM, dtype=np.float32), ControlledEncoder())
    g = CaptionFreeGallery(inner)
    assert g.captions([0]) == [[]] and g.ids == ["a"]
    with pytest.raises(ConvirError, match="captions"):
        g.rank_text("boat", 1, "bm25")


def test_user_vocabulary_file_adds_phrases(tmp_path: Path) -> None:
    f = tmp_path / "v.txt"
    f.write_text("# mine\nlighthouse\ndog\n")
    words = vocabulary(f)
    assert "lighthouse" in words and words.count("dog") == 1 and "lighthouse" not in vocabulary()


def test_default_questioner_without_an_llm_is_infogain_open() -> None:
    assert SessionSpec().resolved(have_llm=False).questioner == "infogain-open"
    assert SessionSpec(llm="llamacpp:smollm2").resolved().questioner == "plain"
