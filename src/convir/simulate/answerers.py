"""Who answers the system's questions: a person, or a simulated user.

* ``captions`` — offline simulator: an LLM answers only from the target's held-out
  captions (never shown to the retrieval side), "unknown" when they do not say. This keeps
  the simulator from leaking text the gallery already contains.
* ``facts`` — offline and LLM-free (the default without ``--llm``): answers by rule from the
  same held-out captions (:class:`FactAnswerer`), deterministic and fast.
* ``human`` — the person at the terminal (the HTTP service answers through its API).
* ``vlm`` — answers from the target IMAGE with a vision-language model (``--vlm SPEC``:
  ``hf:MODEL`` or ``openai:BASE_URL#MODEL``), see :mod:`convir.simulate.vlm`; it can also say
  how a generated image differs from the target (``differences``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from convir.errors import ConvirError
from convir.specs import REGISTRY

UNKNOWN = "unknown"
DONT_KNOW = "I don't know"  # what the facts answerer says (a person's words; read as unknown)
_NOT_STATED = re.compile(
    r"\b(unknown|not (stated|mentioned|say|said|specified|known|clear)|cannot|can't|no information)\b", re.I
)


@dataclass
class Answer:
    """A (simulated) user's reply; ``raw`` is the model's own reply when grounding or
    clean-up replaced it (kept for the run log), else "" (the same as ``text``)."""

    text: str
    raw: str = ""


class Answerer(Protocol):
    name: str

    def answer(self, question: str, target_id: str) -> Answer: ...


def _stems(text: str) -> set[str]:
    """Stemmed content words (the shared rule of :mod:`convir.text`)."""
    from convir.text import content_stems

    return set(content_stems(text))


def grounded(answer: str, question: str, captions: list[str]) -> str:
    """``answer`` if the captions support it, else "unknown".

    Small simulator LLMs (Gemma 3 270M, SmolLM2) answer from their imagination instead of
    the captions ("sunny", "because they are not working"), which injects facts the target
    does not have and makes every strategy look worse than it is. The rule: at least half of
    the answer's content words (stemmed) occur in the captions; a bare "yes" needs every
    content word of the question in them ("Is the dog black?" needs "dog" and "black"); a
    bare "no" is never grounded, because captions say what is in a photo, not what is not."""
    if answer == UNKNOWN:
        return answer
    cap = _stems(" ".join(captions))
    m = re.match(r"^(yes|yeah|yep|no|nope)\b[\s,.;:!-]*(.*)$", answer, re.I)
    rest = m.group(2) if m else answer
    words = _stems(rest)
    if words:
        return answer if 2 * len(words & cap) >= len(words) else UNKNOWN
    if m and m.group(1).lower() in ("yes", "yeah", "yep"):
        q = _stems(question)
        return answer if q and q <= cap else UNKNOWN
    return UNKNOWN


def short_answer(text: str, max_words: int = 20) -> str:
    """First line, label stripped, at most ``max_words`` words; "unknown" when empty or evasive."""
    from convir.dialog.strategies import clean_line

    line = re.sub(r"^\s*a\s*:\s*", "", clean_line(text), flags=re.I)  # "A: yes" (few-shot echo)
    if not line or _NOT_STATED.search(line):
        return UNKNOWN
    return " ".join(line.split()[:max_words]).rstrip(".")


class CaptionAnswerer:
    """Answers from the target's held-out captions only, so the simulated user knows what a
    person looking at the photo would, without leaking the text the gallery is indexed by.
    ``failures`` counts LLM errors (answered "unknown") so a run can report them.
    ``ground`` (default on) replaces answers the captions do not support by "unknown"
    (:func:`grounded`); the model's own reply travels in :attr:`Answer.raw` for the run log.

    ``all_captions_by_id`` (every caption of each target, gallery text included) lets the user
    say *no*: a yes/no question about something none of the target's captions mention ("Is
    there a dog?" on a photo described without a dog) is answered "no", as a person looking
    at the photo would, without asking the LLM. A "no" reveals no gallery words (the system
    chose the words of the question), so it cannot leak; it is exact with respect to the
    captions, i.e. an optimistic user (docs/evaluation.md). ``encoder`` lets the user answer
    image-choice questions (:meth:`choose`): the option closest to the held-out captions."""

    name = "captions"

    def __init__(
        self,
        llm: Any,
        captions_by_id: dict[str, list[str]],
        ground: bool = True,
        all_captions_by_id: dict[str, list[str]] | None = None,
        encoder: Any = None,
    ) -> None:
        self.llm, self.captions_by_id, self.ground = llm, captions_by_id, ground
        self.all_captions_by_id = all_captions_by_id or {}
        self.encoder = encoder
        self._facts: dict[str, Any] = {}
        self.failures = 0

    def absent(self, question: str, target_id: str) -> bool:
        """A yes/no question about something none of the target's captions mention."""
        from convir.dialog.answers import question_attribute

        everything = self.all_captions_by_id.get(target_id)
        attr = question_attribute(question)
        if not everything or not attr:
            return False
        return not _stems(attr) <= _stems(" ".join(everything))

    def answer(self, question: str, target_id: str) -> Answer:
        from convir.llm.base import GenParams, LLMError
        from convir.llm.prompts import ask

        if self.absent(question, target_id):
            return Answer("no")
        caps = self.captions_by_id.get(target_id) or []
        if not caps:
            return Answer(UNKNOWN)
        text = " ".join(c.strip().rstrip(".") + "." for c in caps)
        try:
            out = ask(
                self.llm, "answer", GenParams(max_tokens=24, stop=("\n",)), captions=text, question=question
            )
        except LLMError:
            self.failures += 1
            return Answer(UNKNOWN)
        raw = short_answer(out)
        final = grounded(raw, question, caps) if self.ground else raw
        return Answer(final, raw if raw != final else "")

    def choose(self, option_vectors: Any, target_id: str, option_ids: list[str] | None = None) -> int | None:
        """The image-choice answer: the index of the option whose gallery vector is closest to
        the target's held-out captions (their normalised mean vector); None without any."""
        import numpy as np

        if self.encoder is None or not len(option_vectors):
            return None
        if target_id not in self._facts:
            caps = self.captions_by_id.get(target_id) or []
            vec = None
            if caps:
                from convir.encoders.base import l2_normalize

                vec = l2_normalize(self.encoder.encode_text(caps).mean(axis=0, keepdims=True))[0]
            self._facts[target_id] = vec
        facts = self._facts[target_id]
        if facts is None:
            return None
        return int(np.argmax(np.asarray(option_vectors, dtype=np.float32) @ facts))

    def differences(self, image_prompt: str, target_id: str, image_path: str = "") -> str:
        """What a generated image (described by its prompt; the pixels are not looked at) gets
        wrong about the target, from the held-out captions only; "" when nothing is stated
        (DIR-TIR Image Refiner feedback)."""
        from convir.llm.base import GenParams, LLMError
        from convir.llm.prompts import ask

        caps = self.captions_by_id.get(target_id) or []
        if not caps or not image_prompt.strip():
            return ""
        text = " ".join(c.strip().rstrip(".") + "." for c in caps)
        try:
            out = ask(
                self.llm,
                "differences",
                GenParams(max_tokens=40, stop=("\n",)),
                captions=text,
                prompt=image_prompt,
            )
        except LLMError:
            self.failures += 1
            return ""
        line = re.sub(r"^\s*differences?\s*:\s*", "", short_answer(out, max_words=30), flags=re.I)
        if line == UNKNOWN or re.fullmatch(r"\W*(none|nothing|no differences?)\W*", line, re.I):
            return ""
        return line


