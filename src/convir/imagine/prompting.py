"""Diffusion prompts: DAR's R2 writer (K diverse prompts) and the refiner's prompt update.

Small models often answer with junk (echoed labels, one prompt instead of K, empty lines), so
the LLM output is parsed leniently and always completed from a template over the rewritten
query: there are always K distinct prompts, and an LLM failure never ends a session.
"""

from __future__ import annotations

import logging
import re
from typing import Any

log = logging.getLogger("convir")

STYLE = "Style: photorealistic."
# (adjective, details) fillers for "[Adjective] photo of [query], [Details]. Style: photorealistic."
_FILLERS = (
    ("detailed", "natural light, sharp focus"),
    ("realistic", "wide shot, true colours"),
    ("candid", "eye-level view, soft daylight"),
    ("vivid", "close-up, high detail"),
    ("natural", "balanced composition, clear background"),
    ("high-resolution", "overhead light, crisp textures"),
)
_NUMBERING = re.compile(r"^\s*(?:\d+\s*[.):-]|[-*•]|prompt\s*\d*\s*:)\s*", re.I)
_LABEL = re.compile(r"^\s*(?:prompt|query|caption|image)\s*:\s*", re.I)


def with_style(text: str) -> str:
    text = " ".join(text.split()).strip().strip('"').strip()
    if "style:" in text.lower():
        return text
    return f"{text.rstrip(' .,;')}. {STYLE}"


def template_prompts(query: str, k: int, skip: set[str] | None = None) -> list[str]:
    """``k`` distinct template prompts over ``query`` (none of them in ``skip``)."""
    q = " ".join(query.split()).rstrip(" .") or "a photo"
    skip = {s.lower() for s in skip or set()}
    out: list[str] = []
    i = 0
    while len(out) < k:
        adj, details = _FILLERS[i % len(_FILLERS)]
        extra = f", variation {i // len(_FILLERS) + 1}" if i >= len(_FILLERS) else ""
        p = f"{adj.capitalize()} photo of {q}, {details}{extra}. {STYLE}"
        if p.lower() not in skip:
            out.append(p)
            skip.add(p.lower())
        i += 1
    return out


def parse_prompts(text: str, k: int) -> list[str]:
    """Up to ``k`` distinct prompts from the model's lines (numbering and labels stripped)."""
    out: list[str] = []
    seen: set[str] = set()
    for line in text.splitlines():
        line = _LABEL.sub("", _NUMBERING.sub("", line)).strip().strip('"').strip()
        words = line.split()
        if len(words) < 3 or len(words) > 60 or line.lower().startswith(("query", "write", "here are")):
            continue
        p = with_style(line)
        if p.lower() not in seen:
            seen.add(p.lower())
            out.append(p)
        if len(out) == k:
            break
    return out


def write_prompts(llm: Any, query: str, k: int) -> tuple[list[str], int]:
    """(k prompts, how many came from the LLM). Without an LLM, or when it fails or answers
    junk, template prompts fill the rest."""
    from_llm: list[str] = []
    if llm is not None:
        from convir.llm.base import GenParams, LLMError
        from convir.llm.prompts import ask

        try:
            params = GenParams(max_tokens=40 * k, stop=("\n\n", "\nQuery:"))
            out = ask(llm, "diffusion_prompts", params, query=query, k=str(k))
            from_llm = parse_prompts(out, k)
        except LLMError as exc:
            log.warning("diffusion prompt writing failed (%s); using template prompts this turn", exc)
    prompts = from_llm + template_prompts(query, k - len(from_llm), {p.lower() for p in from_llm})
    return prompts[:k], len(from_llm)


def refine_prompt(llm: Any, prompt: str, differences: str, query: str) -> tuple[str, bool]:
    """(new prompt, came from the LLM): ``prompt`` changed so the stated ``differences`` go away."""
    from convir.dialog.strategies import clean_line

    if llm is not None:
        from convir.llm.base import GenParams, LLMError
        from convir.llm.prompts import ask

        try:
            out = ask(
                llm,
                "refine_prompt",
                GenParams(max_tokens=80, stop=("\n",)),
                prompt=prompt,
                differences=differences,
                query=query,
            )
            line = _LABEL.sub("", clean_line(out))
            if len(line.split()) >= 3:
                return with_style(line), True
        except LLMError as exc:
            log.warning("prompt refinement failed (%s); appending the stated differences", exc)
    base = prompt.replace(STYLE, "").strip().rstrip(" .,")
    return with_style(f"{base}, {differences.strip().rstrip('.')}"), False
