"""Questions by expected information gain, answers that count (posterior), image choice and
relevance feedback: the entropy choice and the updates pinned on hand-computed cases, then the
loop end to end on a small real gallery (MiniLM)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli
from convir.dialog.answers import (
    AnswerAwareStrategy,
    AnswerModel,
    Fact,
    evidence,
    negated_phrases,
    posterior_rerank,
    question_attribute,
    read_answer,
    text_view,
)
from convir.dialog.engine import Conversation, parse_choice
from convir.dialog.gallery import MemoryGallery
from convir.dialog.infogain import (
    ChoiceQuestioner,
    InfoGainOpenQuestioner,
    InfoGainQuestioner,
    attribute_likelihoods,
    expected_entropy,
    question_for,
    stalled_answers,
)
from convir.dialog.questioners import Question
from convir.dialog.state import DialogState, Exchange
from convir.dialog.strategies import ConcatStrategy, Ranking
from convir.errors import ConvirError
from convir.text import content_stems

CAPTIONS = [
    ["a brown dog running on a sandy beach"],
    ["an empty sandy beach with waves"],
    ["a red sailboat on the sea at sunset"],
    ["a white sailboat on a calm sea"],
    ["a yellow bus on a city street"],
    ["people at an outdoor cafe table"],
]


@pytest.fixture(scope="module")
def gallery() -> MemoryGallery:
    from convir.encoders import load_encoder

    enc = load_encoder("caption:minilm")
    ids = [f"img{i}" for i in range(len(CAPTIONS))]
    return MemoryGallery(ids, CAPTIONS, enc.encode_text([c[0] for c in CAPTIONS]), enc)


# -- hand-computed cases ---------------------------------------------------------------------------
def test_the_attribute_that_halves_the_candidates_is_asked() -> None:
    # 4 equally likely candidates; A is in {0, 1}, B only in {0}; noise-free answers:
    # after A 2 candidates are left either way: E[H] = ln 2; after B: 1/4 * 0 + 3/4 * ln 3
    prior = np.full(4, 0.25)
    has = np.array([[1, 1, 0, 0], [1, 0, 0, 0]], dtype=bool)
    got = expected_entropy(prior, attribute_likelihoods(has, eps=0.0, unknown=0.0))
    assert got == pytest.approx([math.log(2), 0.75 * math.log(3)])
    gains = InfoGainQuestioner(eps=0.0, unknown=0.0).gains(prior, has)
    assert int(np.argmax(gains)) == 0 and gains[0] == pytest.approx(math.log(2))
    # "unknown" with probability u scales every gain by (1 - u): the choice does not change
    damped = InfoGainQuestioner(eps=0.0, unknown=0.4).gains(prior, has)
    assert damped == pytest.approx(0.6 * gains)


def test_a_no_moves_the_candidates_that_have_the_attribute_down_by_the_likelihood_ratio(
    gallery: MemoryGallery,
) -> None:
    # p(item | no) ∝ p(item) * P(no | has/lacks): equal priors, eps = 0.1 -> 0.1 : 0.9
    model = AnswerModel(temperature=0.1, eps=0.1)
    ranking = Ranking(np.array([0, 1]), np.array([0.5, 0.5], dtype=np.float32), "a beach")
    out = posterior_rerank(ranking, gallery, [Fact("dog", "no")], model)
    assert out.positions.tolist() == [1, 0]  # the beach without the dog first
    post = np.exp(out.scores / model.temperature)
    post /= post.sum()
    assert post == pytest.approx([0.9, 0.1], rel=1e-5)
    # a "yes" does the opposite
    yes = posterior_rerank(ranking, gallery, [Fact("dog", "yes")], model)
    assert yes.positions.tolist() == [0, 1]
    assert posterior_rerank(ranking, gallery, [], model) is ranking  # no facts: untouched


def test_captions_that_omit_a_thing_are_weak_evidence_of_its_absence(gallery: MemoryGallery) -> None:
    # miss = P(yes | the item's text does not mention it) = 0.4, eps = P(no | mentioned) = 0.1
    model = AnswerModel(temperature=0.1, eps=0.1, miss=0.4)
    ranking = Ranking(np.array([0, 1]), np.array([0.5, 0.5], dtype=np.float32), "a beach")

    def posterior(fact: Fact) -> list[float]:
        out = posterior_rerank(ranking, gallery, [fact], model)
        p = np.exp(out.scores / model.temperature)
        return dict(zip(out.positions.tolist(), (p / p.sum()).tolist(), strict=True))

    yes, no = posterior(Fact("dog", "yes")), posterior(Fact("dog", "no"))
    assert [yes[0], yes[1]] == pytest.approx([0.9 / 1.3, 0.4 / 1.3], rel=1e-5)  # 0.9 : 0.4
    assert [no[0], no[1]] == pytest.approx([0.1 / 0.7, 0.6 / 0.7], rel=1e-5)  # 0.1 : 0.6
    # the questioner models answers the same way: P(yes), P(no), P(unknown) per item
    lik = attribute_likelihoods(np.array([[True, False]]), eps=0.1, unknown=0.5, miss=0.4)
    assert lik[0] == pytest.approx(np.array([[0.45, 0.2], [0.05, 0.3], [0.5, 0.5]]))


def test_choice_gain_matches_the_hand_count() -> None:
    # 4 candidates, 2 options; items 0, 2 are nearest option 0 and 1, 3 option 1 -> halves
    vecs = np.array([[1, 0], [0, 1], [0.9, 0.1], [0.1, 0.9]], dtype=np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)

    class G:
        class ranker:
            vectors = vecs

    q = ChoiceQuestioner(eps=0.0, unknown=0.0)
    gain = q.choice_gain(G, np.arange(4), np.full(4, 0.25), [0, 1])
    assert gain == pytest.approx(math.log(2))


# -- reading answers -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("answer", "reading"),
    [
        ("yes", "yes"),
        ("Yes, a wooden table", "yes"),
        ("no", "no"),
        ("no, it is not red", "no"),
        ("There is no dog", "no"),
        ("nope", "no"),
        ("unknown", "unknown"),
        ("I don't know", "unknown"),
        ("", "unknown"),
        ("a red one", "text"),
    ],
)
def test_read_answer(answer: str, reading: str) -> None:
    assert read_answer(answer) == reading


def test_attributes_and_negations() -> None:
    assert question_attribute("Is the boat red?") == "boat red"
    assert question_attribute("What colour is the boat?") is None
    assert question_attribute("Is there a dog in the photo?") == "dog"
    assert question_attribute("Is it indoors or outdoors?") is None  # an alternative question
    assert negated_phrases("no, it is not red") == ["red"]
    assert negated_phrases("the dog is not black") == ["black"]
    assert negated_phrases("a beach without people") == ["people"]
    assert negated_phrases("no") == []
    assert question_for("red sail") == "Is there a red sail in the photo?"
    assert question_for("umbrella") == "Is there an umbrella in the photo?"
    assert question_for("people") == "Is there people in the photo?"


def test_evidence_and_the_text_view() -> None:
    st = DialogState(
        "a beach, not at night",
        [
            Exchange("Is there a red sail in the photo?", "no", attribute="red sail"),
            Exchange("Is there a dog?", "yes, a brown one"),
            Exchange("What is the weather?", "unknown"),
            Exchange(None, "the sand is not wet"),
            Exchange("Is there a bus in the photo?", "yes", attribute="bus"),
        ],
    )
    got = {(f.phrase, f.reading) for f in evidence(st)}
    assert got == {("night", "no"), ("red sail", "no"), ("dog", "yes"), ("wet", "no"), ("bus", "yes")}
    view = text_view(st)
    assert view.turns == ["a beach", "Is there a dog? yes, a brown one", "the sand is", "bus"]


# -- the loop ---------------------------------------------------------------------------------------
def test_a_no_answer_no_longer_reads_as_evidence_for_the_thing(gallery: MemoryGallery) -> None:
    st = DialogState("a sandy beach", [Exchange("Is there a dog?", "no")])
    aware = AnswerAwareStrategy(ConcatStrategy(), aware=True).rank(st, gallery, 6)
    text = AnswerAwareStrategy(ConcatStrategy(), aware=False).rank(st, gallery, 6)
    ids = [gallery.ids[int(p)] for p in aware.positions]
    assert ids.index("img1") < ids.index("img0")  # the empty beach above the dog
    assert "dog" in text.query and "dog" not in aware.query  # text mode: the papers' query
    assert aware.info["facts"] == [["dog", "no"]]


def test_infogain_never_repeats_an_attribute_or_asks_what_is_known(gallery: MemoryGallery) -> None:
    q = InfoGainQuestioner(top_n=6)
    state = DialogState("a photo of something")
    ranking = AnswerAwareStrategy(ConcatStrategy()).rank(state, gallery, 6)
    first = q.ask(state, gallery, ranking)
    assert first is not None and first.attribute and first.text.startswith("Is there")
    state.exchanges.append(Exchange(first.text, "no", attribute=first.attribute))
    second = q.ask(state, gallery, AnswerAwareStrategy(ConcatStrategy()).rank(state, gallery, 6))
    assert second is not None and second.attribute != first.attribute
    # an attribute the description states is not asked
    sea = DialogState("a sailboat on the sea")
    for _ in range(4):
        got = q.ask(sea, gallery, AnswerAwareStrategy(ConcatStrategy()).rank(sea, gallery, 6))
        if got is None:
            break
        # "white sailboat" may be asked, "sailboat" or "sea" alone say nothing new
        assert not content_stems(got.attribute) <= content_stems(sea.description)
        sea.exchanges.append(Exchange(got.text, "unknown", attribute=got.attribute))


def test_infogain_open_asks_an_open_question_once_yes_no_questions_stall(gallery: MemoryGallery) -> None:
    q = InfoGainOpenQuestioner(top_n=6, open_after=2)
    state = DialogState("a photo of something")

    def ask() -> Question:
        got = q.ask(state, gallery, AnswerAwareStrategy(ConcatStrategy()).rank(state, gallery, 6))
        assert got is not None
        return got

    for answer in ["no", "unknown"]:  # two attribute questions that found nothing
        got = ask()
        assert got.attribute and not got.info.get("open")
        state.exchanges.append(Exchange(got.text, answer, attribute=got.attribute))
    assert stalled_answers(state) == 2
    first_open = ask()
    assert first_open.attribute is None and first_open.info == {"open": True, "stalled": 2}
    assert not first_open.text.startswith("Is ")  # an open question, in the user's own words
    state.exchanges.append(Exchange(first_open.text, "a sandy beach with waves"))
    assert stalled_answers(state) == 0 and ask().attribute  # its answer resets the count
    # a "yes" resets it too; and an open question is never asked twice
    state.exchanges += [Exchange("Is there a dog?", "yes", attribute="dog")]
    assert stalled_answers(state) == 0
    state.exchanges += [Exchange(f"Is there {w}?", "no", attribute=w) for w in ("a bus", "a cafe")]
    second_open = ask()
    assert second_open.info.get("open") and second_open.text != first_open.text
    # plain infogain never asks one
    assert (
        InfoGainQuestioner(top_n=6)
        .ask(state, gallery, AnswerAwareStrategy(ConcatStrategy()).rank(state, gallery, 6))
        .attribute
    )


def test_image_choice_and_more_less_are_relevance_feedback(gallery: MemoryGallery) -> None:
    conv = Conversation(
        gallery, AnswerAwareStrategy(ConcatStrategy()), ChoiceQuestioner(top_n=6, options=3), k=6
    )
    res = conv.start("a boat on the water")
    first = [gallery.ids[int(p)] for p in res.ranking.positions]
    if res.options:  # a choice question: pick the red sailboat if offered, else the first option
        pick = "img2" if "img2" in res.options else res.options[0]
        res = conv.reply(str(res.options.index(pick) + 1))
        assert conv.state.exchanges[-1].kind == "choice" and conv.state.exchanges[-1].chosen == pick
        assert "option" not in res.ranking.query  # a choice is feedback, not query text
    before = [gallery.ids[int(p)] for p in conv.last.ranking.positions]
    res = conv.less(before[0])
    after = [gallery.ids[int(p)] for p in res.ranking.positions]
    assert after.index(before[0]) > 0 and res.ranking.info["feedback"]["less"] >= 1
    res = conv.more("img4")  # the bus: results like it move up
    moved = [gallery.ids[int(p)] for p in res.ranking.positions]
    assert moved.index("img4") < after.index("img4") or after.index("img4") == 0
    assert conv.state.feedback[-1] == ("img4", 1) and first  # kept in the state
    with pytest.raises(ConvirError):
        conv.more("nope")


def test_not_this_on_the_chosen_option_rules_it_out(gallery: MemoryGallery) -> None:
    """Choosing an option and then "not this" on it: the later word wins, and a ruled-out item
    sits below every other candidate until the user asks for more like it."""
    from convir.dialog.state import DialogState, Exchange

    st = DialogState("a boat")
    options = ["img2", "img0"]
    st.exchanges.append(Exchange("Which?", "option 1", kind="choice", options=options, chosen="img2"))
    st.exchanges.append(Exchange(None, "not img2", kind="less", chosen="img2"))
    assert st.feedback == [("img0", -1), ("img2", -1)] and st.rejected == ["img2"]
    conv = Conversation(gallery, AnswerAwareStrategy(ConcatStrategy()), None, k=6)
    res = conv.start("a red sail on the water")
    top = gallery.ids[int(res.ranking.positions[0])]
    res = conv.more(top)
    assert gallery.ids[int(res.ranking.positions[0])] == top  # more like it: still first
    res = conv.less(top)
    ids = [gallery.ids[int(p)] for p in res.ranking.positions]
    assert ids[-1] == top and res.ranking.info["demoted"] == 1
    assert list(res.ranking.scores) == sorted(res.ranking.scores, reverse=True)
    res = conv.more(top)  # changed their mind
    assert conv.state.rejected == [] and gallery.ids[int(res.ranking.positions[0])] == top


def test_parse_choice() -> None:
    opts = ["a", "b", "c"]
    assert parse_choice("2", opts) == "b" and parse_choice("option 3", opts) == "c"
    assert parse_choice("the first one", opts) == "a" and parse_choice("b", opts) == "b"
    assert parse_choice("none", opts) is None and parse_choice("none of these", opts) is None
    with pytest.raises(ConvirError, match="option number 1-3"):
        parse_choice("7", opts)


def test_simulated_user_says_no_to_what_the_photo_lacks_and_picks_the_closest_option(
    gallery: MemoryGallery,
) -> None:
    from convir.simulate.answerers import CaptionAnswerer

    class NoLLM:
        spec, instruct = "test:never", True

        def chat(self, *a: object, **k: object) -> str:
            raise AssertionError("the LLM should not be needed")

        complete = chat

    user = CaptionAnswerer(
        NoLLM(),
        {"t": ["a dog on a beach"]},
        all_captions_by_id={"t": ["a dog on a beach", "a brown dog by the sea"]},
        encoder=gallery.encoder,
    )
    assert user.answer("Is there a cat in the photo?", "t").text == "no"
    assert not user.absent("Is it indoors or outdoors?", "t")  # not a yes/no question: the LLM answers
    vecs = gallery.ranker.vectors[[4, 0, 2]]  # bus, dog, sailboat
    assert user.choose(vecs, "t") == 1


def test_jsonl_sim_format_and_its_errors(tmp_path: Path) -> None:
    from convir.datasets.simjsonl import load_sim_jsonl

    good = tmp_path / "sim.jsonl"
    rows = [
        {"id": "a", "text": ["a dog on a beach"], "description": "a dog", "facts": ["the dog is brown"]},
        {"id": "b", "text": "a cat on a sofa"},
    ]
    good.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    recs = load_sim_jsonl(good)
    assert (
        [r.id for r in recs] == ["a", "b"]
        and recs[1].text == ("a cat on a sofa",)
        and recs[1].description is None
    )
    for bad, message in [
        ({"id": "c"}, 'needs "text" or an "image"'),
        ({"id": "a", "text": ["x"]}, "duplicate id 'a'"),
        ({"id": "d", "text": [1]}, "text[0] must be str"),
        ({"id": "e", "text": ["x"], "colour": "red"}, "unknown key"),
        ({"id": "f", "text": ["x"], "image": "nope.jpg"}, "not found"),
    ]:
        path = tmp_path / "bad.jsonl"
        path.write_text("\n".join(json.dumps(r) for r in [rows[0], bad]) + "\n")
        with pytest.raises(ConvirError, match=re.escape(message)) as err:
            load_sim_jsonl(path)
        assert "line 2" in str(err.value)


@pytest.mark.e2e
def test_eval_dialog_with_infogain_on_a_jsonl_collection(tmp_path: Path) -> None:
    """The real CLI end to end: infogain (no LLM questions) and choice on the user's own
    collection, the gallery/start options, answer-aware vs text handling recorded."""
    rows = [{"id": f"i{i}", "text": c} for i, c in enumerate(CAPTIONS)]
    rows[0] |= {"description": "a dog on a beach", "facts": ["a brown dog runs on the sand"]}
    rows[2] |= {"description": "a boat at sunset", "facts": ["the sail is red"]}
    sim = tmp_path / "sim.jsonl"
    sim.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    for questioner, answers in (("infogain", "aware"), ("choice", "text")):
        out = tmp_path / f"run-{questioner}"
        res = run_cli(
            "eval", "dialog", str(sim), "--dataset", "jsonl-sim", "--questioner", questioner,
            "--answers", answers, "--start", "vague:2", "--turns", "3", "--llm", "llamacpp:smollm2",
            "--out", str(out), "--json",
        )  # fmt: skip
        assert res.returncode == 0, res.stderr
        report = json.loads((out / "report.json").read_text())
        assert report["n_targets"] == 2 and len(report["metrics"]["hits@10"]) == 4
        assert report["config"]["start"] == "vague:2" and report["config"]["questioner"] == questioner
        assert (report["config"].get("answers") == "text") == (answers == "text")
    bad = run_cli(
        "eval", "dialog", str(sim), "--dataset", "jsonl-sim", "--start", "fuzzy", "--out", str(tmp_path / "x")
    )
    assert bad.returncode == 2 and "--start must be full or vague:N" in bad.stderr
