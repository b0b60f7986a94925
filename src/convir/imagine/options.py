"""Imagination settings of the command line (`convir eval dialog`, `convir chat`) and the
generator's counters (the run report that uses them lives with the evaluation code).

Kept free of numpy/torch imports: the CLI imports this module at startup.
"""

from __future__ import annotations

from typing import Any

from convir.errors import ConvirError


def imagine_settings(
    imagine: str | None,
    generator: str | None,
    generator_option: list[str] | None = None,
    images_per_turn: int | None = None,
    dar_schedule: str | None = None,
    dar_fusion: str = "query",
) -> dict[str, Any] | None:
    """Validated settings as recorded in a run's config.json; None when imagination is off."""
    if not imagine or imagine == "none":
        return None
    from convir.imagine import DEFAULT_IMAGES_PER_TURN, METHODS, check_generator_spec, parse_options

    if imagine not in METHODS:
        raise ConvirError(f"unknown --imagine {imagine!r}; available: {', '.join(METHODS)}")
    settings: dict[str, Any] = {
        "imagine": imagine,
        "generator": check_generator_spec(generator) if generator and generator.strip() else None,
        "generator_options": parse_options(generator_option),
        "images_per_turn": images_per_turn or DEFAULT_IMAGES_PER_TURN[imagine],
    }
    if imagine == "dar":
        from convir.imagine.dar import FUSIONS
        from convir.imagine.fusion import format_schedule, parse_schedule

        if dar_fusion not in FUSIONS:
            raise ConvirError(f"unknown --dar-fusion {dar_fusion!r}; choose one of: {', '.join(FUSIONS)}")
        settings["dar_schedule"] = format_schedule(parse_schedule(dar_schedule or "0.7/0.3,0.7/0.3,0.5/0.5"))
        settings["dar_fusion"] = dar_fusion
    return settings


def imagination_options(settings: dict[str, Any]) -> dict[str, Any]:
    """Keyword options of :func:`convir.imagine.load_imagination` for these settings."""
    opts: dict[str, Any] = {
        "images_per_turn": settings["images_per_turn"],
        "generator_options": settings.get("generator_options") or {},
    }
    if settings["imagine"] == "dar":
        from convir.imagine.fusion import parse_schedule

        opts["schedule"] = parse_schedule(settings["dar_schedule"])
        opts["fusion"] = settings["dar_fusion"]
    return opts


def generator_counters(settings: dict[str, Any]) -> dict[str, Any]:
    """Backend calls and cache hits of the run's (process-shared) generator; {} if unusable."""
    from convir.imagine import load_generator
    from convir.imagine.generators import GeneratorError

    try:
        gen = load_generator(settings["generator"], **(settings.get("generator_options") or {}))
    except GeneratorError:
        return {"active": False}
    return {"active": True, "generator_calls": gen.calls, "cache_hits": gen.hits}
