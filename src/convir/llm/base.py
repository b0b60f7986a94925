"""The LLM protocol every backend implements, and its errors.

Two calls cover every use in the conversation loop: ``chat`` for instruction-tuned models
(SmolLM2-Instruct, OpenAI-compatible servers) and ``complete`` for base models prompted
with few-shot text (Gemma 3 270M base). Generation parameters are explicit so the disk
cache can key on them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

from convir.errors import ConvirError


class LLMError(ConvirError):
    """The model could not answer (server down, timeout, bad model file); the session survives."""


@dataclass(frozen=True)
class GenParams:
    max_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    stop: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


Message = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": "..."}


@runtime_checkable
class LLM(Protocol):
    spec: str
    instruct: bool  # True: use chat() with instruction prompts; False: few-shot complete()

    def chat(self, messages: list[Message], params: GenParams | None = None) -> str: ...

    def complete(self, prompt: str, params: GenParams | None = None) -> str: ...
