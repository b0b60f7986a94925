"""Query builders: turn a dialogue so far into one retrieval query.

``concat`` is the ChatIR baseline: query at turn t = ", ".join(dialog[:t+1]), where
dialog[0] is the initial description and dialog[i] the i-th "question? answer" string.
"""

from __future__ import annotations

from typing import Protocol

from convir.errors import ConvirError


class Strategy(Protocol):
    name: str

    def build_query(self, turns: list[str]) -> str:
        """One self-contained query from the dialogue so far (turns[0] = description)."""
        ...


class ConcatStrategy:
    name = "concat"

    def build_query(self, turns: list[str]) -> str:
        return ", ".join(turns)


STRATEGIES = {"concat": "ChatIR baseline: ', '.join(dialogue so far)"}


def load_strategy(name: str) -> Strategy:
    if name == "concat":
        return ConcatStrategy()
    raise ConvirError(f"unknown strategy {name!r}; available: {', '.join(STRATEGIES)}")
