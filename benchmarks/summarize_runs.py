"""Markdown tables of per-turn Hits@1 / Hits@10 / Recall@10, a summary row and latency for dialogue runs.

Reads each run's ``targets.jsonl``, so unfinished runs can be summarised while they go.
``--common`` restricts every run to the targets all of them have finished, which is the fair
comparison when one run is behind the others.

Usage: python benchmarks/summarize_runs.py [--common] RUN_DIR [RUN_DIR ...]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from convir.eval.metrics import turn_metrics, turn_stage_seconds
from convir.eval.runs import latest_records


def load(run: Path) -> tuple[dict[str, list[int]], dict[str, dict[str, list[float]]]]:
    """(target -> ranks per turn, target -> stage -> seconds per turn) from targets.jsonl."""
    ranks: dict[str, list[int]] = {}
    stages: dict[str, dict[str, list[float]]] = {}
    for target, rec in latest_records(run).items():  # a run in flight may have a torn tail
        ranks[target] = rec["ranks"]
        per: dict[str, list[float]] = {}
        for turn in (rec.get("extra") or {}).get("turns", []):
            for k, v in turn_stage_seconds(turn).items():
                per.setdefault(k, []).append(v)
        stages[target] = per
    return ranks, stages


def pct(v: float) -> str:
    return f"{100 * v:.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--common", action="store_true", help="only targets every run has finished")
    ap.add_argument(
        "--baseline",
        type=Path,
        help="paired sign tests of every run against this run folder (Hits@10 at --at turns)",
    )
    ap.add_argument("--at", default="5,10", help="turns for the sign tests (default 5,10)")
    ap.add_argument("--k", default="10", help="Hits@K cut-offs for the sign tests (default 10; e.g. 1,10)")
    args = ap.parse_args()
    if args.baseline is not None and args.baseline not in args.runs:
        args.runs.insert(0, args.baseline)
    runs = []
    for run in args.runs:
        if not (run / "targets.jsonl").is_file():
            print(f"skipping {run}: no targets.jsonl", file=sys.stderr)
            continue
        runs.append((run.name, *load(run)))
    if not runs:
        sys.exit("no targets.jsonl in any of the given directories")
    keep = set.intersection(*(set(r) for _, r, _ in runs)) if args.common else None
    rows = []
    for name, ranks, stages in runs:
        ids = sorted(t for t in ranks if keep is None or t in keep)
        m = turn_metrics([ranks[t] for t in ids])
        lat: dict[str, list[float]] = {}
        for t in ids:
            for k, v in stages[t].items():
                lat.setdefault(k, []).extend(v)
        rows.append((name, len(ids), m, lat))

    for metric in ("hits@1", "hits@10", "recall@10"):
        n_turns = len(rows[0][2][metric])
        print(f"\n{metric} (%) per turn\n")
        print("| run | n | " + " | ".join(str(t) for t in range(n_turns)) + " |")
        print("|---|---|" + "---|" * n_turns)
        for name, n, m, _ in rows:
            print(f"| {name} | {n} | " + " | ".join(pct(v) for v in m[metric]) + " |")
    print("\n| run | n | Hits@1 t0 -> last | Hits@10 t0 -> last | Recall@10 last | BRI |")
    print("|---|---|---|---|---|---|")
    for name, n, m, _ in rows:
        print(
            f"| {name} | {n} | {pct(m['hits@1'][0])} -> {pct(m['hits@1'][-1])} | "
            f"{pct(m['hits@10'][0])} -> {pct(m['hits@10'][-1])} | {pct(m['recall@10'][-1])} | "
            f"{m['bri']:.3f} |"
        )
    print("\nseconds per turn (p50 / p95)\n")
    print("| run | turn | rank (strategy) | question | system (rank + question) | answer (simulator) |")
    print("|---|---|---|---|---|---|")
    for name, _, _, lat in rows:

        def cell(key: str, lat: dict = lat) -> str:
            v = lat.get(key)
            return f"{np.percentile(v, 50):.2f} / {np.percentile(v, 95):.2f}" if v else "-"

        print(
            f"| {name} | {cell('turn_s')} | {cell('rank_s')} | {cell('question_s')} | "
            f"{cell('system_s')} | {cell('answer_s')} |"
        )
    if args.baseline is not None:
        for k in (int(v) for v in args.k.split(",")):
            sign_tests(runs, args.baseline.name, [int(t) for t in args.at.split(",")], keep, k)


def sign_tests(runs: list, baseline: str, turns: list[int], keep: set[str] | None, k: int = 10) -> None:
    """Exact two-sided sign test (binomial, p = 0.5) on the targets whose Hits@k-so-far
    differs between a run and the baseline, at each turn in ``turns`` (ties left out)."""
    from scipy.stats import binomtest

    base = next(r for name, r, _ in runs if name == baseline)
    print(f"\npaired sign tests vs {baseline} (Hits@{k} by turn t; wins / losses, two-sided p)\n")
    print("| run | " + " | ".join(f"turn {t}" for t in turns) + " |")
    print("|---|" + "---|" * len(turns))
    for name, ranks, _ in runs:
        if name == baseline:
            continue
        ids = sorted(t for t in ranks if t in base and (keep is None or t in keep))
        cells = []
        for t in turns:
            hit = [min(ranks[i][: t + 1]) <= k for i in ids]
            ref = [min(base[i][: t + 1]) <= k for i in ids]
            wins = sum(a and not b for a, b in zip(hit, ref, strict=True))
            losses = sum(b and not a for a, b in zip(hit, ref, strict=True))
            p = binomtest(wins, wins + losses).pvalue if wins + losses else 1.0
            cells.append(f"+{wins} / -{losses}, p = {p:.3g}")
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
