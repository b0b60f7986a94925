"""DIR-TIR Image Refiner: prompt -> image -> stated differences -> refined prompt.

Turn 0 writes one diffusion prompt from the query. After every turn the user (a person in
chat, or a simulator's ``differences()``) says how the generated image differs from the
target; the LLM rewrites the prompt to remove those differences and a new image is made. The
images are embedded and searched (image ranking), and the shown top list is the first
``dial_num`` items of the dialogue ranking plus ``image_num`` items of the image ranking that
are not already there (default 7 + 3), without duplicates; below it the dialogue ranking
continues, then the image ranking.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from convir.dialog.engine import ImaginedImage
from convir.dialog.state import DialogState
from convir.dialog.strategies import Ranking
from convir.errors import ConvirError
from convir.imagine.base import ImaginationBase, base_query
from convir.imagine.fusion import extend_ranking, merge_rankings
from convir.imagine.generators import Generator
from convir.imagine.prompting import refine_prompt, write_prompts

FEEDBACK_QUESTION = "How does the generated image differ from the photo you want? (empty = no difference)"


def last_prompt(state: DialogState) -> str | None:
    """The prompt of the most recent turn that produced images."""
    for turn in reversed(state.images):
        if turn:
            return str(turn[0].get("prompt") or "") or None
    return None


def latest_feedback(state: DialogState) -> str:
    """Differences the user stated with the latest exchange ("" when none)."""
    fb = state.image_feedback
    n = len(state.exchanges)
    return str(fb[n - 1]).strip() if n and len(fb) >= n else ""


class RefinerImagination(ImaginationBase):
    name = "refiner"
    feedback_question = FEEDBACK_QUESTION

    def __init__(
        self,
        generator: Generator,
        llm: Any = None,
        images_per_turn: int = 1,
        dial_num: int = 7,
        image_num: int = 3,
        seed: int = 0,
    ) -> None:
        super().__init__(generator, llm, images_per_turn, seed)
        if dial_num < 0 or image_num < 0 or dial_num + image_num < 1:
            raise ConvirError("dial_num and image_num must be >= 0 with at least one result shown")
        self.dial_num, self.image_num = int(dial_num), int(image_num)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "dial_num": self.dial_num, "image_num": self.image_num}

    def result_count(self, k: int) -> int:
        """The merged list is ``dial_num`` dialogue + ``image_num`` image results (7 + 3): a
        smaller ``k`` would cut the image results off."""
        return max(k, self.dial_num + self.image_num)

    def next_prompt(self, state: DialogState, query: str) -> tuple[str, str]:
        """(prompt, how: "write" | "refine-llm" | "refine-template" | "keep")."""
        previous = last_prompt(state)
        if previous is None:
            return write_prompts(self.llm, query, 1)[0][0], "write"
        differences = latest_feedback(state)
        if not differences:
            return previous, "keep"  # same prompt, same seed: a cache hit
        prompt, used_llm = refine_prompt(self.llm, previous, differences, query)
        return prompt, "refine-llm" if used_llm else "refine-template"

    def apply(
        self, state: DialogState, gallery: Any, ranking: Ranking, depth: int
    ) -> tuple[Ranking, list[ImaginedImage], dict[str, float]]:
        if self.disabled is not None:
            return ranking, [], {}
        query = base_query(ranking)
        t0 = time.perf_counter()
        prompt, how = self.next_prompt(state, query)
        timings = {"prompt_s": time.perf_counter() - t0}
        images, vecs, embedded = self.generate_and_embed(gallery, [prompt] * self.images_per_turn, timings)
        if vecs is None:
            return ranking, [], timings
        from convir.encoders.base import l2_normalize

        image_query = l2_normalize(vecs.mean(axis=0))
        image_pos, _ = gallery.ranker.rank(image_query, None, depth, "dense")
        head = merge_rankings(ranking.positions, image_pos, self.dial_num, self.image_num)
        positions = np.asarray(
            extend_ranking(head, ranking.positions, image_pos, depth=depth), dtype=np.int64
        )
        scores = (1.0 / (1.0 + np.arange(len(positions)))).astype(np.float32)  # merged by position
        info = {
            **ranking.info,
            "imagination": {
                "method": self.name,
                "prompt": prompt,
                "prompt_source": how,
                "embedded": embedded,
                "image_top": [int(p) for p in image_pos[: self.image_num + self.dial_num]],
            },
        }
        return Ranking(positions, scores, ranking.query, info), images, timings
