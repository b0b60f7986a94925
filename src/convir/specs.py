"""Component spec strings: ``kind:rest`` (e.g. ``caption:minilm``, ``open_clip:ViT-B-32/openai``).

One parser for every place a component is named (CLI flags, config files, HTTP requests) so
the same string means the same thing everywhere.
"""

from __future__ import annotations

from collections.abc import Iterable
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


def url_and_model(
    rest: str, kind: str, example: str, error: type[ConvirError] = SpecError
) -> tuple[str, str]:
    """``BASE_URL#MODEL`` -> (base url without trailing slash, model).

    Shared by the OpenAI-style clients (chat, vision, images) so their specs read the same way;
    ``kind`` and ``example`` make the error say which flag was wrong and how to write it.
    """
    url, sep, model = rest.strip().rpartition("#")
    url = url.strip().rstrip("/")
    if not sep or not url or not model.strip():
        raise error(f"{kind} spec needs BASE_URL#MODEL, got {rest!r}; e.g. {example}")
    if not url.startswith(("http://", "https://")):
        raise error(f"{kind} base URL {url!r} must start with http:// or https://")
    return url, model.strip()


def check_options(options: Iterable[str], known: Iterable[str], what: str) -> None:
    """Reject option names not in ``known`` (a typo must fail, not be silently ignored)."""
    known = set(known)
    unknown = set(options) - known
    if unknown:
        raise SpecError(
            f"{what} do not take option(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}"
        )
