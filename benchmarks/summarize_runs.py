"""Markdown tables of per-turn Hits@10 / Recall@10 and per-turn latency for dialogue runs.

Usage: python benchmarks/summarize_runs.py RUN_DIR [RUN_DIR ...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("runs", nargs="+", type=Path)
    args = ap.parse_args()
    reports = [(r.name, json.loads((r / "report.json").read_text())) for r in args.runs]
    for metric in ("hits@10", "recall@10"):
        n_turns = len(reports[0][1]["metrics"][metric])
        print(f"\n{metric} (%) per turn, n = {', '.join(str(r['n_targets']) for _, r in reports)}\n")
        print("| run | " + " | ".join(str(t) for t in range(n_turns)) + " |")
        print("|---|" + "---|" * n_turns)
        for name, rep in reports:
            print(f"| {name} | " + " | ".join(f"{100 * v:.0f}" for v in rep["metrics"][metric]) + " |")
    print("\nseconds per turn (p50 / p95)\n")
    print("| run | turn | rank (strategy) | question | answer (simulator) |")
    print("|---|---|---|---|---|")
    for name, rep in reports:
        lat = rep.get("latency", {})

        def cell(key: str, lat: dict = lat) -> str:
            return f"{lat[key]['p50']:.2f} / {lat[key]['p95']:.2f}" if key in lat else "-"

        print(f"| {name} | {cell('turn_s')} | {cell('rank_s')} | {cell('question_s')} | {cell('answer_s')} |")


if __name__ == "__main__":
    main()
