"""Print Hits@10 at chosen turns of `convir eval chatir` runs next to the published numbers.

Usage: python benchmarks/chatir_table.py RUNS_ROOT [--turns 0 5 10] [--k 10]

RUNS_ROOT holds one folder per model (e.g. ``clip/``, ``blip-chatir/``, ``clip-dar/``), each
either a run folder or a parent of run folders (one per dialogue file), as
benchmarks/reproduce_chatir.sh lays them out. A row's model is its first folder under RUNS_ROOT,
its dialogue set the stem of the run's ``--dialogues`` file. Only plain JSON is read here.

Published figures: the reproduction in ChatIR's issue #7 (levymsn/ChatIR), produced by the
official eval.py with its defaults, i.e. the VisDial v1.0 human dialogues
(VisDial_v1.0_queries_val.json), all 2,064 dialogues, 50k search space, Hits@10 in %.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

# (model folder, dialogue file stem) -> {turn: Hits@10 %}
PUBLISHED: dict[tuple[str, str], dict[int, float]] = {
    ("clip", "VisDial_v1.0_queries_val"): {
        0: 40.07, 1: 45.25, 2: 48.11, 3: 50.05, 4: 51.45, 5: 52.28,
        6: 53.10, 7: 53.34, 8: 53.49, 9: 53.54, 10: 53.54,
    },
    ("blip-chatir", "VisDial_v1.0_queries_val"): {
        0: 63.42, 1: 67.54, 2: 70.54, 3: 73.01, 4: 74.81, 5: 76.79,
        6: 78.25, 7: 79.51, 8: 80.47, 9: 80.86, 10: 81.83,
    },
}  # fmt: skip
SOURCE = "ChatIR issue #7 (official eval.py, VisDial human dialogues, 2,064 dialogues, 50k images)"


def collect(root: Path, k: int) -> list[dict]:
    rows = []
    for report_path in sorted(root.rglob("report.json")):
        report = json.loads(report_path.read_text(encoding="utf-8"))
        config = report.get("config", {})
        if config.get("command") != "eval chatir":
            continue
        hits = report.get("metrics", {}).get(f"hits@{k}")
        if hits is None:
            continue
        rows.append(
            {
                "model": report_path.relative_to(root).parts[0],
                "dialogues": Path(config["dialogues"]).stem,
                "encoder": report.get("encoder") or config.get("text_encoder"),
                "n": report.get("n_targets"),
                "imagine": config.get("imagine"),
                "hits": [100 * float(h) for h in hits],
                "path": str(report_path.parent),
            }
        )
    return rows


def render(rows: list[dict], turns: list[int], k: int) -> str:
    head = ["model", "dialogues", "n"]
    head += [f"H@{k} t{t}" for t in turns] + [f"published t{t}" for t in turns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        measured = [f"{r['hits'][t]:.2f}" if t < len(r["hits"]) else "-" for t in turns]
        pub = PUBLISHED.get((r["model"], r["dialogues"]), {})
        published = [f"{pub[t]:.2f}" if t in pub else "" for t in turns]
        lines.append(
            "| " + " | ".join([r["model"], r["dialogues"], str(r["n"]), *measured, *published]) + " |"
        )
    lines.append("")
    lines.append(f"published: {SOURCE}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", type=Path)
    ap.add_argument("--turns", type=int, nargs="+", default=[0, 5, 10])
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--json", action="store_true", help="print the rows as JSON instead")
    args = ap.parse_args()
    rows = collect(args.root, args.k)
    if not rows:
        raise SystemExit(f"no `convir eval chatir` runs with hits@{args.k} under {args.root}")
    print(json.dumps(rows, indent=2) if args.json else render(rows, args.turns, args.k))


if __name__ == "__main__":
    main()
