"""Simulated multi-turn evaluation (coco5k-sim, flickr8k-sim) through the shared conversation loop.

coco5k-sim: gallery item = its captions[1:3] (as `eval retrieval`), the user's initial
description = captions[0], and the simulated user answers only from captions[3:] (held
out from the gallery, so answers add information the gallery text can confirm but never
copy). Ranks are recorded at turns 0..T for every target; each target is written as soon
as it finishes (resumable), and LLM calls are cached on disk (repeatable reruns).

flickr8k-sim: the same protocol on a Flickr8k folder (captions.txt + images/; 5 captions per
image, so 2 held-out captions), plus the target image files, so the simulated user can also
be a vision-language model looking at the photo (``--answerer vlm``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from convir.dialog.engine import Conversation, simulate


@dataclass
class SimTarget:
    id: str
    position: int
    description: str


SIM_DATASETS = {
    "coco5k-sim": "coco5k folder (Search_Space_coco.json + coco_captions.json); splits dev | test | all",
    "flickr8k-sim": "Flickr8k folder (captions.txt + images/), with target images; split all",
}
SIM_WITH_IMAGES = frozenset({"flickr8k-sim"})  # datasets whose targets have image files (--answerer vlm)


@dataclass
class SimData:
    gallery: Any
    targets: list[SimTarget]
    held_out: dict[str, list[str]]  # captions[3:] by id (the captions answerer)
    images: dict[str, str]  # image file by id (the vlm answerer); {} when the dataset has none


def load_sim(dataset: str, path: str, split: str, encoder: Any) -> SimData:
    """Gallery, targets, held-out captions and target images of a simulated protocol."""
    from convir.errors import ConvirError

    if dataset == "coco5k-sim":
        return SimData(*coco5k_sim(path, split, encoder), images={})
    if dataset == "flickr8k-sim":
        if split != "all":
            raise ConvirError("flickr8k-sim has no documented dev/test split: use --split all")
        from convir.eval.retrieval import load_items

        items = load_items("flickr8k", path, split)
        gallery, targets, held_out = _sim_from_items(items, encoder)
        return SimData(gallery, targets, held_out, {it.id: it.image for it in items if it.image})
    raise ConvirError(f"unknown --dataset {dataset!r}; available: {', '.join(SIM_DATASETS)}")


def _sim_from_items(items: list[Any], encoder: Any) -> tuple[Any, list[SimTarget], dict[str, list[str]]]:
    from convir.gallery.memory import MemoryGallery

    gallery_caps = [list(it.captions[1:3]) for it in items]
    gallery = MemoryGallery.from_captions([it.id for it in items], gallery_caps, encoder)
    targets = [SimTarget(it.id, i, it.captions[0]) for i, it in enumerate(items)]
    held_out = {it.id: list(it.captions[3:]) for it in items}
    return gallery, targets, held_out


def coco5k_sim(path: str, split: str, encoder: Any) -> tuple[Any, list[SimTarget], dict[str, list[str]]]:
    """(gallery, targets, held-out captions by id) for the coco5k-sim protocol."""
    from convir.eval.retrieval import load_items

    return _sim_from_items(load_items("coco5k", path, split), encoder)


def run_simulated(
    gallery: Any,
    targets: list[SimTarget],
    strategy: Any,
    questioner: Any,
    answerer: Any,
    writer: Any,
    turns: int,
    depth: int = 100,
    on_done: Callable[[int], None] | None = None,
    imagination: Any = None,
) -> np.ndarray:
    """(n_targets, turns + 1) rank matrix; finished targets come from ``writer``'s cache.
    ``imagination``: optional DAR / Image Refiner stage (convir.imagine)."""
    done = writer.done()
    rows = []
    for tgt in targets:
        if tgt.id in done and len(done[tgt.id]) == turns + 1:
            rows.append(done[tgt.id])
        else:
            conv = Conversation(gallery, strategy, questioner, k=10, depth=depth, imagination=imagination)
            ranks, log = simulate(conv, tgt.description, tgt.id, tgt.position, answerer, turns)
            writer.add(tgt.id, ranks, {"turns": log})
            rows.append(ranks)
        if on_done:
            on_done(1)
    return np.asarray(rows, dtype=np.int64)
