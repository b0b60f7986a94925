"""The image tower's forward pass alone on ONNX Runtime, fp32 vs int8, and how far int8 moves
the vectors (issue 18, ``convir index --runtime onnx|onnx-int8``).

``speed``: images/s of ``session.run`` on random pixels (no I/O, no start-up), one warm
session per setting, ``--seconds`` per setting, for the fp32 export and its int8 copy (both
made by convir itself, random ViT-B-32 by default: speed does not depend on the weights).
``compare IX_FP32 IX_INT8``: cosine between the two indexes' vectors of the same items and
the agreement of each item's 10 nearest neighbours.

    python benchmarks/image_forward.py speed --batches 8,32 --threads 2
    python benchmarks/image_forward.py compare /tmp/i18/b1000/out/convir-onnx-0 \\
        /tmp/i18/b1000/out/convir-onnx-int8-0
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from _common import machine


def speed(spec: str, batches: list[int], threads: int, seconds: float) -> None:
    import onnxruntime as ort

    from convir.encoders.onnx_image import OnnxImageEncoder, export_dir, quantize_image_tower

    OnnxImageEncoder(spec)  # exports once into $CONVIR_CACHE
    folder = export_dir(spec)
    models = {"fp32": folder / "visual.onnx", "int8": quantize_image_tower(folder)}
    print(f"{machine()}; load average {os.getloadavg()[0]:.2f}; {spec}, {threads} threads")
    pixels = np.random.default_rng(0).standard_normal((max(batches), 3, 224, 224)).astype(np.float32)
    for name, path in models.items():
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        feed = session.get_inputs()[0].name
        for b in batches:
            session.run(None, {feed: pixels[:b]})  # warm-up
            n, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < seconds:
                session.run(None, {feed: pixels[:b]})
                n += b
            print(f"{name} batch {b:3d}: {n / (time.perf_counter() - t0):6.2f} images/s", flush=True)


def compare(fp32_dir: str, int8_dir: str) -> None:
    import convir

    a, b = convir.open_index(fp32_dir), convir.open_index(int8_dir)
    where = {i: n for n, i in enumerate(a.ids)}
    va = np.asarray(a.ranker.vectors)[[where[i] for i in b.ids]]
    vb = np.asarray(b.ranker.vectors)
    cos = (va * vb).sum(axis=1)
    print(
        f"{len(cos)} items: cosine mean {cos.mean():.4f}, min {cos.min():.4f}, "
        f"5th percentile {np.percentile(cos, 5):.4f}"
    )
    overlap = []
    for v in (va, vb):
        sims = v @ v.T
        np.fill_diagonal(sims, -np.inf)
        overlap.append(np.argsort(-sims, axis=1)[:, :10])
    agree = np.mean([len(set(x) & set(y)) / 10 for x, y in zip(*overlap, strict=True)])
    print(f"top-10 nearest neighbours shared: {100 * agree:.1f}%")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["speed", "compare"])
    ap.add_argument("indexes", nargs="*", help="compare: the fp32 index, then the int8 index")
    ap.add_argument("--spec", default="open_clip:ViT-B-32")
    ap.add_argument("--batches", default="8,32")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=8.0)
    args = ap.parse_args()
    if args.what == "speed":
        speed(args.spec, [int(b) for b in args.batches.split(",")], args.threads, args.seconds)
    elif len(args.indexes) != 2:
        ap.error("compare needs two index folders: the fp32 one, then the int8 one")
    else:
        compare(*args.indexes)


if __name__ == "__main__":
    main()
