"""The imagination part of an evaluation report, read from a run's targets.jsonl.

Lives in eval (it reads run files); the imagination stage itself knows nothing of runs.
"""

from __future__ import annotations

from typing import Any

from convir.eval.runs import latest_records
from convir.imagine.options import generator_counters


def imagination_report(
    writer: Any, settings: dict[str, Any] | None, targets: list[str] | None = None
) -> dict[str, Any]:
    """Settings, whether imagination ran, generator calls vs cache hits in this process, how
    many targets had it switched off (a failed generator), and the mean generation /
    prompt-writing seconds at each dialogue turn (from targets.jsonl)."""
    settings = dict(settings or {})
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
    generator = generator_counters(settings)
    out |= generator
    for key, by_turn in per_turn.items():
        if by_turn:
            n = max(by_turn) + 1
            out[f"{key}_mean_per_turn"] = [
                sum(by_turn[t]) / len(by_turn[t]) if by_turn.get(t) else None for t in range(n)
            ]
    return out