class FactAnswerer(CaptionAnswerer):
    """A simulated user without an LLM: answers by rule from the target's held-out captions
    (its *facts*), so an evaluation needs no model and takes seconds. Deterministic.

    * yes/no question: "yes" when the held-out captions mention the attribute (all its content
      stems, the posterior's has-test); "no" when none of the target's captions mention it (the
      closed-world assumption, as :meth:`CaptionAnswerer.absent`: captions name what a photo
      shows, so what no caption names is taken as absent; the posterior's ``eps`` allows for
      the misses); "I don't know" when only the captions the system indexes mention it (the
      user's facts do not, so it neither confirms nor denies them);
    * alternative question ("Is it indoors or outdoors?"): the alternative the facts mention,
      else "I don't know";
    * open question: up to ``phrases`` YAKE keyphrases of the facts that are new to this
      dialogue (not in its questions or earlier answers), those sharing words with the
      question first; "I don't know" when the facts have nothing new;
    * image choice: the option closest to the facts (:meth:`CaptionAnswerer.choose`);
    * refiner feedback (:meth:`differences`): the facts' keyphrases the image prompt lacks.

    Every answer is a held-out caption's own words or yes/no about the system's words, so it
    leaks no gallery text and never contradicts its facts."""

    name = "facts"

    def __init__(
        self,
        captions_by_id: dict[str, list[str]],
        all_captions_by_id: dict[str, list[str]] | None = None,
        encoder: Any = None,
        phrases: int = 2,
        llm: Any = None,
    ) -> None:
        super().__init__(None, captions_by_id, all_captions_by_id=all_captions_by_id, encoder=encoder)
        self.phrases = phrases
        self._said: dict[str, set[str]] = {}  # stems of the dialogue so far, per target

    def _fact_stems(self, target_id: str) -> set[str]:
        return _stems(" ".join(self.captions_by_id.get(target_id) or []))

    def answer(self, question: str, target_id: str) -> Answer:
        from convir.dialog.answers import question_attribute
        from convir.dialog.reading import is_yes_no_question

        said = self._said.setdefault(target_id, set())
        said |= _stems(question)
        facts = self._fact_stems(target_id)
        attr = question_attribute(question)
        if attr:
            stems = _stems(attr)
            if stems <= facts:
                return Answer("yes")
            if self.absent(question, target_id) or not self.all_captions_by_id.get(target_id):
                return Answer("no")
            return Answer(DONT_KNOW)
        if is_yes_no_question(re.sub(r"\bor\b", "and", question)):  # an alternative question
            for alt in re.split(r",|\bor\b", re.sub(r"^\W*\w+\s+(it|there|the \w+)\s+", "", question)):
                alt_stems = _stems(alt)
                if alt_stems and alt_stems <= facts:
                    return Answer(" ".join(w for w in re.findall(r"[a-z0-9]+", alt.lower())))
            return Answer(DONT_KNOW)
        return Answer(self._open(question, target_id, said))

    def _open(self, question: str, target_id: str, said: set[str]) -> str:
        """New fact phrases for an open question (see the class docstring)."""
        from convir.text import keyphrases

        caps = self.captions_by_id.get(target_id) or []
        q = _stems(question)
        found: list[tuple[int, int, str]] = []
        for i, phrase in enumerate(keyphrases(" ".join(c.strip().rstrip(".") + "." for c in caps))):
            stems = _stems(phrase)
            if stems and not stems <= said:
                found.append((-len(stems & q), i, phrase))
        picked: list[str] = []
        for _, _, phrase in sorted(found):
            if len(picked) == self.phrases:
                break
            if not _stems(phrase) <= said:
                picked.append(phrase)
                said |= _stems(phrase)
        return ", ".join(picked) if picked else DONT_KNOW

    def differences(self, image_prompt: str, target_id: str, image_path: str = "") -> str:
        """The facts' keyphrases the generated image's prompt lacks; "" when none."""
        from convir.text import keyphrases

        caps = self.captions_by_id.get(target_id) or []
        have = _stems(image_prompt)
        missing = [p for p in keyphrases(" ".join(caps)) if not _stems(p) <= have]
        return ", ".join(missing[: self.phrases])


