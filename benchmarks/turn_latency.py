"""System seconds per conversation turn at turns 1, 5 and 10, before and after the
turn-latency work (issue 18), per LLM and strategy + questioner, every LLM call computed.

"before" = the old evaluation path: every llama.cpp call evaluates its whole prompt
(``CONVIR_LLM_PREFIX_CACHE=0``) and prompts show the whole dialogue (``--prompt-turns 0``).
"after" = the defaults: the fixed few-shot prefix's KV cache is reused and prompts show the
description plus the last 3 exchanges. Each row runs the real CLI,
``convir eval dialog --dataset coco5k-sim ... --turns N``, with a fresh, empty
``CONVIR_CACHE`` (nothing replayed from the disk cache), and reads the per-turn stage
timings of the run's ``targets.jsonl``: system = everything but the simulated user's own
LLM call (what a person would wait for). Before and after of one setting run back to back.

``--check-determinism`` runs the first "after" setting a second time, again from an empty
cache, and compares every question, answer, query and rank of the two runs.

Usage: python benchmarks/turn_latency.py [--limit 3] [--turns 10]
       [--llms llamacpp:smollm2,llamacpp:gemma3-270m]
       [--configs concat:plain,rewrite:plain,rewrite:candidates] [--check-determinism]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import SHARED, machine

VARIANTS = {
    "before": ({"CONVIR_LLM_PREFIX_CACHE": "0"}, ["--prompt-turns", "0"]),
    "after": ({}, []),
}


def run(llm: str, strategy: str, questioner: str, variant: str, args: argparse.Namespace) -> list[dict]:
    env_extra, flags = VARIANTS[variant]
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "CONVIR_CACHE": tmp, "HF_HUB_OFFLINE": "1", **env_extra}
        if args.threads:
            env["CONVIR_LLM_THREADS"] = str(args.threads)
        out = Path(tmp) / "run"
        cmd = [
            sys.executable, "-m", "convir.cli", "eval", "dialog", "--dataset", "coco5k-sim",
            str(SHARED / "coco5k"), "--split", args.split, "--limit", str(args.limit),
            "--turns", str(args.turns), "--strategy", strategy, "--questioner", questioner,
            "--answerer", "captions", "--llm", llm, "--out", str(out), "--json", *flags,
        ]  # fmt: skip
        start = time.perf_counter()
        subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
        print(
            f"  {llm} {strategy}+{questioner} {variant}: {time.perf_counter() - start:.0f} s", file=sys.stderr
        )
        return [json.loads(line) for line in (out / "targets.jsonl").read_text().splitlines() if line.strip()]


def system_seconds(records: list[dict]) -> dict[int, list[float]]:
    """turn index -> system seconds of that turn for every target (rank + question stages)."""
    from convir.eval.metrics import turn_stage_seconds

    per: dict[int, list[float]] = {}
    for rec in records:
        for t, turn in enumerate((rec.get("extra") or {}).get("turns", [])):
            per.setdefault(t, []).append(turn_stage_seconds(turn)["system_s"])
    return per


def transcript(records: list[dict]) -> list:
    """What must be identical between two runs: per target, ranks and every turn's text."""
    keep = ("question", "answer", "answer_raw", "query")
    return [
        (
            r["target"],
            r["ranks"],
            [{k: t.get(k) for k in keep} for t in (r.get("extra") or {}).get("turns", [])],
        )
        for r in sorted(records, key=lambda r: r["target"])
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=3, help="targets per setting (coco5k-sim test)")
    ap.add_argument("--turns", type=int, default=10)
    ap.add_argument("--split", default="test")
    ap.add_argument("--llms", default="llamacpp:smollm2,llamacpp:gemma3-270m")
    ap.add_argument("--configs", default="concat:plain,rewrite:plain,rewrite:candidates")
    ap.add_argument("--variants", default="before,after")
    ap.add_argument("--threads", type=int, default=None, help="CONVIR_LLM_THREADS (default: all cores)")
    ap.add_argument("--check-determinism", action="store_true")
    args = ap.parse_args()
    variants = [v for v in args.variants.split(",") if v]
    bad = [v for v in variants if v not in VARIANTS]
    if bad:
        ap.error(f"unknown variant(s) {bad}; choose from {list(VARIANTS)}")
    configs = [tuple(c.split(":", 1)) for c in args.configs.split(",") if c]
    if any(len(c) != 2 for c in configs):
        ap.error("--configs takes strategy:questioner pairs, e.g. concat:plain,rewrite:candidates")
    checks = sorted({1, min(5, args.turns), args.turns})
    rows, determinism = [], None
    for llm in args.llms.split(","):
        for strategy, questioner in configs:
            for variant in variants:
                recs = run(llm, strategy, questioner, variant, args)
                per = system_seconds(recs)
                p50 = {t: float(np.median(per[t])) for t in checks if t in per}
                every = [s for t in range(1, args.turns + 1) for s in per.get(t, [])]
                rows.append((llm, f"{strategy} + {questioner}", variant, p50, float(np.median(every))))
                if args.check_determinism and determinism is None and variant == "after":
                    again = run(llm, strategy, questioner, variant, args)
                    determinism = (llm, f"{strategy} + {questioner}", transcript(recs) == transcript(again))
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"\n{machine()}; load average at the end {load}; {args.limit} targets x {args.turns} turns "
        "per row; system seconds per turn, p50 over targets\n"
    )
    head = " | ".join(f"turn {t}" for t in checks)
    print(f"| LLM | strategy + questioner | variant | {head} | turn {checks[-1]} / turn 1 | all turns p50 |")
    print("|---|---|---|" + "---|" * len(checks) + "---|---|")
    for llm, name, variant, p50, every in rows:
        cells = " | ".join(f"{p50[t]:.2f}" if t in p50 else "-" for t in checks)
        ratio = p50[checks[-1]] / p50[1] if p50.get(1) else float("nan")
        print(f"| {llm} | {name} | {variant} | {cells} | {ratio:.2f} | {every:.2f} |")
    if determinism is not None:
        llm, name, same = determinism
        print(f"\ndeterminism: {llm} {name} after, run twice from an empty cache: "
              f"{'identical questions, answers, queries and ranks' if same else 'DIFFERENT'}")  # fmt: skip


if __name__ == "__main__":
    main()
