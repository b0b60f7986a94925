"""Bounded prompts (``prompt_turns``) and one LLM call per distinct prompt per turn."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from conftest import run_cli
from convir.dialog.gallery import MemoryGallery
from convir.dialog.session import SessionSpec, build_conversation
from convir.dialog.state import DialogState, Exchange
from convir.dialog.strategies import RewriteStrategy
from convir.errors import ConvirError
from convir.llm.base import GenParams
from dialog_helpers import boat_gallery

EXCHANGES = [
    Exchange("is it day or night", "at sunset"),
    Exchange("what colour is the sail", "red"),
    Exchange("is anyone on board", "no"),
    Exchange("is the sea calm", "yes, very calm"),
    Exchange("are there clouds", "a few clouds"),
]


@pytest.fixture(scope="module")
def gallery() -> MemoryGallery:
    return boat_gallery()


def test_prompts_show_the_description_and_the_last_n_exchanges() -> None:
    st = DialogState("a boat on the water", list(EXCHANGES), spec={"prompt_turns": 2})
    assert st.dialogue_line() == (
        "a boat on the water | Q: is the sea calm A: yes, very calm | Q: are there clouds A: a few clouds"
    )
    assert st.dialogue_text().splitlines()[0] == "Description: a boat on the water"
    assert len(st.dialogue_text().splitlines()) == 3
    for spec in ({"prompt_turns": 0}, {}):  # 0 and sessions saved before the setting: all
        assert DialogState("a boat", list(EXCHANGES), spec=spec).dialogue_line().count("Q:") == 5
    assert len(st.turns) == 6  # the retrieval query (concat) still has every exchange


class Echo:
    """A rewriter that only knows what its prompt shows: it returns the prompt's answers."""

    spec, instruct = "echo:test", True

    def __init__(self) -> None:
        self.prompts: list[str] = []

    def chat(self, messages: list[dict[str, str]], params: GenParams | None = None) -> str:
        text = messages[-1]["content"]
        self.prompts.append(text)
        answers = [ln.split(" A: ", 1)[1] for ln in text.splitlines() if " A: " in ln]
        return "a boat on the water, " + ", ".join(answers)

    def complete(self, prompt: str, params: GenParams | None = None) -> str:
        raise AssertionError("instruct models use chat()")


def test_rewrite_keeps_facts_older_than_the_window(gallery: MemoryGallery) -> None:
    llm = Echo()
    st = DialogState("a boat on the water", list(EXCHANGES), spec={"prompt_turns": 1})
    query = RewriteStrategy(llm).rank(st, gallery, 3).query
    assert "sunset" not in llm.prompts[-1] and "a few clouds" in llm.prompts[-1]  # the window
    for fact in ("at sunset", "red", "very calm", "a few clouds"):  # older facts are added back
        assert fact in query
    lost = RewriteStrategy(llm, keep_answers=False).rank(st, gallery, 3).query
    assert "sunset" not in lost  # without keep_answers the window really drops them


class Recorder:
    """A deterministic few-shot model that records every (prompt, params) it is sent."""

    spec, instruct = "recorder:test", False

    def __init__(self) -> None:
        self.calls: list[tuple[str, GenParams]] = []

    def chat(self, messages: list[dict[str, str]], params: GenParams | None = None) -> str:
        raise AssertionError("few-shot models use complete()")

    def complete(self, prompt: str, params: GenParams | None = None) -> str:
        self.calls.append((prompt, params or GenParams()))
        last = prompt.rsplit("\n\n", 1)[-1]
        if last.rstrip().endswith("Question:"):
            return f" is there a thing number {len(self.calls)}?"
        if last.rstrip().endswith("Answer:"):
            return " yes" if "sea" in last else " Uncertain"
        return " a boat on the sea at sunset with a red sail"


@pytest.mark.parametrize(
    "strategy,questioner",
    [
        ("concat", "plain"),
        ("rewrite", "plain"),
        ("expand", "plain"),
        ("rewrite", "candidates"),
        ("rerank", "plain"),
    ],
)
def test_no_identical_llm_call_twice_in_a_turn(
    gallery: MemoryGallery, strategy: str, questioner: str
) -> None:
    llm = Recorder()
    spec = SessionSpec(strategy=strategy, questioner=questioner, k=3, depth=8)  # the LLM is given
    conv = build_conversation(spec, gallery, llm=llm)
    conv.start("a boat on the water")
    for answer in ("yes", "at sunset", "red", "no"):
        before = len(llm.calls)
        conv.reply(answer)
        turn = [(p, repr(params)) for p, params in llm.calls[before:]]
        assert turn, "every turn of these settings calls the LLM"
        repeated = [c for c, n in Counter(turn).items() if n > 1]
        assert not repeated, f"{len(repeated)} identical call(s) in one turn: {repeated[0][0][-200:]!r}"


def test_prompt_turns_is_validated_before_anything_loads(tmp_path: Any) -> None:
    with pytest.raises(ConvirError, match="prompt-turns"):
        SessionSpec(prompt_turns=-1).validate()
    assert SessionSpec().validate().prompt_turns == 3
    res = run_cli("eval", "dialog", "--dataset", "coco5k-sim", str(tmp_path), "--prompt-turns", "-2")
    assert res.returncode == 2 and "prompt-turns" in res.stderr and "Traceback" not in res.stderr
