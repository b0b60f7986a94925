"""Component spec strings: ``kind:rest`` (e.g. ``caption:minilm``, ``open_clip:ViT-B-32/openai``).

One parser for every place a component is named (CLI flags, config files, HTTP requests) so
the same string means the same thing everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

from convir.errors import SpecError


@dataclass(frozen=True)
class Spec:
    kind: str
    rest: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.rest}" if self.rest else self.kind


def parse_spec(text: str, known: dict[str, str] | None = None) -> Spec:
    """Split ``kind:rest``; ``known`` maps kind -> one-line description for error messages."""
    text = (text or "").strip()
    kind, sep, rest = text.partition(":")
    if not kind or (not sep and known is not None and kind not in known):
        raise SpecError(_bad(text, known))
    if known is not None and kind not in known:
        raise SpecError(_bad(text, known))
    return Spec(kind, rest)


def _bad(text: str, known: dict[str, str] | None) -> str:
    msg = f"cannot understand spec {text!r}: expected KIND:VALUE"
    if known:
        msg += "; known kinds:\n" + "\n".join(f"  {k}: {d}" for k, d in known.items())
    return msg
