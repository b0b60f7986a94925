"""Tune the conversation loop on the coco5k-sim *dev* split (items 0-3999; never test).

Runs the simulated loop (plain questioner, captions simulator) for several strategy
variants on the first N dev targets and prints Hits@1/Hits@10 (cumulative), Recall@10 (this
turn) and BRI, plus how often the simulator said "unknown" and how often grounding replaced
a made-up answer. All LLM calls go through the disk cache, and the plain questioner does not
depend on the strategy, so every variant after the first only costs its own rewrite calls.

Usage:
  python benchmarks/tune_dialog.py --llm llamacpp:gemma3-270m --limit 40 --turns 10 \
      --variants concat,rewrite,rewrite+anchor,expand,expand+anchor [--no-ground]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from _common import SHARED
from convir.dialog.engine import Conversation
from convir.dialog.questioners import load_questioner
from convir.dialog.strategies import ConcatStrategy, ExpandStrategy, RerankStrategy, RewriteStrategy
from convir.encoders import load_encoder
from convir.eval.metrics import bri, hits_at_k_per_turn, recall_at_k_per_turn
from convir.eval.simulated import load_sim, simulate
from convir.llm import load_llm
from convir.simulate.answerers import CaptionAnswerer

VARIANTS = {
    "concat": lambda llm: ConcatStrategy(),
    "rewrite": lambda llm: RewriteStrategy(llm, anchor=False, keep_answers=False),
    "rewrite+anchor": lambda llm: RewriteStrategy(llm, anchor=True, keep_answers=False),
    "rewrite+anchor+answers": lambda llm: RewriteStrategy(llm),  # the default
    "expand": lambda llm: ExpandStrategy(llm, anchor=False, keep_answers=False),
    "expand+anchor": lambda llm: ExpandStrategy(llm, anchor=True, keep_answers=False),
    "expand+anchor+answers": lambda llm: ExpandStrategy(llm),  # the default
    "rerank": lambda llm: RerankStrategy(llm, anchor=False, keep_answers=False),
    "rerank+anchor+answers": lambda llm: RerankStrategy(llm),  # the default
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--llm", default="llamacpp:gemma3-270m")
    ap.add_argument("--limit", type=int, default=40)
    ap.add_argument("--turns", type=int, default=10)
    ap.add_argument("--variants", default="concat,rewrite,rewrite+anchor")
    ap.add_argument("--questioner", default="plain")
    ap.add_argument("--no-ground", action="store_true", help="keep the simulator's unsupported answers")
    args = ap.parse_args()
    names = args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        ap.error(f"unknown variants {unknown}; available: {', '.join(VARIANTS)}")

    llm = load_llm(args.llm)
    sim = load_sim("coco5k-sim", str(SHARED / "coco5k"), "dev", load_encoder("caption:minilm"))
    targets = sim.targets[: args.limit]
    rows = []
    for name in names:
        questioner = load_questioner(args.questioner, llm)
        answerer = CaptionAnswerer(llm, sim.held_out, ground=not args.no_ground)
        ranks, answers, replaced = [], 0, 0
        unknown_answers = 0
        t0 = time.perf_counter()
        for tgt in targets:
            conv = Conversation(sim.gallery, VARIANTS[name](llm), questioner, k=10, depth=100)
            r, log = simulate(conv, tgt.description, tgt.id, tgt.position, answerer, args.turns)
            ranks.append(r)
            for turn in log[1:]:
                if turn.get("question"):
                    answers += 1
                    unknown_answers += turn["answer"] == "unknown"
                    replaced += "answer_raw" in turn
        ranks_a = np.asarray(ranks)
        h1, h10 = hits_at_k_per_turn(ranks_a, 1), hits_at_k_per_turn(ranks_a, 10)
        r10 = recall_at_k_per_turn(ranks_a, 10)
        mid = args.turns // 2
        rows.append(
            [
                name,
                f"{100 * h1[0]:.1f} / {100 * h1[mid]:.1f} / {100 * h1[-1]:.1f}",
                f"{100 * h10[0]:.1f} / {100 * h10[mid]:.1f} / {100 * h10[-1]:.1f}",
                f"{100 * r10[mid]:.1f} / {100 * r10[-1]:.1f}",
                f"{bri(ranks_a):.3f}",
                f"{100 * unknown_answers / max(answers, 1):.0f}% / {100 * replaced / max(answers, 1):.0f}%",
                f"{time.perf_counter() - t0:.0f}",
            ]
        )
        print(f"done {name}", flush=True)
    print(f"\ncoco5k-sim dev, {len(targets)} targets x {args.turns} turns, {args.llm}, {args.questioner}\n")
    head = [
        "variant",
        f"Hits@1 t0/t{mid}/t{args.turns}",
        f"Hits@10 t0/t{mid}/t{args.turns}",
        f"Recall@10 t{mid}/t{args.turns}",
        "BRI",
        "unknown / grounded away",
        "s",
    ]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
