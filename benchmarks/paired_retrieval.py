"""Paired comparison of two `convir eval retrieval` run folders over the same queries.

For K in 1, 5, 10: how many queries found their target within the top K in only one of the two
runs, and the two-sided exact sign test on those discordant queries (scipy's binomtest).

    python benchmarks/paired_retrieval.py runs/eval/ret-base runs/eval/ret-finetuned
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from scipy.stats import binomtest


def ranks(run: Path) -> dict[str, int]:
    lines = (run / "targets.jsonl").read_text(encoding="utf-8").splitlines()
    return {r["target"]: r["ranks"][0] for r in map(json.loads, filter(None, lines))}


def main() -> None:
    a_dir, b_dir = Path(sys.argv[1]), Path(sys.argv[2])
    a, b = ranks(a_dir), ranks(b_dir)
    if set(a) != set(b):
        raise SystemExit("the two runs ranked different queries")
    for k in (1, 5, 10):
        only_a = sum(1 for t in a if a[t] <= k < b[t])
        only_b = sum(1 for t in a if b[t] <= k < a[t])
        n = only_a + only_b
        p = binomtest(only_a, n).pvalue if n else 1.0
        print(f"R@{k}: only {a_dir.name} {only_a} / only {b_dir.name} {only_b} (p = {p:.3f})")


if __name__ == "__main__":
    main()
