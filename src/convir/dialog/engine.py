"""The conversation loop, one piece of code for `convir chat`, the HTTP service and `convir eval dialog`.

One turn: state -> strategy ranks the gallery -> the questioner asks the next question ->
the answerer (a person, or a simulator) replies -> state. Every part is swappable.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from convir.dialog.state import DialogState, Exchange
from convir.dialog.strategies import Ranking
from convir.errors import ConvirError


@dataclass
class ImaginedImage:
    """An image the loop generated this turn ("imagination"), shown to the user with its prompt."""

    path: str  # file in the image cache; "" for a text-only generator (offline caption mode)
    prompt: str


class Imagination(Protocol):
    """Optional stage after the strategy: generate images of the target and re-rank with them
    (DAR fusion, DIR-TIR Image Refiner). ``feedback_question`` is what the user is asked about
    the generated images (None when the method needs no feedback)."""

    name: str
    feedback_question: str | None

    def apply(
        self, state: DialogState, gallery: Any, ranking: Ranking, depth: int
    ) -> tuple[Ranking, list[ImaginedImage], dict[str, float]]:
        """(new ranking, images shown this turn, timings such as {"generate_s": ...})."""
        ...


@dataclass
class TurnResult:
    turn: int
    ranking: Ranking
    question: str | None
    timings: dict[str, float] = field(default_factory=dict)
    images: list[ImaginedImage] = field(default_factory=list)
    image_question: str | None = None  # ask the user how the images differ from the target

    def top_ids(self, gallery: Any, k: int) -> list[str]:
        return [gallery.ids[int(p)] for p in self.ranking.positions[:k]]


class Conversation:
    """A multi-turn search session over one gallery."""

    def __init__(
        self,
        gallery: Any,
        strategy: Any,
        questioner: Any,
        k: int = 10,
        depth: int = 100,
        state: DialogState | None = None,
        imagination: Imagination | None = None,
    ) -> None:
        self.gallery, self.strategy, self.questioner = gallery, strategy, questioner
        self.imagination = imagination
        self.k, self.depth = k, max(k, depth)
        self.state = state
        self.last: TurnResult | None = None

    def start(self, description: str) -> TurnResult:
        if not description or not description.strip():
            raise ConvirError("describe the image you are looking for (the description is empty)")
        self.state = DialogState(description.strip())
        return self._turn()

    def resume(self) -> TurnResult:
        """Re-rank a loaded session (e.g. after a restart) without adding a turn."""
        if self.state is None:
            raise ConvirError("no session to resume")
        return self._turn(record=False)

    def reply(self, answer: str, image_feedback: str | None = None) -> TurnResult:
        """Answer the pending question; an empty answer skips it (it is not asked again).
        ``image_feedback``: how the last generated images differ from the target (refiner)."""
        st = self._need_state()
        q = st.pending_question
        if q is None:
            raise ConvirError("there is no pending question: use say() to add a description")
        # a skipped question still counts as asked (never repeated) but adds no fact
        st.exchanges.append(Exchange(q, answer.strip() or "unknown"))
        self._record_feedback(image_feedback)
        return self._turn()

    def say(self, text: str, image_feedback: str | None = None) -> TurnResult:
        """Volunteered text (no question), e.g. "it was at night"."""
        st = self._need_state()
        if not text.strip():
            raise ConvirError("nothing to add (empty text)")
        st.exchanges.append(Exchange(None, text.strip()))
        self._record_feedback(image_feedback)
        return self._turn()

    def _record_feedback(self, image_feedback: str | None) -> None:
        """One entry per exchange (aligned with ``state.exchanges``); "" when none was given."""
        st = self._need_state()
        fb = st.meta.setdefault("image_feedback", [])
        fb.extend([""] * (len(st.exchanges) - 1 - len(fb)))
        fb.append((image_feedback or "").strip())

    def mark_found(self, item_id: str) -> None:
        st = self._need_state()
        if item_id not in set(self.gallery.ids):
            raise ConvirError(f"{item_id!r} is not in this gallery")
        st.found = item_id

    def _need_state(self) -> DialogState:
        if self.state is None:
            raise ConvirError("start the conversation with a description first")
        return self.state

    def _turn(self, record: bool = True) -> TurnResult:
        st = self._need_state()
        t0 = time.perf_counter()
        ranking = self.strategy.rank(st, self.gallery, self.depth)
        images: list[ImaginedImage] = []
        timings: dict[str, float] = {}
        if self.imagination is not None:
            ranking, images, timings = self.imagination.apply(st, self.gallery, ranking, self.depth)
        t1 = time.perf_counter()
        question = self.questioner.ask(st, self.gallery, ranking) if self.questioner is not None else None
        t2 = time.perf_counter()
        st.pending_question = question
        if record:
            st.queries.append(ranking.query)
            st.rankings.append([self.gallery.ids[int(p)] for p in ranking.positions[: self.k]])
            if self.imagination is not None:
                st.meta.setdefault("images", []).append([vars(i).copy() for i in images])
        feedback_q = self.imagination.feedback_question if self.imagination is not None and images else None
        self.last = TurnResult(
            len(st.exchanges),
            ranking,
            question,
            {"rank_s": t1 - t0 - sum(timings.values()), "question_s": t2 - t1, **timings},
            images,
            feedback_q,
        )
        return self.last


def target_rank(ranking: Ranking, target_pos: int, depth: int) -> int:
    """1-based rank of the target in a ranking of ``depth`` items (depth + 1 when absent)."""
    hit = np.flatnonzero(np.asarray(ranking.positions[:depth]) == target_pos)
    return int(hit[0]) + 1 if len(hit) else depth + 1


def simulate(
    conv: Conversation, description: str, target_id: str, target_pos: int, answerer: Any, turns: int
) -> tuple[list[int], list[dict[str, Any]]]:
    """Run one simulated dialogue: ranks at turns 0..turns and per-turn details/timings."""
    res = conv.start(description)
    ranks = [target_rank(res.ranking, target_pos, conv.depth)]
    log: list[dict[str, Any]] = [
        {"query": res.ranking.query, **res.timings, **_images_log(res), **_question_log(conv)}
    ]
    for _ in range(turns):
        q = res.question
        if q is None:  # nothing to ask: the ranking stays as it is
            ranks.append(ranks[-1])
            log.append({"question": None})
            continue
        t = time.perf_counter()
        answer = answerer.answer(q, target_id)
        answer_s = time.perf_counter() - t
        feedback: dict[str, Any] = {}
        raw = getattr(answerer, "last_raw", None)
        if raw and raw != answer:  # the simulator's own reply, when grounding replaced it
            feedback["answer_raw"] = raw
        if res.image_question and res.images and hasattr(answerer, "differences"):
            # the simulated user says how the generated image differs from the target (refiner)
            t = time.perf_counter()
            shown = res.images[0]
            feedback["image_feedback"] = answerer.differences(shown.prompt, target_id, shown.path)
            feedback["feedback_s"] = time.perf_counter() - t
        res = conv.reply(answer, image_feedback=feedback.get("image_feedback"))
        ranks.append(target_rank(res.ranking, target_pos, conv.depth))
        log.append(
            {
                "question": q,
                "answer": answer,
                "query": res.ranking.query,
                "answer_s": answer_s,
                **feedback,
                **res.timings,
                **_images_log(res),
                **_question_log(conv),
            }
        )
    return ranks, log


def _question_log(conv: Conversation) -> dict[str, Any]:
    """How this turn's questioner got the next question, for the per-target log: how many LLM
    questions it rejected and why, and whether it fell back (``plain`` questioner inside
    ``candidates``, or a ``generic`` question). Lets a run show, e.g., that a small LLM's
    questions mostly fail the "Uncertain" test."""
    info = getattr(conv.questioner, "last_info", None) or {}
    out: dict[str, Any] = {}
    reasons: dict[str, int] = {}
    for _, why in info.get("rejected", []):
        reasons[why] = reasons.get(why, 0) + 1
    if reasons:
        out["question_rejected"] = reasons
    fallback = info.get("fallback")
    if fallback:
        out["question_fallback"] = "generic" if fallback is True else str(fallback)
    return out


def _images_log(res: TurnResult) -> dict[str, Any]:
    """The turn's generated images (prompt, file) for the per-target log; {} without any."""
    return {"images": [vars(i).copy() for i in res.images]} if res.images else {}
