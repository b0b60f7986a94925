"""ANN quality on real MiniLM vectors of every caption we have (coco5k + flickr8k-1k).

For each kind: recall@10 against exact flat search (queries = 1,000 held-out captions'
vectors, searched against the other ~29k), build time and p50 search latency.
Usage: python benchmarks/ann_quality.py [--queries 1000] [--cache /tmp/ann_vectors.npy]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from _common import SHARED, machine, pct
from convir.datasets import load_coco5k, load_flickr8k
from convir.encoders import load_encoder
from convir.index.vector import ANN_KINDS, AnnIndex, AnnParams, build_ann, exact_topk


def vectors(cache: Path) -> np.ndarray:
    if cache.exists():
        return np.load(cache)
    caps = [c for it in load_coco5k(SHARED / "coco5k") for c in it.captions]
    caps += [c for it in load_flickr8k(SHARED / "flickr8k-1k") for c in it.captions]
    t = time.perf_counter()
    x = load_encoder("caption:minilm").encode_text(caps, batch_size=256)
    print(f"encoded {len(caps)} captions in {time.perf_counter() - t:.0f} s")
    np.save(cache, x)
    return x


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/convir_ann_vectors.npy"))
    args = ap.parse_args()
    x = vectors(args.cache)
    rng = np.random.default_rng(0)
    q_idx = rng.choice(len(x), size=args.queries, replace=False)
    mask = np.ones(len(x), bool)
    mask[q_idx] = False
    base, queries = np.ascontiguousarray(x[mask]), x[q_idx]
    _, truth = exact_topk(base, queries, 10)
    print(f"{len(base)} vectors (dim {base.shape[1]}), {len(queries)} queries [{machine()}]")
    print("| kind | recall@10 vs flat | build s | p50 ms/query |")
    print("|---|---|---|---|")
    for kind in ANN_KINDS:
        t = time.perf_counter()
        index = None if kind == "flat" else build_ann(base, kind)
        build_s = time.perf_counter() - t
        ann = AnnIndex(base, kind, index, AnnParams())
        lat, found = [], []
        for row in queries:
            t = time.perf_counter()
            _, pos = ann.search(row, 10)
            lat.append((time.perf_counter() - t) * 1000)
            found.append(pos[0])
        recall = np.mean([len(set(f) & set(tr)) / 10 for f, tr in zip(found, truth, strict=True)])
        print(f"| {kind} | {recall:.3f} | {build_s:.2f} | {pct(lat, 50):.3f} |")


if __name__ == "__main__":
    main()
