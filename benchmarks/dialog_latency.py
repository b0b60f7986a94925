"""Cold-cache latency per conversation turn, per strategy and offline LLM (coco5k-sim test).

For every (LLM, strategy, questioner) it runs the real CLI,
``convir eval dialog --dataset coco5k-sim ... --limit T --turns N``, with a fresh, empty
``CONVIR_CACHE`` (every LLM call is computed, none replayed), then prints p50 / p95 seconds
per turn for the whole turn and each stage from the run's report.json: ``rank_s``
(strategy: rewrite/expand/rerank LLM calls + search), ``question_s`` (questioner) and
``answer_s`` (the simulated user, not part of the system's own latency).

Usage: python benchmarks/dialog_latency.py [--limit 5] [--turns 3] [--llms llamacpp:smollm2,...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import SHARED, machine

CONFIGS = [
    ("concat", "plain"),
    ("rewrite", "plain"),
    ("expand", "plain"),
    ("rerank", "plain"),
    ("rewrite", "candidates"),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=5, help="targets per configuration")
    ap.add_argument("--turns", type=int, default=3)
    ap.add_argument("--llms", default="llamacpp:smollm2,llamacpp:gemma3-270m")
    ap.add_argument("--threads", type=int, default=None, help="CONVIR_LLM_THREADS (default: all cores)")
    args = ap.parse_args()
    convir = Path(sys.executable).with_name("convir")
    rows = []
    for llm in args.llms.split(","):
        for strategy, questioner in CONFIGS:
            with tempfile.TemporaryDirectory() as tmp:
                env = {**os.environ, "CONVIR_CACHE": tmp, "HF_HUB_OFFLINE": "1"}
                if args.threads:
                    env["CONVIR_LLM_THREADS"] = str(args.threads)
                out = Path(tmp) / "run"
                cmd = [
                    str(convir), "eval", "dialog", "--dataset", "coco5k-sim", str(SHARED / "coco5k"),
                    "--split", "test", "--limit", str(args.limit), "--turns", str(args.turns),
                    "--strategy", strategy, "--questioner", questioner, "--answerer", "captions",
                    "--llm", llm, "--out", str(out), "--json",
                ]  # fmt: skip
                subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
                lat = json.loads((out / "report.json").read_text())["latency"]
            rows.append((llm, f"{strategy} + {questioner}", lat))
            print(f"done {llm} {strategy} + {questioner}", file=sys.stderr, flush=True)

    def cell(lat: dict, key: str) -> str:
        return f"{lat[key]['p50']:.2f} / {lat[key]['p95']:.2f}" if key in lat else "-"

    print(f"\n{machine()}; {args.limit} targets x {args.turns} turns per row; seconds p50 / p95\n")
    print("| LLM | strategy + questioner | turn | strategy (rank_s) | questioner | system (rank + question) "
          "| simulator (answer_s) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for llm, name, lat in rows:
        print(
            f"| {llm} | {name} | {cell(lat, 'turn_s')} | {cell(lat, 'rank_s')} | {cell(lat, 'question_s')} "
            f"| {cell(lat, 'system_s')} | {cell(lat, 'answer_s')} |"
        )


if __name__ == "__main__":
    main()
