"""Imagination overhead with the tiny random-weight diffusers pipeline (no GPU, no weights).

Measures, through the production generator (``diffusers:FOLDER`` + image cache):
  * pipeline load time (first uncached image),
  * generation time per image at a few steps x resolution settings (uncached),
  * cache-hit time per image,
  * a replayed DAR conversation: generator calls and whether the pipeline was even loaded.
The tiny UNet has 8/16 channels, so these figures are the fixed per-call overhead of the
diffusers code path (tokenise, encode, scheduler loop, VAE decode, PNG write), not what a
real model costs; see docs/imagination.md for the cost model.

Usage: python benchmarks/imagine_overhead.py [--images 8] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from _common import machine, pct


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--images", type=int, default=8, help="uncached images per setting")
    ap.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (1: no spinning on a shared machine)"
    )
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="convir-imagine-bench-"))
    os.environ["CONVIR_CACHE"] = str(tmp / "cache")  # a cold image cache
    from convir.imagine import load_generator
    from convir.imagine.generators import DiffusersGenerator
    from convir.imagine.tiny import build_tiny_pipeline

    t = time.perf_counter()
    folder = build_tiny_pipeline(tmp / "tiny")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    where = f"{machine()}; torch threads {args.threads}; load average {load}"
    print(f"tiny pipeline built in {time.perf_counter() - t:.2f} s [{where}]")
    spec = f"diffusers:{folder}"

    gen = load_generator(spec, steps=1, size=32)
    t = time.perf_counter()
    gen.generate("warm-up prompt", 0)
    print(f"first image (pipeline load from disk + 1 step at 32x32): {time.perf_counter() - t:.2f} s")

    print("\nuncached generation, seconds per image (p50 / p95):")
    print("| steps | size | p50 | p95 |")
    print("|---|---|---|---|")
    for steps, size in ((1, 32), (4, 32), (1, 128), (4, 128), (25, 128)):
        g = load_generator(spec, steps=steps, size=size)
        g._pipe = gen._pipe  # same weights: share the loaded pipeline, time only generation
        secs = []
        for i in range(args.images):
            t = time.perf_counter()
            g.generate(f"a red sailboat number {i} at sunset", 0)
            secs.append(time.perf_counter() - t)
        print(f"| {steps} | {size}x{size} | {pct(secs, 50):.3f} | {pct(secs, 95):.3f} |")

    hit = []
    for _ in range(args.images):
        t = time.perf_counter()
        gen.generate("warm-up prompt", 0)
        hit.append(time.perf_counter() - t)
    print(f"\ncache hit: p50 {pct(hit, 50) * 1e3:.3f} ms, p95 {pct(hit, 95) * 1e3:.3f} ms per image")

    # replay: a DAR conversation run twice; the second run uses a fresh generator object
    from convir.dialog.engine import Conversation
    from convir.dialog.strategies import ConcatStrategy
    from convir.encoders import load_encoder
    from convir.gallery.memory import MemoryGallery
    from convir.imagine.dar import DARImagination

    enc = load_encoder("caption:minilm")
    caps = [["a red sailboat at sunset"], ["a white sailboat"], ["a bus in a city"], ["a dog on a beach"]]
    gallery = MemoryGallery.from_captions([str(i) for i in range(len(caps))], caps, enc)

    def dialogue(generator: DiffusersGenerator) -> tuple[int, float]:
        dar = DARImagination(generator, None, images_per_turn=3)
        conv = Conversation(gallery, ConcatStrategy(), None, k=3, imagination=dar)
        gen_s = conv.start("a boat").timings["generate_s"]
        for detail in ("it has a red sail", "at sunset", "on a calm sea"):
            gen_s += conv.say(detail).timings["generate_s"]
        return generator.calls, gen_s

    first = DiffusersGenerator(str(folder), steps=2, size=64)
    calls1, secs1 = dialogue(first)
    replay = DiffusersGenerator(str(folder), steps=2, size=64)
    calls2, secs2 = dialogue(replay)
    print(
        f"\nDAR, 4 turns x 3 images (2 steps, 64x64): first run {calls1} pipeline calls, "
        f"generate_s total {secs1:.2f} s; replay {calls2} pipeline calls, generate_s total "
        f"{secs2 * 1e3:.1f} ms, pipeline loaded on replay: {replay._pipe is not None}"
    )


if __name__ == "__main__":
    main()
