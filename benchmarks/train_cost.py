"""CPU cost of `convir train` steps, to size the defaults for an idle 2-core machine.

On a shared machine wall time says little, so this measures CPU seconds (user + system) per
training step of the real models with the real data and options, next to the wall time and the
load average, and extrapolates a default run:

    python benchmarks/train_cost.py encoder --steps 3
    python benchmarks/train_cost.py rewriter --steps 3 --base llamacpp:smollm2

Idle 2-core estimate = CPU seconds / 2 (both training threads busy), which assumes the two
threads scale perfectly; treat it as a lower bound and keep a margin.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "coco5k"


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def step_costs(step, n: int) -> list[dict[str, float]]:
    out = []
    for _ in range(n):
        c0, t0 = cpu(), time.perf_counter()
        step()
        out.append({"cpu_s": cpu() - c0, "wall_s": time.perf_counter() - t0})
    return out


def encoder(args: argparse.Namespace) -> dict:
    from convir._compat import ensure_torchvision

    ensure_torchvision()
    import torch
    from sentence_transformers import SentenceTransformer, losses

    from convir.encoders.caption import _resolve
    from convir.train.data import coco5k_sim_pairs
    from convir.train.encoder import EncoderOptions, subsample

    opts = EncoderOptions()
    c0, t0 = cpu(), time.perf_counter()
    model = SentenceTransformer(_resolve("minilm")[0], device="cpu")
    ps = coco5k_sim_pairs(DATA, "dev")
    load = {"cpu_s": cpu() - c0, "wall_s": time.perf_counter() - t0}
    # mining cost: encode a 2,000-text sample of the distinct texts, scale to all of them
    texts = sorted({t for ts in ps.docs.values() for t in ts})
    c0, t0 = cpu(), time.perf_counter()
    model.encode(texts[:2000], batch_size=128, show_progress_bar=False)
    per_text = {"cpu_s": (cpu() - c0) / 2000, "wall_s": (time.perf_counter() - t0) / 2000}
    pairs = subsample(ps.pairs, opts.max_pairs, 0)
    loss = losses.MultipleNegativesRankingLoss(model)
    optim = torch.optim.AdamW(model.parameters(), lr=opts.lr)
    model.train()
    bs = opts.batch_size
    state = {"i": 0}

    def step() -> None:
        i = state["i"]
        batch = pairs[i * bs : (i + 1) * bs]
        state["i"] += 1
        cols = [[p.query for p in batch], [p.positive for p in batch]]
        if opts.hard_negatives:
            cols.append([pairs[(i * bs + k + 997) % len(pairs)].positive for k in range(len(batch))])
        feats = [model.tokenize(c) for c in cols]
        out = loss(feats, None)
        out.backward()
        optim.step()
        optim.zero_grad()

    steps = step_costs(step, args.steps)
    n_steps = -(-len(pairs) * opts.epochs // bs)
    per_step = sum(s["cpu_s"] for s in steps[1:] or steps) / max(len(steps) - 1, 1)
    total_cpu = load["cpu_s"] + per_text["cpu_s"] * len(texts) + per_step * n_steps
    return {
        "options": opts.to_dict(),
        "load": load,
        "mining_texts": len(texts),
        "encode_cpu_s_per_text": per_text["cpu_s"],
        "steps": steps,
        "default_steps": n_steps,
        "estimated_cpu_s": round(total_cpu),
        "estimated_idle_2core_min": round(total_cpu / 2 / 60, 1),
    }


def rewriter(args: argparse.Namespace) -> dict:
    from convir._compat import ensure_torchvision

    ensure_torchvision()
    import torch
    from peft import LoraConfig, get_peft_model

    from convir.train.data import sim_rewrite_records
    from convir.train.rewriter import RewriterOptions, _collate, load_base, pick, tokenize

    opts = RewriterOptions(base=args.base)
    c0, t0 = cpu(), time.perf_counter()
    model, tok = load_base(opts.base)
    load = {"cpu_s": cpu() - c0, "wall_s": time.perf_counter() - t0}
    records = sim_rewrite_records(DATA, "dev")
    t_recs = pick([r for r in records if not r.multimodal], opts.max_t, 0)
    m_recs = pick([r for r in records if r.multimodal], opts.max_m, 1)
    rows = tokenize(
        t_recs[: args.steps * opts.batch_size] + m_recs[: args.steps * opts.batch_size], tok, opts.max_length
    )
    cfg = LoraConfig(
        r=opts.lora_r,
        lora_alpha=opts.lora_alpha,
        lora_dropout=0.05,
        target_modules="all-linear",
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, cfg)
    peft_model.train()
    optim = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=opts.lr)
    collate = _collate(tok.pad_token_id)
    state = {"i": 0}
    bs = opts.batch_size

    def step() -> None:
        i = state["i"]
        state["i"] += 1
        batch = collate(rows[i * bs : (i + 1) * bs])
        out = peft_model(**batch)
        out.loss.backward()
        optim.step()
        optim.zero_grad()

    steps = step_costs(step, 2 * args.steps)
    n_steps = -(-opts.max_t * opts.epochs // bs) + -(-opts.max_m * opts.epochs // bs)
    per_step = sum(s["cpu_s"] for s in steps[1:]) / (len(steps) - 1)
    c0 = cpu()
    merged = peft_model.merge_and_unload()
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        merged.save_pretrained(tmp)
    save_cpu = cpu() - c0
    total_cpu = load["cpu_s"] + per_step * n_steps + save_cpu
    return {
        "options": opts.to_dict(),
        "load": load,
        "tokens_per_record": sum(len(r["input_ids"]) for r in rows) / len(rows),
        "steps": steps,
        "default_steps": n_steps,
        "merge_save_cpu_s": save_cpu,
        "estimated_cpu_s": round(total_cpu),
        "estimated_idle_2core_min": round(total_cpu / 2 / 60, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["encoder", "rewriter"])
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--base", default="llamacpp:smollm2")
    args = ap.parse_args()
    load0 = os.getloadavg()
    res = encoder(args) if args.what == "encoder" else rewriter(args)
    res["load_average_start_end"] = [round(load0[0], 2), round(os.getloadavg()[0], 2)]
    res["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
