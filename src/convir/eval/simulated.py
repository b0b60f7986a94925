"""Simulated multi-turn evaluation (coco5k-sim) through the shared conversation loop.

coco5k-sim: gallery item = its captions[1:3] (as `eval retrieval`), the user's initial
description = captions[0], and the simulated user answers only from captions[3:] (held
out from the gallery, so answers add information the gallery text can confirm but never
copy). Ranks are recorded at turns 0..T for every target; each target is written as soon
as it finishes (resumable), and LLM calls are cached on disk (repeatable reruns).
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


def coco5k_sim(path: str, split: str, encoder: Any) -> tuple[Any, list[SimTarget], dict[str, list[str]]]:
    """(gallery, targets, held-out captions by id) for the coco5k-sim protocol."""
    from convir.dialog.gallery import MemoryGallery
    from convir.eval.retrieval import caption_vectors, load_items

    items = load_items("coco5k", path, split)
    gallery_caps = [list(it.captions[1:3]) for it in items]
    vectors = caption_vectors(encoder, gallery_caps)
    gallery = MemoryGallery([it.id for it in items], gallery_caps, vectors, encoder)
    targets = [SimTarget(it.id, i, it.captions[0]) for i, it in enumerate(items)]
    held_out = {it.id: list(it.captions[3:]) for it in items}
    return gallery, targets, held_out


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
) -> np.ndarray:
    """(n_targets, turns + 1) rank matrix; finished targets come from ``writer``'s cache."""
    done = writer.done()
    rows = []
    for tgt in targets:
        if tgt.id in done and len(done[tgt.id]) == turns + 1:
            rows.append(done[tgt.id])
        else:
            conv = Conversation(gallery, strategy, questioner, k=10, depth=depth)
            ranks, log = simulate(conv, tgt.description, tgt.id, tgt.position, answerer, turns)
            writer.add(tgt.id, ranks, {"turns": log})
            rows.append(ranks)
        if on_done:
            on_done(1)
    return np.asarray(rows, dtype=np.int64)
