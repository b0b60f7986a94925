"""Tune the answer model and the infogain / choice questioners on coco5k-sim DEV (never test).

Runs the conversation loop in process for a grid of settings and prints Hits@1/10 at turns
0, 5 and 10. The simulated user is the rule the captions simulator applies to yes/no
questions (``--user rule``: "yes" when the held-out captions contain the attribute, "no" when
none of the target's captions do, else "unknown"; no LLM, so a grid runs in minutes) or the
real captions simulator with an LLM (``--user llm --llm llamacpp:gemma3-270m``).

    python benchmarks/tune_infogain.py --limit 100 --turns 10 --gallery all --start vague:5 \\
        --grid "temperature=0.03,0.05,0.1" --grid "eps=0.1,0.2"
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import numpy as np

from convir.dialog.answers import AnswerAwareStrategy, AnswerModel, question_attribute
from convir.dialog.engine import Conversation
from convir.dialog.infogain import ChoiceQuestioner, InfoGainOpenQuestioner, InfoGainQuestioner
from convir.dialog.strategies import ConcatStrategy
from convir.encoders import load_encoder
from convir.eval.metrics import hits_at_k_per_turn
from convir.eval.simulated import load_sim, simulate
from convir.simulate.answerers import Answer, CaptionAnswerer
from convir.text import content_stems

QUESTIONERS = {
    "infogain": InfoGainQuestioner,
    "infogain-open": InfoGainOpenQuestioner,
    "choice": ChoiceQuestioner,
}
SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


class RuleUser(CaptionAnswerer):
    """The captions simulator's yes/no rule without the LLM (see the module docstring)."""

    def answer(self, question: str, target_id: str) -> Answer:
        if self.absent(question, target_id):
            return Answer("no")
        attr = question_attribute(question)
        held = content_stems(" ".join(self.captions_by_id.get(target_id) or []))
        return Answer("yes" if attr and content_stems(attr) <= held else "unknown")


def cached_sim(enc: object, gallery: str, start: str) -> object:
    """The dev protocol, with the gallery's item vectors cached on disk between tuning runs
    (encoding 5,000 items is most of a short run's time)."""
    import convir.gallery.memory as memory

    cache = Path("/tmp") / f"convir-tune-dev-{gallery}.npy"
    original = memory.item_vectors
    if cache.exists():
        memory.item_vectors = lambda encoder, captions: np.load(cache)  # type: ignore[assignment]
    try:
        sim = load_sim("coco5k-sim", str(SHARED / "coco5k"), "dev", enc, gallery, start)
    finally:
        memory.item_vectors = original
    if not cache.exists():
        np.save(cache, np.asarray(sim.gallery.ranker.vectors))
    return sim


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--turns", type=int, default=10)
    ap.add_argument("--gallery", default="all")
    ap.add_argument("--start", default="vague:5")
    ap.add_argument("--questioner", default="infogain", choices=sorted(QUESTIONERS))
    ap.add_argument("--user", default="rule", choices=["rule", "llm"])
    ap.add_argument("--llm", default="llamacpp:gemma3-270m")
    ap.add_argument("--grid", action="append", default=[], help="NAME=v1,v2 (AnswerModel / questioner)")
    ap.add_argument("--text", action="store_true", help="also run the text-only answer handling")
    args = ap.parse_args()

    enc = load_encoder("caption:minilm")
    sim = cached_sim(enc, args.gallery, args.start)
    targets = sim.targets[: args.limit]
    llm = None
    if args.user == "llm":
        from convir.llm import load_llm

        llm = load_llm(args.llm)
    user_cls = RuleUser if args.user == "rule" else CaptionAnswerer
    user = user_cls(llm, sim.held_out, all_captions_by_id=sim.all_text, encoder=enc)
    names = [g.split("=")[0] for g in args.grid]
    values = [[int(v) if v.isdigit() else float(v) for v in g.split("=")[1].split(",")] for g in args.grid]
    print(
        f"{len(targets)} dev targets, gallery {args.gallery} ({len(sim.gallery.ids)} items), "
        f"start {args.start}"
    )
    print("setting | H@1 t0/t5/t10 | H@10 t0/t5/t10 | s/target")
    for combo in itertools.product(*values) if values else [()]:
        setting = dict(zip(names, combo, strict=True))
        for aware in [True, False] if args.text else [True]:
            model_kw = {k: v for k, v in setting.items() if k in AnswerModel.__dataclass_fields__}
            q_kw = {k: v for k, v in setting.items() if k not in model_kw}
            model = AnswerModel(**model_kw)
            q_kw.setdefault("temperature", model.temperature)
            q_kw.setdefault("eps", model.eps)
            q_kw.setdefault("miss", model.miss)
            qcls = QUESTIONERS[args.questioner]
            ranks = []
            t0 = time.perf_counter()
            for tgt in targets:
                strategy = AnswerAwareStrategy(ConcatStrategy(), aware=aware, model=model)
                conv = Conversation(sim.gallery, strategy, qcls(**q_kw), k=10, depth=100)
                r, _ = simulate(conv, tgt.description, tgt.id, tgt.position, user, args.turns)
                ranks.append(r)
            secs = (time.perf_counter() - t0) / len(targets)
            a = np.asarray(ranks)
            h1, h10 = hits_at_k_per_turn(a, 1), hits_at_k_per_turn(a, 10)
            t = [0, min(5, args.turns), args.turns]
            label = ", ".join(f"{k}={v}" for k, v in setting.items()) or "defaults"
            print(
                f"{label}{'' if aware else ' (text)'} | "
                + "/".join(f"{100 * h1[i]:.1f}" for i in t)
                + " | "
                + "/".join(f"{100 * h10[i]:.1f}" for i in t)
                + f" | {secs:.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
