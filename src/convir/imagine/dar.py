"""DAR (diffusion-augmented retrieval): imagine the target, search with text + images.

Each turn: the strategy's (rewritten) query -> the LLM writes K diverse diffusion prompts
(R2, template "[Adjective] [Subject] in [Setting], [Details]. Style: photorealistic.") -> K
images -> embedded by the gallery encoder -> fused query ``F = a * E_text + b * sum_k E_img_k``
(a/b = 0.7/0.3 for turns 0 and 1, 0.5/0.5 after) searched densely. ``fusion="score"`` instead
re-ranks the strategy's own candidates by min-max normalised score fusion.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from convir.dialog.engine import ImaginedImage
from convir.dialog.state import DialogState
from convir.dialog.strategies import Ranking
from convir.errors import ConvirError
from convir.imagine.base import ImaginationBase, base_query
from convir.imagine.fusion import DAR_SCHEDULE, dar_weights, format_schedule, fuse_query, fuse_scores
from convir.imagine.generators import Generator
from convir.imagine.prompting import write_prompts

FUSIONS = ("query", "score")


class DARImagination(ImaginationBase):
    name = "dar"
    feedback_question = None  # DAR needs no feedback on the images

    def __init__(
        self,
        generator: Generator,
        llm: Any = None,
        images_per_turn: int = 3,
        schedule: Sequence[tuple[float, float]] = DAR_SCHEDULE,
        fusion: str = "query",
        seed: int = 0,
    ) -> None:
        super().__init__(generator, llm, images_per_turn, seed)
        if fusion not in FUSIONS:
            raise ConvirError(f"unknown DAR fusion {fusion!r}; choose one of: {', '.join(FUSIONS)}")
        self.schedule = tuple((float(a), float(b)) for a, b in schedule)
        dar_weights(0, self.schedule)  # an empty schedule fails here, not mid-session
        self.fusion = fusion

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "schedule": format_schedule(self.schedule), "fusion": self.fusion}

    def apply(
        self, state: DialogState, gallery: Any, ranking: Ranking, depth: int
    ) -> tuple[Ranking, list[ImaginedImage], dict[str, float]]:
        if self.disabled is not None:
            return ranking, [], {}
        query = base_query(ranking)
        t0 = time.perf_counter()
        prompts, from_llm = write_prompts(self.llm, query, self.images_per_turn)
        timings = {"prompt_s": time.perf_counter() - t0}
        images, vecs, embedded = self.generate_and_embed(gallery, prompts, timings)
        if vecs is None:
            return ranking, [], timings
        a, b = dar_weights(len(state.exchanges), self.schedule)
        if self.fusion == "query":
            text_vec = gallery.encoder.encode_text([query])[0]
            pos, scores = gallery.ranker.rank(fuse_query(text_vec, vecs, a, b), query, depth, "dense")
        else:
            cand = np.asarray(ranking.positions[:depth], dtype=np.int64)
            image_scores = vecs @ np.asarray(gallery.ranker.vectors[cand], dtype=np.float32).T
            fused = fuse_scores(np.asarray(ranking.scores[: len(cand)]), image_scores, a, b)
            order = np.lexsort((cand, -fused))
            pos, scores = cand[order], fused[order].astype(np.float32)
        info = {
            **ranking.info,
            "imagination": {
                "method": self.name,
                "a": a,
                "b": b,
                "fusion": self.fusion,
                "prompts": prompts,
                "prompts_from_llm": from_llm,
                "embedded": embedded,
            },
        }
        return Ranking(pos, scores, ranking.query, info), images, timings
