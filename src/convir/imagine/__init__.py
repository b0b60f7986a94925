"""Imagination: generate images of the target and use them to search (DAR, DIR-TIR Image Refiner).

``load_imagination(method, generator_spec, llm, **options)`` gives the object the conversation
loop calls after the strategy each turn (:class:`convir.dialog.engine.Imagination`), or None
when imagination is off. Generators are chosen by spec (:data:`GENERATOR_KINDS`); images are
cached on disk. Without a usable generator the loop runs text-only and says so once.
See docs/imagination.md.
"""

from __future__ import annotations

import logging
from typing import Any

from convir.errors import ConvirError, SpecError
from convir.specs import REGISTRY

log = logging.getLogger("convir")

GENERATOR_KINDS = REGISTRY.names("generator")
METHODS = REGISTRY.names("imagination")
DEFAULT_IMAGES_PER_TURN = {"dar": 3, "refiner": 1}

__all__ = [
    "GENERATOR_KINDS",
    "METHODS",
    "check_generator_spec",
    "load_generator",
    "load_imagination",
    "parse_options",
]


def check_generator_spec(spec: str) -> str:
    """Syntax check of a generator spec (no model is touched); the stripped spec."""
    comp, rest = REGISTRY.parse("generator", spec)
    if comp.name == "text" and rest:
        raise SpecError("the text generator takes no model: use text:")
    if comp.name == "diffusers" and not rest:
        raise SpecError("diffusers spec needs a model, e.g. diffusers:stabilityai/sd-turbo")
    if comp.name == "openai-images":
        from convir.imagine.generators import parse_images_target

        parse_images_target(rest)
    return spec.strip()


def load_generator(spec: str, **options: Any) -> Any:
    """The generator named by ``spec``, one instance per (spec, options, cache folder) per process.

    Raises :class:`~convir.errors.SpecError` for a malformed spec or option and
    :class:`~convir.imagine.generators.GeneratorError` when the generator is unusable here
    (library missing, model folder missing). Models load on the first uncached image.
    """
    from convir.paths import cache_dir
    from convir.specs import freeze

    # registered unshared: the image cache folder (CONVIR_CACHE) is part of a generator's identity
    key = ("generator", spec.strip(), freeze(options), str(options.get("cache") or cache_dir()))
    return REGISTRY.shared(key, lambda: REGISTRY.load("generator", spec, **options))


def _coerce(value: str) -> Any:
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None}.get(value.lower(), value)


def parse_options(items: list[str] | None) -> dict[str, Any]:
    """``["steps=4", "device=cuda"]`` -> ``{"steps": 4, "device": "cuda"}`` (numbers converted)."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConvirError(f"generator options are KEY=VALUE (e.g. steps=4), got {item!r}")
        out[key.strip()] = _coerce(value.strip())
    return out


def load_imagination(
    method: str | None, generator: str | Any | None, llm: Any = None, **options: Any
) -> Any | None:
    """The imagination stage for ``method`` ("dar" | "refiner"), or None (text-only).

    ``generator``: a spec string (or a generator object). ``options``: ``images_per_turn``,
    ``seed``, ``schedule`` and ``fusion`` (DAR), ``dial_num`` and ``image_num`` (refiner), and
    ``generator_options`` (dict for :func:`load_generator`). No generator, or one that cannot
    be used here, means a warning and None; a malformed spec or option raises ConvirError.
    """
    if method is None or method in ("", "none"):
        return None
    if method not in METHODS:
        raise ConvirError(f"unknown imagination method {method!r}; available: {', '.join(METHODS)}")
    gen_options = dict(options.pop("generator_options", None) or {})
    allowed = {"images_per_turn", "seed"} | (
        {"schedule", "fusion"} if method == "dar" else {"dial_num", "image_num"}
    )
    unknown = set(options) - allowed
    if unknown:
        raise ConvirError(f"{method} does not take option(s) {', '.join(sorted(unknown))}")
    options = {k: v for k, v in options.items() if v is not None}
    options.setdefault("images_per_turn", DEFAULT_IMAGES_PER_TURN[method])
    if generator is None or (isinstance(generator, str) and not generator.strip()):
        log.warning("imagination off: no image generator configured (e.g. --generator text:); text-only")
        return None
    if isinstance(generator, str):
        from convir.imagine.generators import GeneratorError

        try:
            generator = load_generator(generator, **gen_options)
        except GeneratorError as exc:
            log.warning("imagination off: %s; continuing text-only", exc)
            return None
    if method == "dar":
        from convir.imagine.dar import DARImagination

        return DARImagination(generator, llm, **options)
    from convir.imagine.refiner import RefinerImagination

    return RefinerImagination(generator, llm, **options)
