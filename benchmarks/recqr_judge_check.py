"""How well does a judge tell a ReCQR record from a broken one? No human labels here, so the
check builds its own: every rule-checked record of a `convir datagen recqr` file is scored as
it is (a positive) and with another record's original query put in (a negative: the last
message no longer fits the dialogue or the target). A useful judge scores positives higher:
AUC (scikit-learn) of positive vs negative scores, mean scores, and how many of each pass the
acceptance threshold.

    python benchmarks/recqr_judge_check.py /work/data-i17/dev/recqr-dev.jsonl --n 100 \\
        --judge llamacpp:gemma3-270m@text --judge llamacpp:gemma3-270m@expected \\
        --judge llamacpp:smollm2@text --judge llamacpp:smollm2@expected
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", type=Path)
    ap.add_argument("--n", type=int, default=100, help="records (the first N that passed the rule checks)")
    ap.add_argument("--judge", action="append", required=True, help="SPEC@MODE, MODE text or expected")
    ap.add_argument("--min-score", type=float, default=3.0)
    ap.add_argument("--dump", type=Path, help="also write each judge's scores here (one JSON per judge)")
    ap.add_argument("--part", default="text", choices=["text", "multimodal", "all"])
    args = ap.parse_args()

    from sklearn.metrics import roc_auc_score

    from convir.datagen.recqr import RecqrConfig, RecqrGenerator, read_records
    from convir.llm import load_llm

    records, _ = read_records(args.dataset)
    ok = [
        r for r in records if r.get("status") == "ok" and (args.part == "all" or r.get("part") == args.part)
    ]
    ok = ok[: args.n]
    if len(ok) < 2:
        raise SystemExit(f"{args.dataset}: fewer than 2 rule-checked records")
    shift = len(ok) // 2  # a rotation: every record gets a query from a record far away in the file
    negatives = [
        {**r, "original_query": ok[(i + shift) % len(ok)]["original_query"]} for i, r in enumerate(ok)
    ]
    print(f"{args.dataset}: {len(ok)} records ({args.part}); load average {os.getloadavg()[0]:.1f}")
    print(
        "| judge | mode | AUC | mean score, records | mean score, broken | accepted, records "
        "| accepted, broken | s per judgement |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for item in args.judge:
        spec, _, mode = item.rpartition("@")
        llm = load_llm(spec)
        gen = RecqrGenerator(RecqrConfig(llm=spec, judge_mode=mode), llm, llm, None, [])
        scores: dict[str, list[float]] = {"pos": [], "neg": []}
        secs = []
        for kind, recs in (("pos", ok), ("neg", negatives)):
            for r in recs:
                log_: dict = {"seconds": {}, "cached": {}, "raw": {}}
                t = time.perf_counter()
                j = gen.judge(r["dialogue"], r["original_query"], r["target_query"], log_)
                secs.append(time.perf_counter() - t)
                scores[kind].append(j["score"] if j.get("score") is not None else float("nan"))
        pos, neg = np.array(scores["pos"]), np.array(scores["neg"])
        both = ~np.isnan(pos) & ~np.isnan(neg)
        y = np.r_[np.ones(both.sum()), np.zeros(both.sum())]
        auc = roc_auc_score(y, np.r_[pos[both], neg[both]]) if both.any() else float("nan")
        print(
            f"| {spec} | {mode} | {auc:.3f} | {np.nanmean(pos):.2f} | {np.nanmean(neg):.2f} | "
            f"{int(np.sum(pos >= args.min_score))}/{len(pos)} | "
            f"{int(np.sum(neg >= args.min_score))}/{len(neg)} | "
            f"{np.median(secs):.2f} |",
            flush=True,
        )
        if args.dump:
            args.dump.mkdir(parents=True, exist_ok=True)
            out = args.dump / f"{spec.replace(':', '_').replace('/', '_')}@{mode}.json"
            out.write_text(
                json.dumps({"pos": scores["pos"], "neg": scores["neg"], "ids": [r["id"] for r in ok]})
            )


if __name__ == "__main__":
    main()