class HumanAnswerer:
    """The person at the terminal; I/O is injectable so the chat loop and tests share it.
    An empty reply means "skip this question" and is returned as ""."""

    name = "human"

    def __init__(
        self, input_fn: Callable[[str], str] = input, output_fn: Callable[[str], Any] = print
    ) -> None:
        self.input_fn, self.output_fn = input_fn, output_fn

    def answer(self, question: str, target_id: str) -> Answer:
        self.output_fn(f"Q: {question}")
        return Answer(self.input_fn("answer (empty = skip)> ").strip())


ANSWERERS = REGISTRY.names("answerer")  # name -> one-line doc


def load_answerer(
    name: str,
    llm: Any = None,
    captions_by_id: dict[str, list[str]] | None = None,
    *,
    vlm: Any = None,
    image_paths_by_id: dict[str, str] | None = None,
    all_captions_by_id: dict[str, list[str]] | None = None,
    encoder: Any = None,
) -> Answerer:
    """``vlm``: a VLM spec string (``hf:...``, ``openai:URL#MODEL``) or a loaded VLM, with
    ``image_paths_by_id`` the target images; both are required by the ``vlm`` answerer."""
    REGISTRY.parse("answerer", name)
    if name == "vlm":
        if vlm is None:
            raise ConvirError(
                "the vlm answerer needs a vision-language model: pass --vlm "
                "(e.g. --vlm hf:HuggingFaceTB/SmolVLM-256M-Instruct or --vlm openai:http://host/v1#model)"
            )
        if not image_paths_by_id:
            raise ConvirError(
                "the vlm answerer needs the target images: use a dataset with image files "
                "(e.g. --dataset flickr8k-sim), or --answerer captions"
            )
        from convir.simulate.vlm import VLMAnswerer, load_vlm

        return VLMAnswerer(load_vlm(vlm) if isinstance(vlm, str) else vlm, image_paths_by_id)
    if name == "human":
        return HumanAnswerer()
    if name == "facts":
        return FactAnswerer(captions_by_id or {}, all_captions_by_id=all_captions_by_id, encoder=encoder)
    REGISTRY.require_llm("answerer", name, llm is not None)
    return CaptionAnswerer(llm, captions_by_id or {}, all_captions_by_id=all_captions_by_id, encoder=encoder)
