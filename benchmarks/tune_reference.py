"""Tune the weight of the reference photo in the fused image + text query (``convir chat --like``)
on coco5k-sim DEV, report it on TEST against text only. Caption surrogate: MiniLM over captions,
so the "photo" is a gallery item's stored vector (the --like setting; no image tower here).

The stand-in for "a photo like the target": one of the target's 10 nearest gallery neighbours
(by item vector, the target excluded), drawn with a fixed seed. That is a photo of a similar
scene, not the target (the target's own held-out caption would be a view of the target itself,
which flatters the photo). The words are the vague start (the first 5 words of captions[0]);
turn 1 adds one held-out caption of the target as a volunteered detail (the photo's weight
decays by ``--decay`` per such exchange). Every run goes through
the real engine (build_conversation + Conversation.start / say). Hits@1/10 and the mean rank
(capped at 101) of the target per turn.

    python benchmarks/tune_reference.py --split dev --limit 100 --weights 0,0.3,0.5,0.7 --decay 1
    python benchmarks/tune_reference.py --split test --limit 200 --weights 0,0.5
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from convir.dialog.session import SessionSpec, build_conversation
from convir.encoders import load_encoder
from convir.eval.simulated import load_sim

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def cached_sim(enc: object, split: str, start: str) -> object:
    """The split's protocol, item vectors cached in /tmp between runs (encoding is most of a run)."""
    import convir.gallery.memory as memory

    cache = Path("/tmp") / f"convir-tune-reference-{split}.npy"
    original = memory.item_vectors
    if cache.exists():
        memory.item_vectors = lambda encoder, captions: np.load(cache)  # type: ignore[assignment]
    try:
        sim = load_sim("coco5k-sim", str(SHARED / "coco5k"), split, enc, "split", start)
    finally:
        memory.item_vectors = original
    if not cache.exists():
        np.save(cache, np.asarray(sim.gallery.ranker.vectors))
    return sim


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", default="dev", choices=["dev", "test"])
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--start", default="vague:5")
    ap.add_argument("--weights", default="0,0.2,0.3,0.4,0.5,0.6,0.8")
    ap.add_argument("--neighbours", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--decay", type=float, default=None, help="per-exchange decay (default the library's)")
    args = ap.parse_args()

    if args.decay is not None:
        import convir.dialog.reference as reference

        reference.REFERENCE_DECAY = args.decay
    enc = load_encoder("caption:minilm")
    sim = cached_sim(enc, args.split, args.start)
    g = sim.gallery
    vecs = np.asarray(g.ranker.vectors, dtype=np.float32)
    rng = np.random.default_rng(args.seed)
    targets = [t for t in sim.targets if sim.held_out.get(t.id)][: args.limit]
    refs = {}
    for t in targets:
        near = np.argsort(-(vecs @ vecs[t.position]))[1 : args.neighbours + 1]
        refs[t.id] = g.ids[int(rng.choice(near))]
    print(f"{len(targets)} {args.split} targets, gallery {len(g.ids)} items, start {args.start}")
    print("weight | H@1 t0/t1 | H@10 t0/t1 | mean rank t0/t1 | s/target")
    for w in [float(x) for x in args.weights.split(",")]:
        ranks = []
        t0 = time.perf_counter()
        for t in targets:
            conv = build_conversation(SessionSpec(reference_weight=w), g)
            ref = {"item": refs[t.id]} if w > 0 else None  # 0 = text only, the baseline
            row = []
            for res in (
                conv.start(t.description, ref),
                conv.say(sim.held_out[t.id][0]),
            ):
                pos = [int(p) for p in res.ranking.positions]
                row.append(pos.index(t.position) + 1 if t.position in pos else 101)
            ranks.append(row)
        a = np.asarray(ranks)
        secs = (time.perf_counter() - t0) / len(targets)
        h1 = (a <= 1).mean(axis=0) * 100
        h10 = (a <= 10).mean(axis=0) * 100
        mr = a.mean(axis=0)
        print(
            f"{w:g} | {h1[0]:.1f}/{h1[1]:.1f} | {h10[0]:.1f}/{h10[1]:.1f} | "
            f"{mr[0]:.1f}/{mr[1]:.1f} | {secs:.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
