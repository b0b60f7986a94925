"""What DAR and the Image Refiner share: generating with failure handling, embedding the
images in the gallery's space, and the text query of a strategy's ranking."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from convir.dialog.engine import ImaginedImage
from convir.dialog.strategies import Ranking
from convir.imagine.generators import Generator, GeneratorError

log = logging.getLogger("convir")
_warned_no_tower: set[tuple[str, str]] = set()  # (encoder, generator): say it once per process


def base_query(ranking: Ranking) -> str:
    """The strategy's text query (``expand`` appends " | terms" for display; drop that)."""
    return ranking.query.split(" | ")[0].strip() or ranking.query


class ImaginationBase:
    """Generation with one-time failure handling and embedding of the results.

    A generator failure (model cannot load, server down) switches imagination off for the rest
    of the session with one warning: the conversation continues text-only (``disabled`` holds
    the reason, so reports can say so).
    """

    name = "base"
    feedback_question: str | None = None

    def __init__(
        self, generator: Generator, llm: Any = None, images_per_turn: int = 3, seed: int = 0
    ) -> None:
        if images_per_turn < 1:
            from convir.errors import ConvirError

            raise ConvirError("images per turn must be at least 1")
        self.generator, self.llm = generator, llm
        self.images_per_turn, self.seed = int(images_per_turn), int(seed)
        self.disabled: str | None = None

    def result_count(self, k: int) -> int:
        """How many results a turn shows when the user asked for ``k`` (the refiner merges more)."""
        return k

    def describe(self) -> dict[str, Any]:
        """Settings and counters for run reports."""
        return {
            "method": self.name,
            "generator": self.generator.spec,
            "images_per_turn": self.images_per_turn,
            "generator_calls": self.generator.calls,
            "cache_hits": self.generator.hits,
            "disabled": self.disabled,
        }

    def disable(self, reason: str) -> None:
        if self.disabled is None:
            self.disabled = reason
            log.warning("imagination off: %s; continuing text-only", reason)

    def generate(self, prompts: list[str]) -> tuple[list[ImaginedImage], float]:
        """One image per prompt (seeds ``seed + i``); [] once the generator has failed."""
        t = time.perf_counter()
        images: list[ImaginedImage] = []
        if self.disabled is None:
            try:
                images = [self.generator.generate(p, self.seed + i) for i, p in enumerate(prompts)]
            except GeneratorError as exc:
                self.disable(str(exc))
                images = []
        return images, time.perf_counter() - t

    def generate_and_embed(
        self, gallery: Any, prompts: list[str], timings: dict[str, float]
    ) -> tuple[list[ImaginedImage], np.ndarray | None, str]:
        """(images, their vectors, how embedded) for ``prompts``, with ``generate_s`` and
        ``embed_s`` added to ``timings``; ([], None, "") when no image was made."""
        images, timings["generate_s"] = self.generate(prompts)
        if not images:
            return [], None, ""
        t = time.perf_counter()
        vecs, embedded = self.embed(gallery, images)
        timings["embed_s"] = time.perf_counter() - t
        return images, vecs, embedded

    def embed(self, gallery: Any, images: list[ImaginedImage]) -> tuple[np.ndarray, str]:
        """(K, dim) vectors and how they were made: "image" (image tower) or "prompt" (text
        surrogate: the offline ``text:`` mode, or a gallery whose encoder has no image tower)."""
        from convir.encoders.base import ImageReadError, has_image_tower

        encoder = gallery.encoder
        if self.generator.makes_images and has_image_tower(encoder):
            try:
                return encoder.encode_images([Path(i.path) for i in images]), "image"
            except ImageReadError as exc:
                log.warning("cannot embed a generated image (%s); using the prompts this turn", exc)
        elif self.generator.makes_images:
            pair = (str(getattr(encoder, "spec", type(encoder).__name__)), self.generator.spec)
            if pair not in _warned_no_tower:
                _warned_no_tower.add(pair)
                log.warning(
                    "the gallery encoder %s has no image tower, so generated images cannot be "
                    "embedded; they are represented by their prompts (index with an image-text "
                    "encoder such as open_clip:ViT-B-32/openai to use the pixels)",
                    pair[0],
                )
        return encoder.encode_text([i.prompt for i in images]), "prompt"
