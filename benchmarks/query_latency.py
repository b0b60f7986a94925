"""Query latency over a coco5k index: exact flat search alone, and with text encoding.

Usage: python benchmarks/query_latency.py INDEX_DIR [--queries 1000]
(build INDEX_DIR with: convir index --format coco-captions ../shared/data/coco5k --out INDEX_DIR)
"""

from __future__ import annotations

import argparse
import time

from _common import SHARED, machine, pct
from convir import open_index
from convir.datasets import load_coco5k


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("index_dir")
    ap.add_argument("--queries", type=int, default=1000)
    args = ap.parse_args()
    idx = open_index(args.index_dir)
    items = load_coco5k(SHARED / "coco5k")
    texts = [it.captions[-1] for it in items[: args.queries]]
    idx.encode_text(texts[:8])  # load the model, warm up
    search_ms, total_ms, modes = [], [], {"bm25": [], "hybrid": []}
    for text in texts:
        t0 = time.perf_counter()
        vec = idx.encode_text([text])[0]
        t1 = time.perf_counter()
        idx.rank(vec, k=10)
        t2 = time.perf_counter()
        search_ms.append((t2 - t1) * 1000)
        total_ms.append((t2 - t0) * 1000)
    for mode, acc in modes.items():
        for text in texts[:200]:
            t = time.perf_counter()
            idx.rank(text, k=10, mode=mode)
            acc.append((time.perf_counter() - t) * 1000)
    print(f"{len(idx)} items, {idx.ann_kind}, {len(texts)} queries [{machine()}]")
    print(
        f"  search only (encoding excluded): p50 {pct(search_ms, 50):.3f} ms, p95 {pct(search_ms, 95):.3f} ms"
    )
    print(
        f"  with text encoding:              p50 {pct(total_ms, 50):.2f} ms, p95 {pct(total_ms, 95):.2f} ms"
    )
    for mode, acc in modes.items():
        print(
            f"  {mode} (text query end to end, 200 q): p50 {pct(acc, 50):.2f} ms, p95 {pct(acc, 95):.2f} ms"
        )


if __name__ == "__main__":
    main()
