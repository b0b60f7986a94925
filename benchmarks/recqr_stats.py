"""Figures of a dataset built by `convir datagen recqr`: sizes, invalid reasons, judge scores,
acceptance rate, seconds per record and step (uncached records only), and sample records.

    python benchmarks/recqr_stats.py /work/data-i17/dev/recqr-dev.jsonl [--samples 3] [--seed 0]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("dataset", type=Path)
    ap.add_argument("--samples", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    recs = [
        json.loads(line) for line in args.dataset.read_text(encoding="utf-8").splitlines() if line.strip()
    ]
    print(f"{args.dataset}: {len(recs)} records; load average {os.getloadavg()[0]:.1f} now")
    rng = np.random.default_rng(args.seed)
    for stage, part in ((1, "text-only (Stage One)"), (2, "multimodal (Stage Two)")):
        rs = [r for r in recs if r.get("stage") == stage]
        if not rs:
            continue
        ok = [r for r in rs if r.get("status") == "ok"]
        judged = [r for r in ok if (r.get("judge") or {}).get("score") is not None]
        acc = [r for r in rs if r.get("accepted")]
        print(f"\n## {part}: {len(rs)} records")
        print(f"invalid (rule checks): {len(rs) - len(ok)}")
        for why, n in collections.Counter(r.get("why") for r in rs if r.get("status") != "ok").most_common():
            print(f"  {n:4d}  {why}")
        print(f"judged: {len(judged)}; unparseable judge answers: {len(ok) - len(judged)}")
        if judged:
            scores = [r["judge"]["score"] for r in judged]
            print(
                f"judge mean score {np.mean(scores):.2f}; per criterion: "
                + ", ".join(
                    f"{c} {np.mean([r['judge'][c] for r in judged]):.2f}"
                    for c in ("coherence", "omission", "reconstruct")
                )
            )
            # expected-score judges give continuous scores: bin them by 0.25 (text judges' thirds
            # of an integer fall in distinct bins too)
            bins = collections.Counter(np.floor(np.asarray(scores) * 4) / 4)
            print(
                "score histogram (bins of 0.25): "
                + ", ".join(f"[{k:.2f}, {k + 0.25:.2f}): {v}" for k, v in sorted(bins.items()))
            )
            q = np.percentile(scores, [5, 25, 50, 75, 95])
            print("score percentiles 5/25/50/75/95: " + " / ".join(f"{v:.2f}" for v in q))
        print(
            f"accepted: {len(acc)} = {100 * len(acc) / len(rs):.1f}% of records, "
            f"{100 * len(acc) / max(len(judged), 1):.1f}% of judged records"
        )
        fresh = [r for r in rs if r.get("seconds") and not any(r.get("cached", {}).values())]
        if fresh:
            steps = sorted({k for r in fresh for k in r["seconds"]})
            print(
                f"seconds per record ({len(fresh)} uncached): "
                + ", ".join(
                    f"{k} {np.mean([r['seconds'][k] for r in fresh if k in r['seconds']]):.1f}" for k in steps
                )
            )
        for label, pool in (
            ("accepted", acc),
            ("rejected by the judge", [r for r in judged if not r["accepted"]]),
        ):
            if not pool:
                continue
            print(f"\n### sample {label}")
            for i in rng.choice(len(pool), min(args.samples, len(pool)), replace=False):
                r = pool[int(i)]
                print(f"- {r['id']} -> {r['target']} (judge {r['judge'].get('score')})")
                print(f"  caption: {r['caption']}")
                print(f"  dialogue: {' | '.join(r.get('history') or [])}")
                print(f"  original query: {r['original_query']}")
                print(f"  target query: {r['target_query']}")
                print(
                    f"  entities overlap {r['entities']['overlap']}, omitted {r['entities'].get('omitted')}"
                )


if __name__ == "__main__":
    main()
