"""Component spec strings: ``kind:rest`` (e.g. ``caption:minilm``, ``open_clip:ViT-B-32/openai``).

One parser for every place a component is named (CLI flags, config files, HTTP requests) so
the same string means the same thing everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from convir.errors import ConvirError, SpecError


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


def local_or_hub(
    name: str, kind: str, example: str, error: type[ConvirError] = SpecError
) -> tuple[str, bool]:
    """(absolute folder or hub id, is local) for a model reference given as ``kind:name``.

    Shared by every transformers-style loader so paths resolve the same way everywhere and a
    typo in a path is reported as a missing folder rather than a failed hub download.
    """
    name = name.strip()
    if not name:
        raise error(f"{kind} spec needs a model, e.g. {example}")
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise error(f"{kind}:{name} is a file; give the folder written by save_pretrained()")
        return str(path.resolve()), True
    if name.startswith((".", "/", "~")):
        raise error(f"{kind} model folder {name!r} does not exist")
    return name, False
