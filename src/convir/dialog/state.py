"""Conversation state: what the user said, what was asked, what was shown.

Turns are kept in the ChatIR shape (turns[0] = initial description, then one string per
exchange: "question? answer", or free text the user volunteered), so the same state feeds
every strategy, the evaluation protocols and saved sessions.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from convir.atomic import write_json
from convir.errors import ConvirError


@dataclass
class Exchange:
    question: str | None  # None when the user volunteered text without a question
    answer: str
    skipped: bool = False  # the user skipped the question: asked (never repeated), no fact

    @property
    def text(self) -> str:
        if not self.question:
            return self.answer
        q = self.question.strip()
        return f"{q if q.endswith('?') else q + '?'} {self.answer.strip()}"


@dataclass
class DialogState:
    description: str
    exchanges: list[Exchange] = field(default_factory=list)
    rankings: list[list[str]] = field(default_factory=list)  # item ids shown after each turn
    queries: list[str] = field(default_factory=list)  # the query text searched at each turn
    pending_question: str | None = None
    found: str | None = None
    # imagination (convir.imagine): per exchange, how the shown images differed from the
    # target ("" when not said); per recorded turn, the images shown ({"path", "prompt"})
    image_feedback: list[str] = field(default_factory=list)
    images: list[list[dict[str, str]]] = field(default_factory=list)
    imagination_off: str | None = None  # why image generation was switched off for this session
    spec: dict[str, Any] = field(default_factory=dict)  # the SessionSpec the session runs with

    @property
    def said(self) -> list[Exchange]:
        """The exchanges that carry something the user said (skipped questions do not)."""
        return [e for e in self.exchanges if not e.skipped]

    @property
    def turns(self) -> list[str]:
        return [self.description, *(e.text for e in self.said)]

    @property
    def asked(self) -> list[str]:
        return [e.question for e in self.exchanges if e.question]

    def dialogue_text(self) -> str:
        """Human-readable dialogue for prompts: the description then one Q/A per line."""
        lines = [f"Description: {self.description}"]
        for e in self.said:
            lines.append(f"Q: {e.question} A: {e.answer}" if e.question else f"User: {e.answer}")
        return "\n".join(lines)

    def dialogue_line(self) -> str:
        """The dialogue on one line ("desc | Q: q A: a | ..."), for few-shot prompts whose
        examples are one line each: a base model copies the layout it is shown."""
        parts = [self.description.strip()]
        for e in self.said:
            parts.append(f"Q: {e.question} A: {e.answer}" if e.question else e.answer)
        return " | ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DialogState:
        if not isinstance(data, dict):
            raise ConvirError("not a saved convir session: expected a JSON object")
        data = dict(data)
        legacy = data.pop("meta", None) or {}  # sessions saved before the typed fields
        if isinstance(legacy, dict):
            for key in ("image_feedback", "images"):
                if key in legacy and key not in data:
                    data[key] = legacy[key]
        try:
            ex = [Exchange(**e) for e in data.get("exchanges", [])]
            return cls(**{**data, "exchanges": ex})
        except TypeError as exc:
            raise ConvirError(f"not a saved convir session: {exc}") from exc

    def save(self, path: Path) -> None:
        write_json(Path(path), self.to_dict())

    @classmethod
    def load(cls, path: Path) -> DialogState:
        try:
            return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError) as exc:
            raise ConvirError(f"cannot read session {path}: {exc}") from exc
