"""The llama.cpp prefix KV cache alone: 36 few-shot prompts (6 descriptions x 0/2/4 exchanges,
``question_plain`` and ``answer``), with the cache on (in order, shuffled, and reversed in a
second instance) and off; prints whether the answers are identical across orders and
instances, how many differ from the one-batch path, and the seconds of each pass.

Usage: CONVIR_LLM_THREADS=1 python benchmarks/prefix_cache.py smollm2|gemma3-270m
"""

from __future__ import annotations

import os
import random
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
from convir.llm.base import GenParams
from convir.llm.llamacpp import LlamaCppLLM
from convir.llm.prompts import fewshot_prompt

name = sys.argv[1]
on = LlamaCppLLM(name, prefix_cache=True)
off = LlamaCppLLM(name, prefix_cache=False)
descs = [
    "a man riding a wave on top of a surfboard",
    "two dogs playing in the snow",
    "a kitchen with white cabinets",
    "a red bus parked on a city street",
    "a cat sleeping on a laptop keyboard",
    "a plate of pizza next to a beer",
]
prompts = []
for d in descs:
    for n in (0, 2, 4):
        dl = " | ".join([d] + [f"Q: what colour is item {i}? A: blue" for i in range(n)])
        prompts.append(("question_plain", fewshot_prompt("question_plain", dialogue=dl)))
        prompts.append(
            ("answer", fewshot_prompt("answer", captions=d + ".", question=f"what is in the photo {n}?"))
        )
p = GenParams(max_tokens=24, stop=("\n",))


def run(m, order):
    out = {}
    t = time.perf_counter()
    for i in order:
        out[i] = m.complete(prompts[i][1], p)
    return out, time.perf_counter() - t


idx = list(range(len(prompts)))
a, ta = run(on, idx)
rnd = idx[:]
random.Random(1).shuffle(rnd)
b, tb = run(on, rnd)
on2 = LlamaCppLLM(name, prefix_cache=True)  # a second context: an empty prefix table
c, tc = run(on2, list(reversed(idx)))
o, to = run(off, idx)
print(
    name,
    "n",
    len(prompts),
    "on: identical across orders/instances:",
    a == b == c,
    "| on vs off differ:",
    sum(a[i] != o[i] for i in idx),
)
print(
    f"seconds on {ta:.2f} on-shuffled {tb:.2f} off {to:.2f}",
    "hits",
    on.prefix_hits,
    "misses",
    on.prefix_misses,
)
