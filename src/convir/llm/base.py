"""The LLM protocol every backend implements, and its errors.

Two calls cover every use in the conversation loop: ``chat`` for instruction-tuned models
(SmolLM2-Instruct, OpenAI-compatible servers) and ``complete`` for base models prompted
with few-shot text (Gemma 3 270M base). Generation parameters are explicit so the disk
cache can key on them.
"""

from __future__ import annotations

from collections.abc import Sequence
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


@runtime_checkable
class OptionScorer(Protocol):
    """A backend that can say how likely each one-token continuation of a prompt is.

    Reading a small model's next-token distribution over "1".."5" gives a graded score
    (G-Eval's probability-weighted rating) where its greedy answer is nearly constant."""

    def option_probs(self, prompt: str, options: Sequence[str]) -> dict[str, float]: ...


def check_one_token_options(tokenize: Any, prompt: str, options: Sequence[str], spec: str) -> list[int]:
    """The token id each option adds after ``prompt``; an :class:`LLMError` when an option is
    not exactly one token there (a score would then be the first token's, silently wrong)."""
    if not options or len(set(options)) != len(options):
        raise LLMError(f"{spec}: option_probs needs distinct options, got {list(options)}")
    base = tokenize(prompt)
    ids = []
    for opt in options:
        toks = tokenize(prompt + opt)
        if len(toks) != len(base) + 1 or toks[: len(base)] != base:
            raise LLMError(
                f"{spec}: {opt!r} is not a single token after the prompt's end {prompt[-20:]!r}; "
                "end the prompt where the option's own token starts (e.g. with the space)"
            )
        ids.append(int(toks[-1]))
    return ids


def softmax_options(options: Sequence[str], logits: Any) -> dict[str, float]:
    """Option -> probability from the options' logits (a softmax over the options alone)."""
    import numpy as np

    z = np.asarray(logits, dtype=np.float64)
    p = np.exp(z - z.max())
    p /= p.sum()
    return {o: float(v) for o, v in zip(options, p, strict=True)}
