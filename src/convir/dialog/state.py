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

KINDS = ("text", "choice", "more", "less")


@dataclass
class Exchange:
    """One user turn. ``kind``: "text" (an answer or a volunteered detail), "choice" (the
    answer to an image-choice question: ``chosen`` among ``options``, None = none of them),
    "more" / "less" ("more like this" / "not this" on result ``chosen``). Only "text" turns
    add words to the query; the others are relevance feedback on item vectors."""

    question: str | None  # None when the user volunteered text without a question
    answer: str
    skipped: bool = False  # the user skipped the question: asked (never repeated), no fact
    attribute: str | None = None  # the attribute a yes/no question asked about (infogain)
    kind: str = "text"
    options: list[str] = field(default_factory=list)  # item ids offered by a choice question
    chosen: str | None = None  # the item picked (choice), or marked (more / less)

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
    pending_attribute: str | None = None  # the attribute of a pending yes/no question
    pending_options: list[str] = field(default_factory=list)  # item ids of a pending choice question
    found: str | None = None
    # imagination (convir.imagine): per exchange, how the shown images differed from the
    # target ("" when not said); per recorded turn, the images shown ({"path", "prompt"})
    image_feedback: list[str] = field(default_factory=list)
    images: list[list[dict[str, str]]] = field(default_factory=list)
    imagination_off: str | None = None  # why image generation was switched off for this session
    spec: dict[str, Any] = field(default_factory=dict)  # the SessionSpec the session runs with
    # the photo the search started from (convir.dialog.reference): {"item": id} for --like, or
    # {"image": file name, "vector": [...]} for --image; None = text only
    reference: dict[str, Any] | None = None

    @property
    def said(self) -> list[Exchange]:
        """The exchanges that carry words the user said (skipped questions, image choices and
        more/less feedback do not)."""
        return [e for e in self.exchanges if not e.skipped and e.kind == "text"]

    @property
    def feedback(self) -> list[tuple[str, int]]:
        """Relevance feedback so far, (item id, +1 wanted / -1 not wanted): the chosen option
        of each image choice (+1) and the options passed over (-1), "more like this" (+1) and
        "not this" (-1). A "more like this" / "not this" on an item replaces what was said of
        it before (choosing an option, then "not this" on it, leaves only the "not this")."""
        out: list[tuple[str, int]] = []
        for e in self.exchanges:
            if e.kind == "choice":
                out += [(o, 1 if o == e.chosen else -1) for o in e.options]
            elif e.kind in ("more", "less") and e.chosen:
                out = [f for f in out if f[0] != e.chosen]
                out.append((e.chosen, 1 if e.kind == "more" else -1))
        return out

    @property
    def rejected(self) -> list[str]:
        """Items the user said "not this" of (and has not asked for more like since): results
        they have seen and ruled out, shown again only below every other candidate."""
        last: dict[str, str] = {}
        for e in self.exchanges:
            if e.kind in ("more", "less") and e.chosen:
                last[e.chosen] = e.kind
            elif e.kind == "choice" and e.chosen:
                last[e.chosen] = "more"
        return [i for i, k in last.items() if k == "less"]

    @property
    def asked_attributes(self) -> list[str]:
        return [e.attribute for e in self.exchanges if e.attribute]

    @property
    def turns(self) -> list[str]:
        return [self.description, *(e.text for e in self.said)]

    @property
    def asked(self) -> list[str]:
        return [e.question for e in self.exchanges if e.question]

    @property
    def prompt_exchanges(self) -> list[Exchange]:
        """The exchanges an LLM prompt shows: the last ``prompt_turns`` of :attr:`said` (the
        session spec's setting; 0 or unset = all). The description is always shown verbatim,
        so a prompt's length, and with it every LLM call's time, stops growing with the
        dialogue; strategies that must keep every fact add the older ones back themselves."""
        n = self.spec.get("prompt_turns") if isinstance(self.spec, dict) else None
        said = self.said
        return said[-n:] if isinstance(n, int) and n > 0 else said

    def dialogue_text(self) -> str:
        """Human-readable dialogue for prompts: the description then one Q/A per line."""
        lines = [f"Description: {self.description}"]
        for e in self.prompt_exchanges:
            lines.append(f"Q: {e.question} A: {e.answer}" if e.question else f"User: {e.answer}")
        return "\n".join(lines)

    def dialogue_line(self) -> str:
        """The dialogue on one line ("desc | Q: q A: a | ..."), for few-shot prompts whose
        examples are one line each: a base model copies the layout it is shown."""
        parts = [self.description.strip()]
        for e in self.prompt_exchanges:
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
