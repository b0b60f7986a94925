"""A synthetic ChatIR benchmark in miniature: the official file names and formats, tiny content.

``make_chatir(root)`` writes

* ``images/unlabeled2017/000000000NNN.png``: generated PNGs (the corpus images);
* ``chatir/Search_Space_val_50k.json``: their paths as the official list spells them;
* ``chatir/<5 official dialogue file names>.json``: the same targets in the same order, each
  dialogue a caption + 10 "question? answer" rounds whose concatenation passes BLIP's 200-token
  truncation in the last turns (so truncation versus chunking matters).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from blip_helpers import WORDS

DIALOGUE_FILES = (
    "VisDial_v1.0_queries_val",
    "ChatGPT_BLIP2",
    "Human_BLIP2",
    "FLAN_ALPACA_XXL_BLIP2",
    "Unanswered_ChatGPT_BLIP2",
)


def _sentence(rng: np.random.Generator, n: int) -> str:
    return " ".join(rng.choice(WORDS, size=n))


def make_images(folder: Path, n: int, seed: int = 0) -> list[str]:
    """``n`` distinct PNGs (colour blocks + noise, varied sizes); returns the search-space paths."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    (folder / "unlabeled2017").mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        h, w = int(rng.integers(24, 48)), int(rng.integers(24, 64))
        base = rng.integers(0, 256, size=3)
        pixels = np.clip(base + rng.normal(0, 60, size=(h, w, 3)), 0, 255).astype(np.uint8)
        pixels[: h // 2, : w // 2] = rng.integers(0, 256, size=3)
        rel = f"unlabeled2017/{i:012d}.png"
        Image.fromarray(pixels).save(folder / rel)
        paths.append(rel)
    return paths


def make_chatir(root: Path, n_images: int = 16, n_dialogues: int = 6, seed: int = 0) -> dict[str, Path]:
    rng = np.random.default_rng(seed)
    space = make_images(root / "images", n_images, seed)
    data = root / "chatir"
    data.mkdir(parents=True, exist_ok=True)
    (data / "Search_Space_val_50k.json").write_text(json.dumps(space))
    targets = [space[int(i)] for i in rng.choice(n_images, size=n_dialogues, replace=False)]
    for name in DIALOGUE_FILES:
        records = []
        for target in targets:
            dialog = [_sentence(rng, 15)]
            dialog += [f"{_sentence(rng, 8)}? {_sentence(rng, 12)}" for _ in range(10)]
            records.append({"img": target, "dialog": dialog})
        (data / f"{name}.json").write_text(json.dumps(records))
    return {"images": root / "images", "data": data, "space": data / "Search_Space_val_50k.json"}


TINY_OPEN_CLIP = {
    "embed_dim": 16,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 32, "patch_size": 16, "width": 32, "layers": 1, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def build_open_clip_dir(folder: Path, seed: int = 0) -> Path:
    """A tiny random CLIP as an open_clip ``local-dir:`` bundle (config + weights), loadable from
    any process as ``open_clip:local-dir:FOLDER``; OpenAI's BPE tokenizer, 77-token context."""
    import open_clip
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": TINY_OPEN_CLIP, "preprocess_cfg": {}})
    )
    torch.manual_seed(seed)
    model = open_clip.CLIP(**TINY_OPEN_CLIP)
    torch.save(model.state_dict(), folder / "open_clip_pytorch_model.bin")
    return folder
