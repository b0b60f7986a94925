"""convir.llm.fair: one LLM shared by turns, fewest-calls-first, with a per-turn time budget."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from convir.llm.cache import CachedLLM, can_score_options
from convir.llm.fair import BudgetSpent, FairLLM, llm_turn


class Gated:
    """A backend whose calls wait for the test's permission, recording their prompts."""

    spec = "openai:http://127.0.0.1:9/v1#gated"
    instruct = False

    def __init__(self) -> None:
        self.go = threading.Semaphore(0)
        self.prompts: list[str] = []
        self.running = 0
        self.most_at_once = 0

    def complete(self, prompt: str, params: Any = None) -> str:
        self.prompts.append(prompt)
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        assert self.go.acquire(timeout=120)
        self.running -= 1
        return prompt.upper()

    def chat(self, messages: list[dict[str, str]], params: Any = None) -> str:
        return self.complete(messages[-1]["content"], params)


def _until(what: Any) -> None:
    deadline = time.monotonic() + 120  # a bound on a hang, not a timing assertion
    while not what():
        assert time.monotonic() < deadline
        time.sleep(0.005)


def test_the_turn_with_fewest_calls_goes_first_and_one_call_runs_at_a_time() -> None:
    inner = Gated()
    llm = FairLLM(inner)

    def turn(name: str, calls: int) -> threading.Thread:
        def run() -> None:
            with llm_turn():
                for n in range(calls):
                    llm.complete(f"{name}{n}")

        t = threading.Thread(target=run)
        t.start()
        return t

    a = turn("a", 3)
    _until(lambda: inner.prompts == ["a0"])
    b = turn("b", 1)
    _until(lambda: llm.waiting == 1)
    inner.go.release()  # a0 ends; b0 (b's first) goes
    _until(lambda: inner.prompts == ["a0", "b0"] and llm.waiting == 1)  # a1 queued
    c = turn("c", 1)
    _until(lambda: llm.waiting == 2)
    inner.go.release()  # b0 ends: c0 (no call yet) before a1 (a's second)
    _until(lambda: len(inner.prompts) == 3)
    for _ in range(3):
        inner.go.release()
    for t in (a, b, c):
        t.join(timeout=120)
    assert inner.prompts == ["a0", "b0", "c0", "a1", "a2"]
    assert inner.most_at_once == 1


def test_a_spent_budget_refuses_the_call_without_touching_the_model() -> None:
    inner = Gated()
    llm = FairLLM(inner)
    with llm_turn(budget=0) as turn, pytest.raises(BudgetSpent, match="budget"):
        llm.complete("x")
    assert turn.spent and inner.prompts == []
    with llm_turn() as turn:  # no budget: the call runs
        inner.go.release()
        assert llm.complete("y") == "Y" and turn.calls == 1 and not turn.spent


def test_a_wait_longer_than_the_budget_gives_up_and_leaves_the_queue() -> None:
    inner = Gated()
    llm = FairLLM(inner)
    holder = threading.Thread(target=lambda: llm.complete("held"))
    holder.start()
    _until(lambda: inner.prompts == ["held"])
    with llm_turn(budget=0.05) as turn, pytest.raises(BudgetSpent, match="waiting"):
        llm.complete("late")
    assert turn.spent and llm.waiting == 0
    inner.go.release()
    holder.join(timeout=120)
    inner.go.release()
    assert llm.complete("next") == "NEXT"  # the model is free again: nothing was left queued


def test_the_wrapper_keeps_what_the_backend_can_do(tmp_path: Any) -> None:
    inner = Gated()
    assert not hasattr(FairLLM(inner), "option_probs")
    assert not can_score_options(CachedLLM(FairLLM(inner), tmp_path / "c.sqlite"))

    class Scorer(Gated):
        def option_probs(self, prompt: str, options: list[str]) -> dict[str, float]:
            return {o: 1 / len(options) for o in options}

    fair = FairLLM(Scorer())
    assert fair.option_probs("p", ["1", "2"]) == {"1": 0.5, "2": 0.5}
    assert can_score_options(CachedLLM(fair, tmp_path / "d.sqlite")) and fair.spec == Scorer.spec
