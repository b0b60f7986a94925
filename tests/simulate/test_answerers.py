"""The facts simulated user: LLM-free answers that never contradict the held-out captions."""

from __future__ import annotations

from convir.dialog.reading import read
from convir.simulate.answerers import DONT_KNOW, FactAnswerer, load_answerer

HELD_OUT = {"t": ["a red sailboat on the sea at sunset", "a sail boat near a rocky harbour"]}
EVERYTHING = {"t": ["a boat on the water", "a small sailboat", "a dinghy with a mast", *HELD_OUT["t"]]}


def test_yes_no_and_dont_know_follow_the_facts() -> None:
    user = FactAnswerer(HELD_OUT, all_captions_by_id=EVERYTHING)
    assert user.answer("Is there a red sail in the photo?", "t").text == "yes"
    assert user.answer("Is the boat red?", "t").text == "yes"
    assert user.answer("Is there a dog in the photo?", "t").text == "no"  # no caption mentions one
    assert user.answer("Is there a mast in the photo?", "t").text == DONT_KNOW  # only the indexed text does
    assert read(DONT_KNOW, "Is there a mast in the photo?").polarity == "unknown"
    assert user.answer("Is it day or night?", "t").text == DONT_KNOW
    assert user.answer("Is it at sunset or at noon?", "t").text == "at sunset"


def test_open_questions_get_new_fact_phrases_then_dont_know() -> None:
    user = FactAnswerer(HELD_OUT, all_captions_by_id=EVERYTHING, phrases=2)
    said: list[str] = []
    for _ in range(8):
        said.append(user.answer("What else can you see in the photo?", "t").text)
    facts = " ".join(HELD_OUT["t"]).lower()
    for a in said[:2]:
        assert a != DONT_KNOW and all(w in facts for w in a.replace(",", " ").split())
    assert said[0] != said[1] and said[-1] == DONT_KNOW  # each phrase once; then nothing new


def test_facts_is_the_registered_llm_free_answerer() -> None:
    user = load_answerer("facts", None, HELD_OUT, all_captions_by_id=EVERYTHING)
    assert isinstance(user, FactAnswerer) and user.answer("Is there a harbour?", "t").text == "yes"
