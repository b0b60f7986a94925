"""Questions chosen by expected information gain, and image-choice clarification.

* ``infogain``: keep a posterior over the top-N candidates (softmax of their scores,
  temperature ``T``; after answers these scores are already the answer-aware posterior, see
  :mod:`convir.dialog.answers`). Candidate attributes are the YAKE keyphrases of the
  candidates' captions (as Mario does). For each attribute the three answers are modelled:
  "unknown" with probability ``u`` (nothing learnt), else "yes"/"no" with noise ``eps``; the
  question asked is the one that minimises the expected entropy of the posterior after its
  answer, i.e. the most informative one. An attribute is never asked twice, nor one the
  dialogue already states. No LLM is needed: the question is a template ("Is there a red
  sail in the photo?").
* ``choice`` (infogain + image choice, ClariMM's multimodal clarifying question with
  DIR-TIR's cluster representatives as the options): the same, plus the question "Which of
  these is closest to what you want?" over 3-4 representative candidates (KMeans over the
  top-N, the minimum-entropy member of each cluster). Its expected gain is computed like an
  attribute's: each candidate would pick the option nearest to it. The answer is relevance
  feedback (Rocchio) on the chosen and passed-over options.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from convir.dialog.answers import read_answer
from convir.dialog.attributes import item_texts, soft_has, vocabulary
from convir.dialog.questioners import Question, distinctive_members, fallback_question
from convir.dialog.state import DialogState
from convir.dialog.strategies import Ranking
from convir.text import content_stems, keyphrases

CHOICE_QUESTION = "Which of these is closest to the photo you want?"


def entropy(p: np.ndarray, axis: int = -1) -> np.ndarray:
    q = np.clip(p, 1e-12, 1.0)
    return -(p * np.log(q)).sum(axis=axis)


def softmax(scores: np.ndarray, temperature: float) -> np.ndarray:
    z = np.asarray(scores, dtype=np.float64) / temperature
    z -= z.max()
    p = np.exp(z)
    return p / p.sum()


def expected_entropy(prior: np.ndarray, likelihoods: np.ndarray) -> np.ndarray:
    """Expected posterior entropy of each question. ``likelihoods``: (n_questions, n_answers,
    n_items) P(answer | item). Returns (n_questions,)."""
    joint = likelihoods * prior[None, None, :]  # (q, a, i)
    p_answer = joint.sum(axis=2)  # (q, a)
    post = joint / np.clip(p_answer[:, :, None], 1e-300, None)
    return (p_answer * entropy(post, axis=2)).sum(axis=1)


def attribute_likelihoods(
    has: np.ndarray, eps: float, unknown: float, miss: float | None = None
) -> np.ndarray:
    """(n_attrs, 3, n_items): P(yes | item), P(no | item), P(unknown | item); ``eps`` =
    P(no | the item's text mentions it), ``miss`` = P(yes | it does not) (None: ``eps``), as
    in :class:`convir.dialog.answers.AnswerModel`."""
    miss = eps if miss is None else miss
    has = np.asarray(has, dtype=np.float64)  # soft evidence: P(item shows it) in [0, 1]
    p_yes = has * (1 - eps) + (1 - has) * miss
    yes = p_yes * (1 - unknown)
    no = (1 - p_yes) * (1 - unknown)
    unk = np.full(has.shape, unknown)
    return np.stack([yes, no, unk], axis=1)


# plurals without -s and mass nouns: no article ("Is there snow in the photo?")
_NO_ARTICLE = frozenset(
    [
        "people",
        "men",
        "women",
        "children",
        "police",
        "sheep",
        "fish",
        "deer",
        "water",
        "snow",
        "grass",
        "sand",
        "food",
        "traffic",
        "luggage",
        "furniture",
        "fruit",
        "broccoli",
        "rice",
        "meat",
        "bread",
        "hair",
        "sky",
        "smoke",
        "fog",
        "rain",
        "dirt",
    ]
)


def question_for(phrase: str) -> str:
    """The yes/no question about an attribute, worded so that a "yes" can be checked against
    captions by content words alone ("there", "photo" and stop words carry none)."""
    first, last = phrase.split()[0], phrase.split()[-1]
    plural = (phrase.endswith("s") and not phrase.endswith("ss")) or last in _NO_ARTICLE
    gerund = first.endswith("ing")
    article = "" if plural or gerund else ("an " if first[0] in "aeiou" else "a ")
    return f"Is there {article}{phrase} in the photo?"


class InfoGainQuestioner:
    name = "infogain"

    def __init__(
        self,
        llm: Any = None,
        top_n: int = 50,
        temperature: float = 0.05,
        eps: float = 0.15,
        unknown: float = 0.3,
        min_gain: float = 1e-3,
        miss: float | None = None,
        open_after: int = 0,
        vocabulary: str | None = None,
    ) -> None:
        self.vocabulary = vocabulary  # a user's phrase file, added to the shipped vocabulary
        self.top_n, self.temperature, self.eps, self.unknown = top_n, temperature, eps, unknown
        self.miss = miss
        self.open_after = open_after  # 0: yes/no questions only (see InfoGainOpenQuestioner)
        self.min_gain = min_gain  # below this no attribute question is worth a turn

    def candidates(self, ranking: Ranking) -> tuple[np.ndarray, np.ndarray]:
        n = min(self.top_n, len(ranking.positions))
        pos = np.asarray(ranking.positions[:n], dtype=np.int64)
        return pos, softmax(np.asarray(ranking.scores[:n]), self.temperature)

    def attribute_options(
        self, state: DialogState, gallery: Any, pos: np.ndarray
    ) -> tuple[list[str], np.ndarray]:
        """(attribute phrases, (n_attrs, n_items) P(item has it)) the dialogue does not settle
        yet: the keyphrases of the candidates' captions, and the visual vocabulary when some
        candidates have no text (scored by the encoder, :mod:`convir.dialog.attributes`)."""
        caps = item_texts(gallery, pos)
        known = set(content_stems(" ".join(state.turns)))
        asked = {content_stems(a) for a in state.asked_attributes}
        phrases: dict[frozenset[str], str] = {}
        pool = [ph for c in caps for ph in keyphrases(" ".join(c))]
        if any(not any(x.strip() for x in c) for c in caps):
            pool += vocabulary(self.vocabulary)
        for ph in pool:
            st = content_stems(ph)
            if st and not st <= known and st not in asked and st not in phrases:
                phrases[st] = ph
        names = list(phrases.values())
        return names, soft_has(gallery, names, pos, caps)

    def gains(self, prior: np.ndarray, has: np.ndarray) -> np.ndarray:
        if not len(has):
            return np.zeros(0)
        return float(entropy(prior)) - expected_entropy(
            prior, attribute_likelihoods(has, self.eps, self.unknown, self.miss)
        )

    def ask(self, state: DialogState, gallery: Any, ranking: Ranking) -> Question | None:
        stalled = stalled_answers(state)
        if self.open_after and stalled >= self.open_after:
            text = fallback_question(state.asked, "open_questions.txt")
            if text:
                return Question(text, {"open": True, "stalled": stalled})
        pos, prior = self.candidates(ranking)
        if len(pos) < 2:
            return self.open_question(state, stalled)
        phrases, has = self.attribute_options(state, gallery, pos)
        gains = self.gains(prior, has)
        if not len(gains) or float(gains.max()) < self.min_gain:
            return self.open_question(state, stalled)
        best = int(np.argmax(gains))
        info = {
            "attribute": phrases[best],
            "gain": round(float(gains[best]), 4),
            "entropy": round(float(entropy(prior)), 4),
            "attributes": len(phrases),
            "share_with": round(float(prior @ has[best]), 4),
        }
        return Question(question_for(phrases[best]), info, attribute=phrases[best])

    def open_question(self, state: DialogState, stalled: int) -> Question | None:
        """When no yes/no question is worth a turn, infogain-open still asks an open one."""
        if not self.open_after:
            return None
        text = fallback_question(state.asked, "open_questions.txt")
        return Question(text, {"open": True, "stalled": stalled}) if text else None


def stalled_answers(state: DialogState) -> int:
    """How many attribute questions in a row, back from the last exchange, found nothing the
    target has (answered "no" or "unknown"); an open question, volunteered text or a "yes"
    ends the count."""
    n = 0
    for e in reversed(state.exchanges):
        if e.kind != "text" or e.skipped:
            continue
        if not e.attribute or read_answer(e.answer, e.question) == "yes":
            break
        n += 1
    return n


class InfoGainOpenQuestioner(InfoGainQuestioner):
    """infogain, plus an open question ("What is in the background?", prompts/open_questions.txt,
    each asked once) after ``open_after`` yes/no questions in a row found nothing the target
    has. Yes/no questions can only sort the candidates in hand: when answer after answer is
    "no", the target is probably not among them, and only the user's own words (a free-text
    answer, searched as query text) can bring it in. No LLM is needed to ask."""

    name = "infogain-open"

    def __init__(self, llm: Any = None, open_after: int = 1, **kw: Any) -> None:
        super().__init__(llm, open_after=open_after, **kw)


class ChoiceQuestioner(InfoGainQuestioner):
    """infogain + image choice: asks whichever question has the larger expected gain."""

    name = "choice"

    def __init__(self, llm: Any = None, options: int = 4, choice_top_n: int = 30, **kw: Any) -> None:
        super().__init__(llm, **kw)
        self.n_options, self.choice_top_n = options, choice_top_n

    def choice_options(self, gallery: Any, ranking: Ranking) -> list[int]:
        """Positions of the representative candidates (one per KMeans cluster of the top
        ``choice_top_n``), in rank order."""
        n = min(self.choice_top_n, len(ranking.positions))
        pos = np.asarray(ranking.positions[:n], dtype=np.int64)
        if n < 2:
            return []
        picked = distinctive_members(
            np.asarray(gallery.ranker.vectors[pos], dtype=np.float32), self.n_options
        )
        return [int(pos[i]) for i in sorted(picked)]

    def choice_gain(self, gallery: Any, pos: np.ndarray, prior: np.ndarray, options: list[int]) -> float:
        """Expected entropy reduction of the image choice: each candidate would pick its nearest
        option (with noise eps spread over the others), "none" never (a lower bound)."""
        vecs = np.asarray(gallery.ranker.vectors, dtype=np.float32)
        sims = vecs[pos] @ vecs[options].T  # (items, options)
        nearest = sims.argmax(axis=1)
        m = len(options)
        lik = np.full((m, len(pos)), self.eps / max(m - 1, 1))
        lik[nearest, np.arange(len(pos))] = 1 - self.eps
        lik = lik * (1 - self.unknown)
        lik = np.concatenate([lik, np.full((1, len(pos)), self.unknown)])[None]  # (1, m+1, items)
        return float(entropy(prior) - expected_entropy(prior, lik)[0])

    def ask(self, state: DialogState, gallery: Any, ranking: Ranking) -> Question | None:
        attr = super().ask(state, gallery, ranking)
        pos, prior = self.candidates(ranking)
        options = self.choice_options(gallery, ranking)
        shown_before = {o for e in state.exchanges if e.kind == "choice" for o in e.options}
        if len(options) < 2 or set(gallery.ids[o] for o in options) <= shown_before:
            return attr
        gain = self.choice_gain(gallery, pos, prior, options)
        if attr is not None and attr.info["gain"] >= gain:
            attr.info["choice_gain"] = round(gain, 4)
            return attr
        ids = [gallery.ids[o] for o in options]
        caps = gallery.captions(options)
        listing = " ".join(f"[{i}] {c[0] if c else ids[i - 1]}" for i, c in enumerate(caps, 1))
        info = {"gain": round(gain, 4), "attribute_gain": attr.info["gain"] if attr else None}
        return Question(f"{CHOICE_QUESTION} {listing} (or none)", info, options=ids)
