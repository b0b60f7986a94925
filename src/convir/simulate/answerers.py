"""Who answers the system's questions: a person, or a simulated user.

* ``captions`` — offline simulator: an LLM answers only from the target's held-out
  captions (never shown to the retrieval side), "unknown" when they do not say. This keeps
  the simulator from leaking text the gallery already contains.
* ``human`` — the person at the terminal (the HTTP service answers through its API).
* ``vlm`` — answers from the target IMAGE with a vision-language model (``--vlm SPEC``:
  ``hf:MODEL`` or ``openai:BASE_URL#MODEL``), see :mod:`convir.simulate.vlm`; it can also say
  how a generated image differs from the target (``differences``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Protocol

from convir.errors import ConvirError

UNKNOWN = "unknown"
_NOT_STATED = re.compile(
    r"\b(unknown|not (stated|mentioned|say|said|specified|known|clear)|cannot|can't|no information)\b", re.I
)


class Answerer(Protocol):
    name: str

    def answer(self, question: str, target_id: str) -> str: ...


def short_answer(text: str, max_words: int = 20) -> str:
    """First line, label stripped, at most ``max_words`` words; "unknown" when empty or evasive."""
    from convir.dialog.strategies import clean_line

    line = re.sub(r"^\s*a\s*:\s*", "", clean_line(text), flags=re.I)  # "A: yes" (few-shot echo)
    if not line or _NOT_STATED.search(line):
        return UNKNOWN
    return " ".join(line.split()[:max_words]).rstrip(".")


class CaptionAnswerer:
    """Answers from the target's held-out captions only, so the simulated user knows what a
    person looking at the photo would, without leaking the text the gallery is indexed by.
    ``failures`` counts LLM errors (answered "unknown") so a run can report them."""

    name = "captions"

    def __init__(self, llm: Any, captions_by_id: dict[str, list[str]]) -> None:
        self.llm, self.captions_by_id = llm, captions_by_id
        self.failures = 0

    def answer(self, question: str, target_id: str) -> str:
        from convir.llm.base import GenParams, LLMError
        from convir.llm.prompts import ask

        caps = self.captions_by_id.get(target_id) or []
        if not caps:
            return UNKNOWN
        text = " ".join(c.strip().rstrip(".") + "." for c in caps)
        try:
            out = ask(
                self.llm, "answer", GenParams(max_tokens=24, stop=("\n",)), captions=text, question=question
            )
        except LLMError:
            self.failures += 1
            return UNKNOWN
        return short_answer(out)

    def differences(self, image_prompt: str, target_id: str, image_path: str = "") -> str:
        """What a generated image (described by its prompt; the pixels are not looked at) gets
        wrong about the target, from the held-out captions only; "" when nothing is stated
        (DIR-TIR Image Refiner feedback)."""
        from convir.llm.base import GenParams, LLMError
        from convir.llm.prompts import ask

        caps = self.captions_by_id.get(target_id) or []
        if not caps or not image_prompt.strip():
            return ""
        text = " ".join(c.strip().rstrip(".") + "." for c in caps)
        try:
            out = ask(
                self.llm,
                "differences",
                GenParams(max_tokens=40, stop=("\n",)),
                captions=text,
                prompt=image_prompt,
            )
        except LLMError:
            self.failures += 1
            return ""
        line = re.sub(r"^\s*differences?\s*:\s*", "", short_answer(out, max_words=30), flags=re.I)
        if line == UNKNOWN or re.fullmatch(r"\W*(none|nothing|no differences?)\W*", line, re.I):
            return ""
        return line


class HumanAnswerer:
    """The person at the terminal; I/O is injectable so the chat loop and tests share it.
    An empty reply means "skip this question" and is returned as ""."""

    name = "human"

    def __init__(
        self, input_fn: Callable[[str], str] = input, output_fn: Callable[[str], Any] = print
    ) -> None:
        self.input_fn, self.output_fn = input_fn, output_fn

    def answer(self, question: str, target_id: str) -> str:
        self.output_fn(f"Q: {question}")
        return self.input_fn("answer (empty = skip)> ").strip()


ANSWERERS = {
    "captions": "offline simulator: the LLM answers only from the target's held-out captions",
    "human": "the person at the terminal",
    "vlm": "answers from the target image with a vision-language model (--vlm hf:MODEL or openai:URL#MODEL)",
}


def load_answerer(
    name: str,
    llm: Any = None,
    captions_by_id: dict[str, list[str]] | None = None,
    *,
    vlm: Any = None,
    image_paths_by_id: dict[str, str] | None = None,
) -> Answerer:
    """``vlm``: a VLM spec string (``hf:...``, ``openai:URL#MODEL``) or a loaded VLM, with
    ``image_paths_by_id`` the target images; both are required by the ``vlm`` answerer."""
    if name not in ANSWERERS:
        raise ConvirError(f"unknown answerer {name!r}; available: {', '.join(ANSWERERS)}")
    if name == "vlm":
        if vlm is None:
            raise ConvirError(
                "the vlm answerer needs a vision-language model: pass --vlm "
                "(e.g. --vlm hf:HuggingFaceTB/SmolVLM-256M-Instruct or --vlm openai:http://host/v1#model)"
            )
        if not image_paths_by_id:
            raise ConvirError(
                "the vlm answerer needs the target images: use a dataset with image files "
                "(e.g. --dataset flickr8k-sim), or --answerer captions"
            )
        from convir.simulate.vlm import VLMAnswerer, load_vlm

        return VLMAnswerer(load_vlm(vlm) if isinstance(vlm, str) else vlm, image_paths_by_id)
    if name == "human":
        return HumanAnswerer()
    if llm is None:
        raise ConvirError("the captions answerer needs an LLM: pass --llm (e.g. llamacpp:smollm2)")
    return CaptionAnswerer(llm, captions_by_id or {})
