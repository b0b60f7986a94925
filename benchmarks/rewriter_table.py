"""ReCQR-style table: retrieval with the original / target / rewritten queries (R@1/5/10).

Held-out records are built from coco5k **test** items exactly as `convir train rewriter` builds
its dev records (convir.train.data.sim_rewrite_records): description = captions[0], one or two
details the user volunteers from captions[3:], and for M records a rejected image of another
item shown first; the target query is captions[1]. The gallery is the 1,000 test items, each
the mean of its captions[1:3] vectors (as coco5k-sim), searched with caption:minilm.

Rows: original query (the last user turn alone), target query (captions[1]: one of the two
gallery captions, so an upper reference, not a method), caption (the description alone),
concat (the ChatIR baseline), and one row per rewriter through the real ``rewrite`` strategy
(zero-shot = the base LLM; T / M = the fine-tuned folders).

    python benchmarks/rewriter_table.py --limit 100 --rewriter zero-shot=llamacpp:smollm2 \\
        --rewriter T=hf:RW_T --rewriter M=hf:RW

``RW_T`` (the T stage alone) is made from ``RW/adapter-T`` with ``--make-t RW``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "coco5k"


def make_t(rw: Path, out: Path) -> None:
    """Merge RW/adapter-T into the base named in RW/convir_train.json and save it to ``out``."""
    from convir._compat import ensure_torchvision

    ensure_torchvision()  # before peft imports transformers (torchvision built for another torch)
    from peft import PeftModel

    from convir.train.rewriter import load_base

    info = json.loads((rw / "convir_train.json").read_text())
    model, tok = load_base(info["base"])
    merged = PeftModel.from_pretrained(model, str(rw / "adapter-T")).merge_and_unload()
    merged.save_pretrained(out)
    tok.save_pretrained(out)


def recall(ranks: list[int]) -> dict[str, float]:
    r = np.asarray(ranks)
    return {f"R@{k}": round(100 * float(np.mean(r <= k)), 1) for k in (1, 5, 10)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=100, help="records of each kind (T and M)")
    ap.add_argument("--rewriter", action="append", default=[], help="NAME=LLM_SPEC (repeatable)")
    ap.add_argument("--make-t", type=Path, help="build RW_T from RW/adapter-T, then exit")
    ap.add_argument("--save-base", help="save this base (llamacpp:smollm2) as an hf: folder, exit")
    ap.add_argument("--out", type=Path, help="with --make-t / --save-base: where to write the folder")
    args = ap.parse_args()
    if args.save_base:  # the zero-shot baseline prompted exactly as the fine-tuned folders are
        from convir.train.rewriter import load_base

        model, tok = load_base(args.save_base)
        model.save_pretrained(args.out)
        tok.save_pretrained(args.out)
        return
    if args.make_t:
        make_t(args.make_t, args.out or args.make_t.with_name(args.make_t.name + "_T"))
        return
    from convir.dialog.strategies import RewriteStrategy, concat_query
    from convir.encoders import load_encoder
    from convir.eval.metrics import ranks_from_scores
    from convir.eval.retrieval import caption_vectors, load_items
    from convir.llm import load_llm
    from convir.train.data import sim_rewrite_records

    items = load_items("coco5k", DATA, "test")
    where = {it.id: i for i, it in enumerate(items)}
    enc = load_encoder("caption:minilm")
    gallery = caption_vectors(enc, [list(it.captions[1:3]) for it in items])
    records = sim_rewrite_records(DATA, "test", for_eval=True)
    kinds = {
        "T (text only)": [r for r in records if not r.multimodal][: args.limit],
        "M (image in history)": [r for r in records if r.multimodal][: args.limit],
    }

    def ranks(queries: list[str], recs: list) -> list[int]:
        q = enc.encode_text(queries)
        return [int(x) for x in ranks_from_scores(q @ gallery.T, np.array([where[r.item] for r in recs]))]

    table: dict[str, dict[str, dict[str, float]]] = {}
    timing: dict[str, float] = {}
    for kind, recs in kinds.items():
        rows = {
            "original query": [r.last_query for r in recs],
            "target query (captions[1], in the gallery)": [r.target for r in recs],
            "caption (description alone)": [r.description for r in recs],
            "concat": [concat_query(r.state().turns) for r in recs],
        }
        for spec in args.rewriter:
            name, _, llm_spec = spec.partition("=")
            strat = RewriteStrategy(load_llm(llm_spec))
            t0 = time.perf_counter()
            rows[f"{name} ({llm_spec})"] = [strat.rewrite(r.state())[0] for r in recs]
            timing[f"{name} {kind}"] = round((time.perf_counter() - t0) / len(recs), 2)
        table[kind] = {name: recall(ranks(qs, recs)) for name, qs in rows.items()}
    print(
        json.dumps(
            {"n": {k: len(v) for k, v in kinds.items()}, "table": table, "s_per_rewrite": timing}, indent=2
        )
    )
    for kind, rows_ in table.items():
        print(f"\n{kind}, n={len(kinds[kind])}\n\n| query | R@1 | R@5 | R@10 |\n|---|---|---|---|")
        for name, m in rows_.items():
            print(f"| {name} | {m['R@1']} | {m['R@5']} | {m['R@10']} |")


if __name__ == "__main__":
    main()
