"""One LLM shared fairly by the sessions of a server, and a per-turn LLM time budget.

A local model runs one call at a time, and a turn makes several calls in a row (``expand``:
a rewrite, then expansions). Served in arrival order, a long turn's next call re-queues as
soon as its previous one ends, so four long turns interleave and a fifth session's single
call waits behind one call of each. :class:`FairLLM` admits ``slots`` calls at once and,
when one ends, hands the model to the waiting call whose turn has made the *fewest* calls
so far (ties in arrival order): a new turn's first call goes before the 2nd..nth call of a
turn already under way. (A turn whose calls all wait behind fresher turns is bounded by its
budget, below.)

The budget: :func:`llm_turn` opens a turn (the service opens one per request, in the thread
that runs it); every call of the turn adds its waiting and running seconds. A call that
would start with the budget spent, or whose wait outlasts it, raises :class:`BudgetSpent`
(an :class:`~convir.llm.base.LLMError`) without touching the model, and the turn records
that it happened, so the caller can finish the turn without the LLM and say so. A call
already running is never cut off (llama.cpp cannot be interrupted).
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar

from convir.llm.base import GenParams, LLMError, Message

T = TypeVar("T")


class BudgetSpent(LLMError):
    """This turn's LLM time budget is spent; the model was not called."""


@dataclass
class Turn:
    """One request's use of the LLM: its budget (seconds, None = unlimited) and what it used."""

    budget: float | None = None
    used: float = 0.0  # seconds waited for and spent in the LLM
    calls: int = 0
    spent: bool = False  # a call was refused for the budget

    def left(self) -> float | None:
        return None if self.budget is None else self.budget - self.used


_TURN: ContextVar[Turn | None] = ContextVar("convir_llm_turn", default=None)


@contextmanager
def llm_turn(budget: float | None = None) -> Iterator[Turn]:
    """Count the LLM calls of the code inside (this thread / context) as one turn."""
    turn = Turn(budget)
    token = _TURN.set(turn)
    try:
        yield turn
    finally:
        _TURN.reset(token)


class FairLLM:
    """Wraps an LLM backend (see the module docstring); anything else is the backend's own."""

    def __init__(self, inner: Any, slots: int = 1) -> None:
        self.inner = inner
        self.spec: str = inner.spec
        self.instruct: bool = inner.instruct
        self.slots = max(1, int(slots))
        self._cond = threading.Condition()
        self._running = 0
        self._queue: list[tuple[int, int]] = []  # (calls the turn made, arrival): a heap
        self._arrival = itertools.count()

    def chat(self, messages: list[Message], params: GenParams | None = None) -> str:
        return self._run(lambda: self.inner.chat(messages, params))

    def complete(self, prompt: str, params: GenParams | None = None) -> str:
        return self._run(lambda: self.inner.complete(prompt, params))

    def __getattr__(self, name: str) -> Any:
        value = getattr(self.inner, name)
        if name == "option_probs":  # only when the backend has it (can_score_options checks)
            return lambda prompt, options: self._run(lambda: value(prompt, options))
        return value

    @property
    def waiting(self) -> int:
        return len(self._queue)

    def _run(self, call: Callable[[], T]) -> T:
        turn = _TURN.get()
        start = time.monotonic()
        if turn is not None and turn.budget is not None and turn.used >= turn.budget:
            turn.spent = True
            raise BudgetSpent(f"this turn's LLM time budget ({turn.budget:g} s) is spent")
        ticket = (turn.calls if turn is not None else 0, next(self._arrival))
        with self._cond:
            heapq.heappush(self._queue, ticket)
            try:
                while self._running >= self.slots or self._queue[0] != ticket:
                    left = turn.left() if turn is not None else None
                    if left is not None:
                        left -= time.monotonic() - start
                        if left <= 0:
                            turn.spent = True  # type: ignore[union-attr]
                            raise BudgetSpent(
                                f"this turn's LLM time budget ({turn.budget:g} s) ran out while "  # type: ignore[union-attr]
                                "waiting for the model"
                            )
                    self._cond.wait(left)
                heapq.heappop(self._queue)
                self._running += 1
            except BaseException:
                if ticket in self._queue:
                    self._queue.remove(ticket)
                    heapq.heapify(self._queue)
                raise
            finally:
                self._cond.notify_all()  # a new head of the queue (or a free slot) may go now
        try:
            return call()
        finally:
            with self._cond:
                self._running -= 1
                self._cond.notify_all()
            if turn is not None:
                turn.used += time.monotonic() - start
                turn.calls += 1
