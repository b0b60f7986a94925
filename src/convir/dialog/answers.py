"""Answers that count: what each answer says about the candidates, applied to the ranking.

A dense text encoder reads "is there a dog? no" as evidence *for* a dog, and a concatenated
query grows every turn whether or not an answer said anything. Here each answer is *read*:

* :func:`read_answer`: yes / no / unknown / text (a free-text fact), read by
  :mod:`convir.dialog.reading` from what people type ("idk", "i dont think so", "no, it's
  blue", "a red bike, not on a road"), with the negated phrases and new facts;
* :func:`evidence`: the (attribute, yes|no) facts of the dialogue. The attribute of a yes/no
  question is what an ``infogain`` question asked about, or the content words of any other
  yes/no question ("Is the boat red?" -> boat + red); negations in free text ("the dog is not
  black", "there is no snow") are "no" facts too;
* :func:`posterior_rerank`: a Bayesian update of the candidates. The prior is a softmax of
  the strategy's scores (temperature ``T``); each fact multiplies an item's probability by
  P(answer | the item's text mentions / does not mention the attribute). An item *mentions*
  an attribute when all of its content stems occur in the item's captions
  (:mod:`convir.text`). ``eps`` = P(no | mentioned) is the chance a person errs about what
  the photo shows; ``miss`` = P(yes | not mentioned) allows for captions that leave things out
  (by default the same noise rate: a larger ``miss`` did worse on dev, docs/benchmarks.md).
  A "no" pushes down the candidates that mention the attribute; a "yes" lifts them; "unknown"
  changes nothing.
* :func:`rocchio`: image-choice answers and "more like this" / "not this" move the query
  vector towards chosen items and away from rejected ones (Rocchio relevance feedback:
  q' = q + b * mean(chosen) - c * mean(rejected)).

:class:`AnswerAwareStrategy` wraps any strategy with all of this, so it works with concat,
rewrite, expand and rerank alike: the strategy sees the dialogue without the "no" and
"unknown" exchanges (their words would mislead it) and with "yes" answers to attribute
questions as the attribute itself; its ranking then gets the feedback and posterior update.
``answers="text"`` keeps the papers' text-only handling (every exchange as text), so their
baselines stay reproducible; relevance feedback applies in both modes (it has no text form).
Defaults tuned on coco5k-sim dev (benchmarks/tune_infogain.py, docs/benchmarks.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from convir.dialog.attributes import item_texts, soft_has
from convir.dialog.reading import is_yes_no_question, read, strip_negations
from convir.dialog.state import DialogState, Exchange
from convir.dialog.strategies import Ranking
from convir.text import content_stems, content_words

ANSWER_MODES = {
    "aware": "read yes/no answers and re-weight the candidates (posterior); "
    "'no' and 'unknown' answers leave the query text",
    "text": "the papers' text-only handling: every answer is query text",
}


def read_answer(answer: str, question: str | None = None) -> str:
    """ "yes", "no", "unknown" or "text" (a free-text answer that is neither); the full reading,
    with negated phrases and new facts, is :func:`convir.dialog.reading.read`."""
    return read(answer, question).polarity


def question_attribute(question: str | None) -> str | None:
    """What a yes/no question asks about: its content words ("Is the boat red?" -> "boat red");
    None for open questions ("What colour is the boat?") and questions without content words."""
    if not is_yes_no_question(question):
        return None
    words = content_words(question or "")
    return " ".join(words) or None


def negated_phrases(text: str) -> list[str]:
    """What free text says is absent ("the dog is not black" -> ["black"]; "a red bike, not on
    a road" -> ["road"]; "no people" -> ["people"]); a leading bare "no" is the answer's reading,
    not a phrase (:mod:`convir.dialog.reading`)."""
    return list(read(text, volunteered=True).negated)


@dataclass(frozen=True)
class Fact:
    """One thing the dialogue says about the target: ``phrase`` is (``yes``) or is not (``no``) in it."""

    phrase: str
    reading: str  # "yes" | "no"

    @property
    def stems(self) -> frozenset[str]:
        return content_stems(self.phrase)


def evidence(state: DialogState) -> list[Fact]:
    """The yes/no facts of the dialogue (see the module docstring); duplicates kept once."""
    facts: list[Fact] = [Fact(p, "no") for p in negated_phrases(state.description)]
    for e in state.said:
        r = read(e.answer, e.question, volunteered=e.question is None)
        attr = e.attribute or (question_attribute(e.question) if e.question else None)
        if attr and r.polarity in ("yes", "no"):
            facts.append(Fact(attr, r.polarity))
        facts += [Fact(p, "no") for p in r.negated]
    seen: set[tuple[frozenset[str], str]] = set()
    out = []
    for f in facts:
        key = (f.stems, f.reading)
        if f.stems and key not in seen:
            seen.add(key)
            out.append(f)
    return out


def text_view(state: DialogState) -> DialogState:
    """The dialogue as the strategy should read it when answers are read: "no" and "unknown"
    answers out (their meaning is in the posterior) but for the new facts they state ("no,
    it's blue" -> "blue"; "idk" -> nothing), a "yes" to an attribute question as the attribute
    itself plus its new facts ("a red sail, sunny"), negated phrases removed from free text."""
    kept: list[Exchange] = []
    for e in state.said:
        r = read(e.answer, e.question, volunteered=e.question is None)
        if e.question and r.polarity in ("no", "unknown"):
            if r.facts:
                kept.append(Exchange(None, r.fact_text))
            continue
        if e.attribute and r.polarity == "yes":
            kept.append(Exchange(None, ", ".join([e.attribute, *r.facts])))
            continue
        if e.question is None and r.polarity == "unknown":
            continue  # "idk" volunteered: nothing to search for
        text = strip_negations(e.answer) if r.negated else e.answer
        if text:
            kept.append(replace(e, answer=text))
    return replace(state, description=strip_negations(state.description) or state.description, exchanges=kept)


def item_stems(gallery: Any, positions: np.ndarray) -> list[frozenset[str]]:
    """Content stems of each item's captions (all of them joined)."""
    return [content_stems(" ".join(c)) for c in item_texts(gallery, positions)]


def has_matrix(facts: list[Any], stems: list[frozenset[str]]) -> np.ndarray:
    """(n_facts, n_items) bool: item i has attribute f (all of f's stems in its captions)."""
    out = np.zeros((len(facts), len(stems)), dtype=bool)
    for r, f in enumerate(facts):
        fs = f.stems if isinstance(f, Fact) else f
        out[r] = [fs <= s for s in stems]
    return out


@dataclass
class AnswerModel:
    """How answers are read into probabilities (defaults tuned on coco5k-sim dev)."""

    temperature: float = 0.05  # prior: softmax(score / T) over the candidates
    eps: float = 0.15  # P(no | the item's text mentions it)
    miss: float | None = None  # P(yes | the item's text does not mention it); None: eps
    feedback_b: float = 0.6  # Rocchio: weight of the chosen items
    feedback_c: float = 0.3  # Rocchio: weight of the rejected items
    pool: int = 100  # candidates re-weighted (the conversation's depth)
    extra: dict[str, Any] = field(default_factory=dict)

    def loglik(self, facts: list[Fact], has: np.ndarray) -> np.ndarray:
        """Sum over facts of log P(answer | has/lacks) per item, shape (n_items,)."""
        if not facts:
            return np.zeros(has.shape[1])
        yes = np.array([f.reading == "yes" for f in facts])[:, None]
        miss = self.eps if self.miss is None else self.miss
        has = np.asarray(has, dtype=np.float64)  # soft: P(item shows it) in [0, 1]
        p_yes = has * (1 - self.eps) + (1 - has) * miss  # P(yes | item), then the answer's own
        return np.log(np.where(yes, p_yes, 1 - p_yes)).sum(axis=0)


def posterior_rerank(ranking: Ranking, gallery: Any, facts: list[Fact], model: AnswerModel) -> Ranking:
    """Re-rank the top ``model.pool`` by posterior log-probability (prior: the scores / T).
    Scores come back in the prior's units (log-posterior x T), so a later softmax with the
    same temperature is the posterior itself (the infogain questioner relies on that)."""
    if not facts or not len(ranking.positions):
        return ranking
    n = min(model.pool, len(ranking.positions))
    pos = np.asarray(ranking.positions[:n], dtype=np.int64)
    scores = np.asarray(ranking.scores[:n], dtype=np.float64)
    has = soft_has(gallery, [f.phrase for f in facts], pos)
    logit = scores / model.temperature + model.loglik(facts, has)
    order = np.lexsort((np.arange(n), -logit))
    new_scores = (logit[order] * model.temperature).astype(np.float32)
    info = {**ranking.info, "facts": [[f.phrase, f.reading] for f in facts]}
    return Ranking(
        np.concatenate([pos[order], np.asarray(ranking.positions[n:], dtype=np.int64)]),
        np.concatenate([new_scores, np.asarray(ranking.scores[n:], dtype=np.float32)]),
        ranking.query,
        info,
    )


def rocchio(
    ranking: Ranking, gallery: Any, feedback: list[tuple[str, int]], model: AnswerModel, depth: int
) -> Ranking:
    """Relevance feedback on item vectors: score_i = base_i + b * mean(chosen).v_i - c *
    mean(rejected).v_i, over the strategy's candidates plus the dense neighbours of the moved
    query q' = q + b * mean(chosen) - c * mean(rejected). base_i is the strategy's score (the
    cosine q.v_i for dense strategies, where this is exactly Rocchio) or q.v_i for new items."""
    if not feedback:
        return ranking
    vectors = gallery.ranker.vectors
    where = gallery.position
    plus = [where[i] for i, s in feedback if s > 0 and i in where]
    minus = [where[i] for i, s in feedback if s < 0 and i in where]
    if not plus and not minus:
        return ranking
    dim = vectors.shape[1]
    c_plus = np.asarray(vectors[plus], dtype=np.float32).mean(axis=0) if plus else np.zeros(dim, np.float32)
    c_minus = (
        np.asarray(vectors[minus], dtype=np.float32).mean(axis=0) if minus else np.zeros(dim, np.float32)
    )
    q = gallery.encoder.encode_text([ranking.query.split(" | ")[0] or ranking.query])[0]
    moved = q + model.feedback_b * c_plus - model.feedback_c * c_minus
    norm = float(np.linalg.norm(moved))
    _, near = gallery.ranker.ann.search(moved / norm if norm > 0 else moved, depth)
    base = {int(p): float(s) for p, s in zip(ranking.positions, ranking.scores, strict=False)}
    cand = np.unique(np.concatenate([np.asarray(ranking.positions, dtype=np.int64), near[0][near[0] >= 0]]))
    v = np.asarray(vectors[cand], dtype=np.float32)
    base_s = np.array([base.get(int(p), float(v[i] @ q)) for i, p in enumerate(cand)], dtype=np.float32)
    scores = base_s + model.feedback_b * (v @ c_plus) - model.feedback_c * (v @ c_minus)
    order = np.lexsort((cand, -scores))[:depth]
    info = {**ranking.info, "feedback": {"more": len(plus), "less": len(minus)}}
    return Ranking(cand[order], scores[order].astype(np.float32), ranking.query, info)


def demote(ranking: Ranking, gallery: Any, rejected: list[str]) -> Ranking:
    """Items the user ruled out ("not this") move below every other candidate, in their order:
    a Rocchio step alone can leave a rejected item on top (it was the chosen option before)."""
    out = {gallery.position[i] for i in rejected if i in gallery.position}
    if not out:
        return ranking
    pos = np.asarray(ranking.positions)
    down = np.isin(pos, list(out))
    if not down.any():
        return ranking
    order = np.concatenate([np.flatnonzero(~down), np.flatnonzero(down)])
    scores = np.asarray(ranking.scores, dtype=np.float32)[order].copy()
    n_keep = int((~down).sum())
    if n_keep:  # keep scores non-increasing: the demoted ones sit just below the last kept one
        floor = float(scores[n_keep - 1])
        scores[n_keep:] = np.minimum(scores[n_keep:], floor) - 1e-3
    return Ranking(pos[order], scores, ranking.query, {**ranking.info, "demoted": int(down.sum())})


class AnswerAwareStrategy:
    """Any strategy plus relevance feedback and (``aware``) read answers; see the module docstring."""

    def __init__(self, inner: Any, aware: bool = True, model: AnswerModel | None = None) -> None:
        self.inner, self.aware = inner, aware
        self.model = model or AnswerModel()
        self.name = inner.name

    def view(self, state: DialogState) -> DialogState:
        return text_view(state) if self.aware else state

    def query(self, state: DialogState) -> str:
        return self.inner.query(self.view(state))

    def rank(self, state: DialogState, gallery: Any, k: int) -> Ranking:
        ranking = self.inner.rank(self.view(state), gallery, k)
        ranking = rocchio(ranking, gallery, state.feedback, self.model, k)
        if self.aware:
            ranking = posterior_rerank(ranking, gallery, evidence(state), self.model)
        return demote(ranking, gallery, state.rejected)

    def __getattr__(self, name: str) -> Any:  # e.g. the rerank strategy's reranker, for reports
        return getattr(self.inner, name)
