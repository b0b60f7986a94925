"""Prompt files and the one call the dialogue code uses: ``ask(llm, name, **vars)``.

Prompts live in ``convir/llm/prompts/`` (or a folder named by ``CONVIR_PROMPTS``), not in
code, so they can be read, diffed and tuned without touching Python:

* ``NAME.chat.txt`` for instruction-tuned models: ``### system`` / ``### user`` sections;
* ``NAME.fewshot.txt`` for base models: plain text ending where the model should continue.

Variables are ``$name`` / ``${name}`` (string.Template), so JSON or braces in examples need
no escaping.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path
from string import Template

from convir.errors import ConvirError
from convir.llm.base import LLM, GenParams, Message

PROMPT_DIR = Path(__file__).parent / "prompts"
_SECTION = re.compile(r"^### (system|user|assistant)\s*$", re.MULTILINE)


def prompt_dir() -> Path:
    return Path(os.environ.get("CONVIR_PROMPTS", PROMPT_DIR))


@lru_cache(maxsize=64)
def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConvirError(f"prompt file {path} not found") from exc


def _fill(template: str, name: str, values: dict[str, str]) -> str:
    try:
        return Template(template).substitute(values)
    except KeyError as exc:
        raise ConvirError(f"prompt {name!r} needs variable {exc.args[0]!r}") from exc


def chat_messages(name: str, **values: str) -> list[Message]:
    """Messages of ``NAME.chat.txt`` with variables filled in."""
    text = _read(prompt_dir() / f"{name}.chat.txt")
    parts = _SECTION.split(text)
    if len(parts) < 3:
        raise ConvirError(f"prompt {name}.chat.txt needs '### system' / '### user' sections")
    return [
        {"role": role, "content": _fill(body.strip(), name, values)}
        for role, body in zip(parts[1::2], parts[2::2], strict=True)
    ]


def fewshot_prompt(name: str, **values: str) -> str:
    """Text of ``NAME.fewshot.txt`` with variables filled in (no trailing newline stripped)."""
    return _fill(_read(prompt_dir() / f"{name}.fewshot.txt").rstrip("\n"), name, values)


def ask(llm: LLM, name: str, params: GenParams | None = None, **values: str) -> str:
    """Run prompt ``name`` on ``llm`` (chat or few-shot by the model's kind); stripped text."""
    if llm.instruct:
        out = llm.chat(chat_messages(name, **values), params)
    else:
        out = llm.complete(fewshot_prompt(name, **values), params)
    return out.strip()
