"""Imagination settings of the command line (`convir eval dialog`, `convir chat`) and their report.

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


def imagination_report(writer: Any, spec: Any, targets: list[str] | None = None) -> dict[str, Any]:
    """Settings, whether imagination ran, generator calls vs cache hits in this process, how
    many targets had it switched off (a failed generator), and the mean generation /
    prompt-writing seconds at each dialogue turn (from targets.jsonl)."""
    from convir.eval.runs import latest_records

    settings = spec.imagination_settings() or {}
    per_turn: dict[str, dict[int, list[float]]] = {"generate_s": {}, "prompt_s": {}, "embed_s": {}}
    images = 0
    off: list[str] = []
    for rec in latest_records(writer.targets_path, targets).values():
        for t, turn in enumerate((rec.get("extra") or {}).get("turns", [])):
            images += len(turn.get("images") or [])
            if turn.get("imagination_off"):
                off.append(str(turn["imagination_off"]))
            for key, by_turn in per_turn.items():
                if key in turn:
                    by_turn.setdefault(t, []).append(float(turn[key]))
    out: dict[str, Any] = {
        **settings,
        "images_shown": images,
        "targets_without_imagination": len(off),
        "disabled": off[0] if off else None,  # why a failed generator switched it off
    }
    generator = _generator_counters(settings)
    out |= generator
    for key, by_turn in per_turn.items():
        if by_turn:
            n = max(by_turn) + 1
            out[f"{key}_mean_per_turn"] = [
                sum(by_turn[t]) / len(by_turn[t]) if by_turn.get(t) else None for t in range(n)
            ]
    return out


def _generator_counters(settings: dict[str, Any]) -> dict[str, Any]:
    """Backend calls and cache hits of the run's (process-shared) generator; {} if unusable."""
    from convir.imagine import load_generator
    from convir.imagine.generators import GeneratorError

    try:
        gen = load_generator(settings["generator"], **(settings.get("generator_options") or {}))
    except GeneratorError:
        return {"active": False}
    return {"active": True, "generator_calls": gen.calls, "cache_hits": gen.hits}
