"""Splitting a long caption into model windows (`--long-text chunk`): greedy word-by-word
(the old split, kept here as the reference) vs the binary search in convir.encoders.longtext.

Both give the same pieces; the old one re-tokenised the growing window once per word.
Interleaved repetitions, MiniLM's tokenizer (256-token windows). Usage:
python benchmarks/long_caption.py [--chars 1000 4000 40000] [--reps 3]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from _common import machine
from convir.encoders import load_encoder
from convir.encoders.longtext import may_exceed, split_to_fit


def greedy_split(text: str, count_tokens: Callable[[str], int], max_tokens: int) -> list[str]:
    """convir.encoders.longtext.split_to_fit before issue 13, verbatim."""
    if not may_exceed(text, max_tokens) or count_tokens(text) <= max_tokens:
        return [text]
    pieces: list[str] = []
    current: list[str] = []
    for word in text.split():
        trial = " ".join([*current, word])
        if current and count_tokens(trial) > max_tokens:
            pieces.append(" ".join(current))
            current = [word]
        else:
            current.append(word)
    if current:
        pieces.append(" ".join(current))
    return pieces


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--chars", type=int, nargs="+", default=[1000, 4000, 40000])
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    enc = load_encoder("caption:minilm")
    count, limit = enc.count_tokens, enc.max_tokens  # type: ignore[attr-defined]
    words = " ".join(f"a red boat number {i} sails past the old lighthouse at dusk" for i in range(20000))
    print(f"MiniLM tokenizer, {limit}-token windows [{machine()}]")
    print("| caption chars | windows | greedy (s) | binary search (s) | ratio |")
    print("|---|---|---|---|---|")
    for n in args.chars:
        text = words[:n].rsplit(" ", 1)[0]
        g, b = [], []
        for _ in range(args.reps):
            t = time.perf_counter()
            old = greedy_split(text, count, limit)
            g.append(time.perf_counter() - t)
            t = time.perf_counter()
            new = split_to_fit(text, count, limit)
            b.append(time.perf_counter() - t)
            assert old == new
        gm, bm = min(g), min(b)
        print(f"| {len(text):,} | {len(new)} | {gm:.3f} | {bm:.4f} | {gm / bm:.0f}x |")


if __name__ == "__main__":
    main()
