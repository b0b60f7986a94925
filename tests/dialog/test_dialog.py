"""Strategies and the conversation loop on a real MiniLM gallery, with a scripted LLM."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import run_cli
from convir.dialog.engine import Conversation
from convir.dialog.gallery import MemoryGallery
from convir.dialog.questioners import Question
from convir.dialog.state import DialogState, Exchange
from convir.dialog.strategies import (
    ConcatStrategy,
    ExpandStrategy,
    RerankStrategy,
    RewriteStrategy,
    clean_line,
    load_strategy,
    query_for_turns,
)
from convir.errors import ConvirError
from convir.eval.simulated import simulate, target_rank
from convir.llm.base import GenParams, LLMError
from convir.simulate.answerers import Answer
from dialog_helpers import boat_gallery


class ScriptedLLM:
    """Answers by prompt type; records every call. Stands in for a model in logic tests only."""

    spec = "scripted:test"
    instruct = True

    def __init__(self, replies: dict[str, str], fail: bool = False) -> None:
        self.replies, self.fail, self.calls = replies, fail, []

    def chat(self, messages: list[dict[str, str]], params: GenParams | None = None) -> str:
        text = messages[0]["content"]
        self.calls.append(messages)
        if self.fail:
            raise LLMError("server down")
        for key, reply in self.replies.items():
            if key in text:
                return reply
        return ""

    def complete(self, prompt: str, params: GenParams | None = None) -> str:
        raise AssertionError("instruct models use chat()")


@pytest.fixture(scope="module")
def gallery() -> MemoryGallery:
    return boat_gallery()


def _state() -> DialogState:
    return DialogState(
        "a boat on the water",
        [Exchange("is it day or night", "at sunset"), Exchange("what colour is the sail", "red")],
    )


def test_concat_is_the_chatir_query(gallery: MemoryGallery) -> None:
    st = _state()
    r = ConcatStrategy().rank(st, gallery, 3)
    assert r.query == "a boat on the water, is it day or night? at sunset, what colour is the sail? red"
    assert gallery.ids[r.positions[0]] == "img0"


def test_rewrite_uses_the_llm_and_falls_back_on_failure(gallery: MemoryGallery) -> None:
    llm = ScriptedLLM({"rewrite a conversation": "Caption: a red sailboat at sunset on the sea"})
    r = RewriteStrategy(llm, anchor=False).rank(_state(), gallery, 3)
    assert r.query == "a red sailboat at sunset on the sea" and r.info["rewritten"]
    assert "Q: is it day or night A: at sunset" in llm.calls[0][-1]["content"]
    broken = RewriteStrategy(ScriptedLLM({}, fail=True)).rank(_state(), gallery, 3)
    assert broken.query.startswith("a boat on the water, is it") and not broken.info["rewritten"]
    assert RewriteStrategy(llm).rank(DialogState("a dog"), gallery, 1).query == "a dog"  # nothing to rewrite


def test_rewrite_anchor_keeps_the_description_and_hides_unknown_answers(gallery: MemoryGallery) -> None:
    llm = ScriptedLLM({"rewrite a conversation": "a red sailboat at sunset"})
    # the rewrite lost both content words of the description ("boat", "water"): anchored
    r = RewriteStrategy(llm).rank(_state(), gallery, 3)  # anchored by default
    assert r.query == "a boat on the water, a red sailboat at sunset"  # "at sunset", "red" are kept
    drops = ScriptedLLM({"rewrite a conversation": "a boat on the water in the evening"})
    r = RewriteStrategy(drops).rank(_state(), gallery, 3)  # lost both answers: appended as asked
    assert (
        r.query
        == "a boat on the water in the evening, is it day or night? at sunset, what colour is the sail? red"
    )
    assert RewriteStrategy(drops, keep_answers=False).rank(_state(), gallery, 3).query.endswith("evening")
    assert RewriteStrategy(llm, anchor=False).rank(_state(), gallery, 3).query == "a red sailboat at sunset"
    keeps = ScriptedLLM({"rewrite a conversation": "a red boat on the water at sunset"})
    anchored = RewriteStrategy(keeps, anchor=True)
    assert anchored.rank(_state(), gallery, 3).query == "a red boat on the water at sunset"
    st = DialogState("a boat on the water", [Exchange("is it day", "unknown"), Exchange("sail?", "red")])
    anchored.rank(st, gallery, 3)
    assert "is it day" not in keeps.calls[-1][-1]["content"]  # "unknown" carries no fact
    only_unknown = DialogState("a boat on the water", [Exchange("is it day", "unknown")])
    n = len(keeps.calls)
    assert anchored.rank(only_unknown, gallery, 3).query == "a boat on the water"
    assert len(keeps.calls) == n  # no LLM call when nothing was learnt


def test_expand_weights_rare_terms_higher(gallery: MemoryGallery) -> None:
    llm = ScriptedLLM({"rewrite": "a boat at sunset", "expand an image search": "sailboat, sea, boat, lake"})
    strat = ExpandStrategy(llm)
    r = strat.rank(_state(), gallery, 3)
    assert r.info["terms"] == ["sailboat", "sea", "lake"]  # "boat" is already in the query
    w = strat.term_weights(gallery, "a boat at sunset", r.info["terms"])
    assert w["boat"] == 1.0 and 0 < w["sailboat"] <= 0.5 and w["lake"] == 0.5  # lake: rarest -> max weight
    assert gallery.ids[r.positions[0]] in {"img0", "img2"}


def test_rerank_reorders_the_top_by_llm_relevance(gallery: MemoryGallery) -> None:
    llm = ScriptedLLM({"rewrite": "a boat at sunset", "Photo: a rowboat": "9", "Rate how well": "1"})
    r = RerankStrategy(llm, rerank_k=3, llm_weight=0.9, keep_answers=False).rank(_state(), gallery, 5)
    assert gallery.ids[r.positions[0]] == "img2" and r.info["reranked"] == 3
    assert len(set(r.positions.tolist())) == 5


def test_load_strategy_errors() -> None:
    with pytest.raises(ConvirError, match="needs an LLM"):
        load_strategy("rewrite")
    with pytest.raises(ConvirError, match="unknown strategy"):
        load_strategy("magic")
    assert clean_line('\n  Caption: "a dog"\nmore') == "a dog"
    assert query_for_turns(ConcatStrategy(), ["a", "b? c"]) == "a, b? c"


class FixedQuestions:
    name = "fixed"

    def __init__(self, questions: list[str]) -> None:
        self.questions = questions

    def ask(self, state: DialogState, gallery: Any, ranking: Any) -> Question | None:
        left = [q for q in self.questions if q not in state.asked]
        return Question(left[0]) if left else None


def test_conversation_loop_state_and_save(gallery: MemoryGallery, tmp_path: Path) -> None:
    conv = Conversation(
        gallery, ConcatStrategy(), FixedQuestions(["what time of day is it?", "sail colour?"]), k=3
    )
    first = conv.start("a boat")
    assert first.question == "what time of day is it?" and first.turn == 0
    second = conv.reply("sunset")
    assert second.question == "sail colour?" and conv.state.turns[1] == "what time of day is it? sunset"
    third = conv.reply("")  # skipped: recorded as asked (never asked again), adds no text
    assert third.question is None and conv.state.exchanges[-1].skipped
    assert "sail colour" not in third.ranking.query and "unknown" not in third.ranking.query
    assert conv.state.asked == ["what time of day is it?", "sail colour?"]
    conv.say("the sail is red")
    assert conv.state.rankings[-1][0] == "img0" and len(conv.state.rankings) == 4
    conv.mark_found("img0")
    conv.state.save(tmp_path / "s.json")
    loaded = DialogState.load(tmp_path / "s.json")
    assert loaded == conv.state
    resumed = Conversation(gallery, ConcatStrategy(), None, state=loaded).resume()
    assert gallery.ids[resumed.ranking.positions[0]] == "img0" and len(loaded.rankings) == 4
    with pytest.raises(ConvirError):
        conv.mark_found("nope")
    with pytest.raises(ConvirError):
        Conversation(gallery, ConcatStrategy(), None).start("  ")


def test_simulate_records_ranks_per_turn(gallery: MemoryGallery) -> None:
    class Oracle:
        name = "oracle"

        def answer(self, question: str, target_id: str) -> Answer:
            return Answer({"what time of day is it?": "sunset", "sail colour?": "a red sail"}[question])

    conv = Conversation(
        gallery, ConcatStrategy(), FixedQuestions(["what time of day is it?", "sail colour?"]), depth=8
    )
    ranks, log = simulate(conv, "a boat on the water", "img0", 0, Oracle(), turns=3)
    assert len(ranks) == 4 and ranks[-1] == 1 and ranks[-1] == ranks[-2]  # no question left at turn 3
    assert log[1]["answer"] == "sunset" and log[3]["question"] is None
    r = ConcatStrategy().rank(DialogState("a cat"), gallery, 2)
    assert target_rank(r, 0, 2) == 3  # absent from the top 2 -> depth + 1


def test_chat_cli_session_without_llm(tmp_path: Path) -> None:
    from conftest import GALLERY, make_image

    root = tmp_path / "g"
    for rel, (color, caps) in GALLERY.items():
        make_image(root / rel, color).with_suffix(".txt").write_text("\n".join(caps))
    assert run_cli("index", str(root), "--out", str(tmp_path / "ix")).returncode == 0
    import subprocess
    import sys

    session = tmp_path / "session.json"
    lines = "something outdoors\n/say there is a boat on the water\n/bogus\n/found 1\n"
    res = subprocess.run(
        [sys.executable, "-m", "convir.cli", "chat", str(tmp_path / "ix"), "--save", str(session)],
        input=lines,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    assert "unknown command /bogus" in res.stdout and "found beach/boat.png" in res.stdout
    saved = json.loads(session.read_text())
    assert (
        saved["found"] == "beach/boat.png"
        and saved["exchanges"][0]["answer"] == "there is a boat on the water"
    )
    res = subprocess.run(
        [sys.executable, "-m", "convir.cli", "chat", str(tmp_path / "ix"), "--resume", str(session)],
        input="/quit\n",
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0 and "session saved" in res.stdout
    res = subprocess.run(
        [sys.executable, "-m", "convir.cli", "chat", str(tmp_path / "ix"), "--strategy", "rewrite"],
        input="",
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 2 and "needs an LLM" in res.stderr


def test_vectors_are_unit(gallery: MemoryGallery) -> None:
    assert np.allclose(np.linalg.norm(gallery.ranker.vectors, axis=1), 1, atol=1e-5)


def test_chat_explains_misused_commands_and_never_overwrites_a_session(tmp_path: Path) -> None:
    from conftest import GALLERY, make_image

    root = tmp_path / "g"
    for rel, (color, caps) in GALLERY.items():
        make_image(root / rel, color).with_suffix(".txt").write_text("\n".join(caps))
    assert run_cli("index", str(root), "--out", str(tmp_path / "ix")).returncode == 0
    import subprocess
    import sys

    session = tmp_path / "session.json"

    def chat(lines: str, *extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "convir.cli",
                "chat",
                str(tmp_path / "ix"),
                "--save",
                str(session),
                *extra,
            ],
            input=lines,
            capture_output=True,
            text=True,
            timeout=300,
        )

    res = chat("/found 1\na boat\n/say\n/skip\n/quit\n", "--questioner", "none")  # no question to skip
    assert res.returncode == 0, res.stderr
    assert "describe the image first" in res.stdout  # /found before there are results
    assert "/say needs the detail" in res.stdout and "no question to skip" in res.stdout
    saved = session.read_text()
    again = chat("a dog\n/quit\n")  # a new session must not replace the saved one
    assert again.returncode == 2 and "already exists" in again.stderr and session.read_text() == saved
    assert chat("a dog\n/quit\n", "--overwrite").returncode == 0
    assert json.loads(session.read_text())["description"] == "a dog"
