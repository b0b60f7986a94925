"""Single-shot caption-to-image retrieval (Recall@1/5/10, MRR) on coco5k or Flickr8k.

Text-surrogate protocol (offline, no image files or image tower): gallery item i is
represented by its captions[1:3] (normalised mean of their vectors, as `convir index`
does); the query for item i is captions[0], which the gallery never sees. With an
image-text encoder and image files, the gallery is the images themselves and the query is
still captions[0]. The gallery is the split's own items (coco5k test = items 4000-4999).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from convir.errors import ConvirError
from convir.gallery.items import item_vectors
from convir.index import DEFAULT_ALPHA, DEFAULT_FUSION

DATASETS = {
    "coco5k": "COCO val2017 5k (Search_Space_coco.json + coco_captions.json)",
    "flickr8k": "Flickr8k layout (captions.txt + images/)",
}


@dataclass
class RetrievalConfig:
    dataset: str
    path: str
    split: str = "test"
    encoder: str = "caption:minilm"
    mode: str = "dense"
    fusion: str = DEFAULT_FUSION
    alpha: float = DEFAULT_ALPHA
    image_root: str | None = None
    depth: int = 100
    long_text: str = "chunk"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_items(dataset: str, path: str | Path, split: str, image_root: str | None = None) -> list[Any]:
    from convir.datasets import load_coco5k, load_flickr8k, split_items

    if dataset == "coco5k":
        items = load_coco5k(path, image_root)
    elif dataset == "flickr8k":
        items = load_flickr8k(path)
    else:
        raise ConvirError(f"unknown dataset {dataset!r}; choose one of: {', '.join(DATASETS)}")
    items = split_items(items, split, dataset if dataset in ("coco5k",) else None)
    short = [it.id for it in items if len(it.captions) < 2]
    if short:
        raise ConvirError(
            f"{len(short)} items have fewer than 2 captions (e.g. {short[0]}): need a query + gallery text"
        )
    return items


# the item-vector rule lives in convir.gallery.items; this name is kept for existing callers
caption_vectors = item_vectors


def run_retrieval(cfg: RetrievalConfig, log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Ranks of every query's own item and the metrics; see module docstring for the protocol."""
    from convir.encoders import has_image_tower, load_encoder
    from convir.eval.backends import RankerBackend
    from convir.eval.report import single_metrics
    from convir.gallery.layer import query_vectors
    from convir.gallery.memory import MemoryGallery
    from convir.index.ranker import check_mode

    check_mode(cfg.mode, cfg.fusion)

    t0 = time.perf_counter()
    items = load_items(cfg.dataset, cfg.path, cfg.split, cfg.image_root)
    encoder = load_encoder(cfg.encoder, long_text=cfg.long_text)  # type: ignore[arg-type]
    t_load = time.perf_counter() - t0
    images = [it.image for it in items]
    surrogate_caps = [list(it.captions[1:3]) for it in items]
    use_images = has_image_tower(encoder) and all(p and Path(p).exists() for p in images)
    if use_images:
        from convir.encoders.base import encode_images_skipping

        vectors, _ok, bad = encode_images_skipping(encoder, [Path(p) for p in images], 32)
        if bad:
            raise ConvirError(
                f"{len(bad)} gallery images could not be read, e.g. {images[bad[0][0]]}: {bad[0][1]}"
            )
        gallery = MemoryGallery([it.id for it in items], surrogate_caps, vectors, encoder)
        surrogate = "images"
    else:
        gallery = MemoryGallery.from_captions([it.id for it in items], surrogate_caps, encoder)
        surrogate = "captions[1:3]"
    log(f"gallery: {len(items)} items as {surrogate}")
    queries = [it.captions[0] for it in items]
    backend = RankerBackend(gallery, cfg.mode, cfg.fusion, cfg.alpha, cfg.depth)
    qvecs = query_vectors(gallery, queries, cfg.mode)
    t_enc = time.perf_counter() - t0 - t_load
    ranks: list[int] = []
    for start in range(0, len(queries), 500):  # bounded (500 x n) score blocks
        block = np.arange(start, min(start + 500, len(queries)))
        ranks += backend.ranks([queries[i] for i in block], block, None if qvecs is None else qvecs[block])
    metrics = single_metrics(ranks)
    return {
        "metrics": metrics,
        "ranks": {it.id: [r] for it, r in zip(items, ranks, strict=True)},
        "surrogate": surrogate,
        "encoder": encoder.spec,
        "timings": {"load_s": t_load, "encode_s": t_enc, "total_s": time.perf_counter() - t0},
    }
