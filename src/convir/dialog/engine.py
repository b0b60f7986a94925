"""The conversation loop, one piece of code for `convir chat`, the HTTP service and `convir eval dialog`.

One turn: state -> strategy ranks the gallery -> imagination (optional) re-ranks with
generated images -> the questioner asks the next question -> the answerer (a person, or a
simulator) replies -> state. Every part is swappable; :func:`convir.dialog.session.build_conversation`
assembles them from a :class:`~convir.dialog.session.SessionSpec`.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

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
    disabled: str | None  # why generation was switched off (a failed generator), else None

    def result_count(self, k: int) -> int:
        """Results a turn shows when ``k`` were asked for (the refiner's 7 + 3 merge needs 10)."""
        ...

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
    question_info: dict[str, Any] = field(default_factory=dict)  # how the questioner chose it
    options: list[str] = field(default_factory=list)  # item ids of an image-choice question

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
        spec: Any = None,
    ) -> None:
        self.gallery, self.strategy, self.questioner = gallery, strategy, questioner
        self.imagination = imagination
        self.k, self.depth = k, max(k, depth)
        self.spec = spec  # the SessionSpec it was built from (saved with the state), if any
        self.state = state
        if state is not None and state.imagination_off and imagination is not None:
            imagination.disabled = state.imagination_off
        self.last: TurnResult | None = None

    def start(self, description: str, reference: dict[str, Any] | None = None) -> TurnResult:
        """``reference``: the photo the search starts from (:mod:`convir.dialog.reference`:
        ``like_reference`` / ``image_reference``); with one, the description may be empty."""
        if not reference and (not description or not description.strip()):
            raise ConvirError("describe the image you are looking for (the description is empty)")
        self.state = DialogState(
            (description or "").strip(), spec=self.spec.to_dict() if self.spec else {}, reference=reference
        )
        return self._turn()

    def resume(self) -> TurnResult:
        """Re-rank a loaded session (e.g. after a restart) without adding a turn."""
        if self.state is None:
            raise ConvirError("no session to resume")
        return self._turn(record=False)

    def reply(self, answer: str, image_feedback: str | None = None) -> TurnResult:
        """Answer the pending question; an empty answer skips it (it is not asked again). The
        answer to an image-choice question is an option number (1..n), an item id or "none";
        "don't know" in any form skips it, and other text is a detail (as :meth:`say`).
        ``image_feedback``: how the last generated images differ from the target (refiner)."""
        st = self._need_state()
        q = st.pending_question
        if q is None:
            raise ConvirError("there is no pending question: use say() to add a description")
        if not answer.strip():
            return self.skip(image_feedback)
        if st.pending_options:
            if is_choice(answer, st.pending_options):
                return self.choose(parse_choice(answer, st.pending_options), image_feedback)
            from convir.dialog.reading import read

            if read(answer, q).polarity == "unknown":  # "idk", "not sure": a skip
                return self.skip(image_feedback)
            return self.say(answer, image_feedback)  # a detail instead of a pick
        st.exchanges.append(Exchange(q, answer.strip(), attribute=st.pending_attribute))
        self._record_feedback(image_feedback)
        return self._turn()

    def choose(self, chosen: str | None, image_feedback: str | None = None) -> TurnResult:
        """Answer a pending image-choice question: ``chosen`` is one of the offered item ids, or
        None for "none of these". The choice is relevance feedback (Rocchio), not query text."""
        st = self._need_state()
        if not st.pending_options or st.pending_question is None:
            raise ConvirError("there is no image-choice question to answer")
        if chosen is not None and chosen not in st.pending_options:
            raise ConvirError(f"{chosen!r} was not one of the options ({', '.join(st.pending_options)})")
        answer = "none of these" if chosen is None else f"option {st.pending_options.index(chosen) + 1}"
        st.exchanges.append(
            Exchange(
                st.pending_question, answer, kind="choice", options=list(st.pending_options), chosen=chosen
            )
        )
        self._record_feedback(image_feedback)
        return self._turn()

    def more(self, item_id: str) -> TurnResult:
        """ "More like this" on a result (relevance feedback: the item is what is wanted)."""
        return self._mark(item_id, "more")

    def less(self, item_id: str) -> TurnResult:
        """ "Not this" on a result (relevance feedback: results like it move down)."""
        return self._mark(item_id, "less")

    def _mark(self, item_id: str, kind: str) -> TurnResult:
        st = self._need_state()
        if item_id not in self.gallery.position:
            raise ConvirError(f"{item_id!r} is not in this gallery")
        word = "more like" if kind == "more" else "not"
        st.exchanges.append(Exchange(None, f"{word} {item_id}", kind=kind, chosen=item_id))
        self._record_feedback(None)
        return self._turn()

    def skip(self, image_feedback: str | None = None) -> TurnResult:
        """Skip the pending question: it counts as asked (never repeated) but adds nothing to
        the search (no "... ? unknown" in a concatenated query)."""
        st = self._need_state()
        if st.pending_question is None:
            raise ConvirError("there is no pending question to skip")
        st.exchanges.append(Exchange(st.pending_question, "", skipped=True, attribute=st.pending_attribute))
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
        fb = st.image_feedback
        fb.extend([""] * (len(st.exchanges) - 1 - len(fb)))
        fb.append((image_feedback or "").strip())

    def mark_found(self, item_id: str) -> None:
        st = self._need_state()
        if item_id not in self.gallery.position:
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
        asked = self.questioner.ask(st, self.gallery, ranking) if self.questioner is not None else None
        t2 = time.perf_counter()
        st.pending_question = asked.text if asked is not None else None
        st.pending_attribute = asked.attribute if asked is not None else None
        st.pending_options = list(asked.options) if asked is not None else []
        if record:
            st.queries.append(ranking.query)
            st.rankings.append([self.gallery.ids[int(p)] for p in ranking.positions[: self.k]])
            if self.imagination is not None:
                st.images.append([vars(i).copy() for i in images])
        if self.imagination is not None:  # a generator that failed stays off for this session
            st.imagination_off = self.imagination.disabled or st.imagination_off
        feedback_q = self.imagination.feedback_question if self.imagination is not None and images else None
        self.last = TurnResult(
            len(st.exchanges),
            ranking,
            st.pending_question,
            {"rank_s": t1 - t0 - sum(timings.values()), "question_s": t2 - t1, **timings},
            images,
            feedback_q,
            asked.info if asked is not None else {},
            list(st.pending_options),
        )
        return self.last


