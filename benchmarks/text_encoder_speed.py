"""Caption encoder on torch vs ONNX Runtime fp32 / int8 / int8-all (issue 18): quality and speed.

Usage: python benchmarks/text_encoder_speed.py [--reps 2] [--queries 200] [--threads 2]
           [--stages diff,eval,index,latency]

* diff: max |difference| and min cosine of the embeddings of 1,000 coco5k test captions;
* eval: `convir eval retrieval --dataset coco5k ../shared/data/coco5k --split test --json` per
  encoder (R@1/5/10, MRR);
* index: `convir index --format coco-captions ../shared/data/coco5k` per encoder, repetitions
  interleaved (torch, fp32, int8, int8-all, torch, ...): whole command and its encoding time;
* latency: single-query encode + exact search over each encoder's coco5k index, the encoders
  interleaved query by query (p50/p95).

Every encoder runs with the same thread count (``--threads``: torch.set_num_threads, and ONNX
Runtime's intra-op threads follow torch's). The ONNX files are exported (cached) before any
timing. Prints `uptime` before each timed step; wrap the whole run in
``flock /tmp/convir-bench.lock`` on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import SHARED, machine, pct

ENCODERS = {
    "torch": "caption:minilm",
    "onnx fp32": "caption:minilm?backend=onnx",
    "onnx int8": "caption:minilm?backend=onnx&quant=int8",
    "onnx int8-all": "caption:minilm?backend=onnx&quant=int8-all",
}


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def cli(*args: str, threads: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1"}
    res = subprocess.run(
        [sys.executable, "-m", "convir.cli", *args], capture_output=True, text=True, env=env, check=False
    )
    if res.returncode not in (0, 1):
        raise SystemExit(f"convir {' '.join(args)} failed ({res.returncode}): {res.stderr[-2000:]}")
    return json.loads(res.stdout)


def stage_diff(texts: list[str]) -> None:
    import numpy as np

    from convir.encoders import load_encoder

    vecs = {name: load_encoder(spec).encode_text(texts) for name, spec in ENCODERS.items()}
    ref = vecs["torch"]
    print(f"\nembeddings of {len(texts)} coco5k test captions vs torch")
    print("| backend | max abs diff | mean abs diff | min cosine | mean cosine |\n|---|---|---|---|---|")
    for name in [n for n in ENCODERS if n != "torch"]:
        d = np.abs(vecs[name] - ref)
        cos = np.sum(vecs[name] * ref, axis=1)
        print(f"| {name} | {d.max():.2e} | {d.mean():.2e} | {cos.min():.5f} | {cos.mean():.5f} |")


def stage_eval(threads: int, work: Path) -> None:
    print(f"\ncoco5k test retrieval (1,000 queries)  [{uptime()}]")
    print("| encoder | R@1 | R@5 | R@10 | MRR | encode s |\n|---|---|---|---|---|---|")
    for name, spec in ENCODERS.items():
        out = work / f"eval-{name.replace(' ', '-')}"
        rep = cli(
            "eval", "retrieval", "--dataset", "coco5k", str(SHARED / "coco5k"), "--split", "test",
            "--encoder", spec, "--out", str(out), "--json", threads=threads,
        )  # fmt: skip
        m = rep["metrics"]
        print(
            f"| `{spec}` | {100 * m['R@1']:.1f} | {100 * m['R@5']:.1f} | {100 * m['R@10']:.1f} "
            f"| {100 * m['MRR']:.2f} | {rep['timings']['encode_s']:.1f} |"
        )


def stage_index(reps: int, threads: int, work: Path) -> dict[str, Path]:
    rows: dict[str, list[tuple[float, float]]] = {name: [] for name in ENCODERS}
    kept: dict[str, Path] = {}
    for rep in range(reps):
        for name, spec in ENCODERS.items():
            out = work / f"ix-{name.replace(' ', '-')}-{rep}"
            load = uptime()
            t = time.perf_counter()
            report = cli(
                "index", "--format", "coco-captions", str(SHARED / "coco5k"), "--out", str(out),
                "--encoder", spec, "--json", threads=threads,
            )  # fmt: skip
            total = time.perf_counter() - t
            rows[name].append((total, report["encode_seconds"]))
            print(f"  rep {rep} {name}: {total:.1f} s, encoding {report['encode_seconds']:.1f} s  [{load}]")
            if rep == 0:
                kept[name] = out
            else:
                shutil.rmtree(out)
    base = rows["torch"]
    print(f"\n`convir index` coco5k (5,000 items), {reps} interleaved repetitions, {threads} threads")
    print("| encoder | whole command, s | encoding, s | encoding speed-up vs torch |\n|---|---|---|---|")
    for name, vals in rows.items():
        ratios = [b[1] / v[1] for b, v in zip(base, vals, strict=True)]
        print(
            f"| `{ENCODERS[name]}` | {' / '.join(f'{v[0]:.1f}' for v in vals)} "
            f"| {' / '.join(f'{v[1]:.1f}' for v in vals)} | {' / '.join(f'{r:.2f}x' for r in ratios)} |"
        )
    return kept


def stage_latency(indexes: dict[str, Path], texts: list[str]) -> None:
    from convir import open_index

    opened = {name: open_index(path) for name, path in indexes.items()}
    for idx in opened.values():
        idx.encode_text(texts[:8])  # load the model, warm up
    enc_ms: dict[str, list[float]] = {n: [] for n in opened}
    total_ms: dict[str, list[float]] = {n: [] for n in opened}
    load = uptime()
    for text in texts:  # interleaved: every query on every encoder in turn
        for name, idx in opened.items():
            t0 = time.perf_counter()
            vec = idx.encode_text([text])[0]
            t1 = time.perf_counter()
            idx.rank(vec, k=10)
            t2 = time.perf_counter()
            enc_ms[name].append((t1 - t0) * 1000)
            total_ms[name].append((t2 - t0) * 1000)
    print(f"\nsingle-query latency, {len(texts)} queries, coco5k flat index  [{load}]")
    print("| encoder | encode p50 | encode p95 | encode + search p50 | encode + search p95 |")
    print("|---|---|---|---|---|")
    for name in opened:
        e, t = enc_ms[name], total_ms[name]
        print(
            f"| `{ENCODERS[name]}` | {pct(e, 50):.2f} ms | {pct(e, 95):.2f} ms "
            f"| {pct(t, 50):.2f} ms | {pct(t, 95):.2f} ms |"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--stages", default="diff,eval,index,latency")
    ap.add_argument(
        "--reuse", type=Path, help="latency on the indexes a killed run left in this folder (ix-NAME-0)"
    )
    args = ap.parse_args()
    stages = set(args.stages.split(","))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(args.threads)  # ONNX Runtime sessions take torch's count
    from convir.datasets import load_coco5k
    from convir.encoders import load_encoder

    print(f"{machine()}, {args.threads} threads (torch and ONNX Runtime)  [{uptime()}]")
    for spec in ENCODERS.values():
        load_encoder(spec)  # export the ONNX files (once, cached) before anything is timed
    items = load_coco5k(SHARED / "coco5k")[4000:]
    if "diff" in stages:
        stage_diff([it.captions[0] for it in items])
    if args.reuse is not None:
        found = {name: args.reuse / f"ix-{name.replace(' ', '-')}-0" for name in ENCODERS}
        stage_latency(found, [it.captions[-1] for it in items[: args.queries]])
        return
    work = Path(tempfile.mkdtemp(prefix="convir-text-encoder-"))
    try:
        if "eval" in stages:
            stage_eval(args.threads, work)
        if "index" in stages or "latency" in stages:
            indexes = stage_index(args.reps if "index" in stages else 1, args.threads, work)
            if "latency" in stages:
                stage_latency(indexes, [it.captions[-1] for it in items[: args.queries]])
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