_ORDINALS = ["first", "second", "third", "fourth", "fifth", "sixth"]
_CHOICE = re.compile(
    r"(?:(?:option|number|no\.?|image|picture|photo|pic|the)\s*)?[#\[(]?\d+[\])]?"
    r"|(?:the\s+)?(?:" + "|".join(_ORDINALS) + r")(?:\s+(?:one|option|image|picture|photo))?"
    r"|none|neither|no|nope|none of (?:them|these)|not any|neither of (?:them|these)"
)


def is_choice(answer: str, options: list[str]) -> bool:
    """The answer picks an option or none of them ("2", "option 3", "the first one", an item
    id, "none"); other text ("idk", "a red one on grass") is not a pick."""
    text = answer.strip().lower().rstrip(".!")
    return text in {o.lower() for o in options} or bool(_CHOICE.fullmatch(text))


def parse_choice(answer: str, options: list[str]) -> str | None:
    """The option an answer picks: its number ("2", "option 2", "the second"), its item id, or
    None for "none" / "neither"; anything else is a :class:`ConvirError` saying what to type."""
    import re

    text = answer.strip().lower()
    if text in {o.lower() for o in options}:
        return next(o for o in options if o.lower() == text)
    if re.fullmatch(r"(none|neither|no|nope|none of (them|these)|not any)\W*", text):
        return None
    ordinals = ["first", "second", "third", "fourth", "fifth", "sixth"]
    m = re.search(r"\b(\d+)\b", text)
    n = int(m.group(1)) if m else next((i + 1 for i, w in enumerate(ordinals) if w in text), 0)
    if 1 <= n <= len(options):
        return options[n - 1]
    raise ConvirError(f"answer with an option number 1-{len(options)}, or 'none' (got {answer!r})")
