"""Questioners: what to ask the user next.

* ``plain`` — ChatIR-style: ask about the target from the dialogue so far.
* ``candidates`` — DIR-TIR Dialog Refiner / PlugIR: ground the question in what is
  currently retrieved. Top-N candidates are clustered (KMeans, K=10); per cluster the most
  *distinctive* item is kept — the one whose softmax over similarities to all N candidates
  (temperature 0.01) has minimum entropy, i.e. it is close to itself and far from the rest.
  Their captions are the LLM's context for a discriminative question. A question the LLM
  can answer from that context alone (the "Uncertain" test) would not split the
  candidates and is dropped, as is any repeat of an earlier question. Of the survivors the
  one that best splits the candidates is asked (an embedding-variance proxy for PlugIR's
  information gain, see :meth:`CandidateQuestioner.best_split`).
* ``none`` — never asks (the user volunteers details).

When no LLM question survives, the plain question is tried, then the generic questions of
``prompts/fallback_questions.txt`` (never one already asked), so a simulated or human
dialogue keeps moving; ``None`` only once those are exhausted too. What happened (context,
kept and rejected questions with the reason) travels with the question (:class:`Question`)
into the turn's log, so questioners hold no per-call state and one object can serve many
sessions at once.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from convir.dialog.state import DialogState
from convir.dialog.strategies import Ranking, clean_line
from convir.specs import REGISTRY


@dataclass
class Question:
    """The next question and how it was chosen (``info``: rejected attempts and why, whether
    a fallback was used, the context shown to the LLM), for run logs and the API.
    ``attribute``: what a yes/no question asks about (its answer then re-weights the
    candidates that have it); ``options``: item ids of an image-choice question."""

    text: str
    info: dict[str, Any] = field(default_factory=dict)
    attribute: str | None = None
    options: list[str] = field(default_factory=list)


class Questioner(Protocol):
    name: str

    def ask(self, state: DialogState, gallery: Any, ranking: Ranking) -> Question | None: ...


def _norm_tokens(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", text.lower()))


def is_repeat(question: str, asked: list[str], threshold: float = 0.8) -> bool:
    """Same question again (ignoring case/punctuation), or a near copy (token Jaccard >= 0.8)."""
    q = _norm_tokens(question)
    for prev in asked:
        p = _norm_tokens(prev)
        if q == p or (q and p and len(q & p) / len(q | p) >= threshold):
            return True
    return False


_QUESTION_START = re.compile(
    r"^(?:(?:so|and|also|ok|okay|then|now|well|but)\b[,\s]+)?(what|which|who|whose|where|when|why|how|is|are|was|were|do|does|did|can|could|has|have|"
    r"had|will|would|should|any|in what|on what)\b",
    re.I,
)


def as_question(text: str) -> str:
    """The first question in an LLM reply, ending with "?"; "" when it is not a usable question.

    Small models add labels ("Q:"), continue with a second question or an answer after the
    "?", reply with one word, or write a statement ("The man is cleaning the dishes."): all of
    that is cut or rejected here, not in the prompts. A question starts with a question word
    or an auxiliary verb."""
    line = re.sub(r"^\s*q\s*[:.)]\s*", "", clean_line(text), flags=re.I)
    line = line.split("?")[0].strip().strip("\"'").strip()
    if len(line.split()) < 2 or not _QUESTION_START.match(line):
        return ""
    return f"{line}?"


def _generate(llm: Any, state: DialogState, context: str | None, attempt: int, seed: int = 0) -> str:
    """One candidate question. Greedy first; later attempts sample (temperature 0.7) with a
    different seed, otherwise a deterministic (and disk-cached) model repeats itself.
    ``context`` (the candidates' captions) selects the ``question`` prompt; without it the
    ``question_plain`` prompt asks from the dialogue alone."""
    from convir.llm.base import GenParams, LLMError
    from convir.llm.prompts import ask

    params = GenParams(
        max_tokens=32, temperature=0.0 if attempt == 0 else 0.7, seed=seed + attempt, stop=("\n",)
    )
    # few-shot examples are one line each; a base model copies the layout it is shown
    dialogue = state.dialogue_text() if llm.instruct else state.dialogue_line()
    name, values = ("question", {"context": context}) if context is not None else ("question_plain", {})
    try:
        return as_question(ask(llm, name, params, dialogue=dialogue, **values))
    except LLMError:
        return ""


def fallback_question(asked: list[str], name: str = "fallback_questions.txt") -> str | None:
    """First generic question of the prompt file ``name`` (prompts/fallback_questions.txt by
    default) not asked yet."""
    from convir.llm.prompts import prompt_dir

    path = prompt_dir() / name
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    for q in (ln.strip() for ln in lines):
        if q and not q.startswith("#") and not is_repeat(q, asked):
            return q
    return None


class PlainQuestioner:
    name = "plain"

    def __init__(self, llm: Any, attempts: int = 3, seed: int = 0) -> None:
        self.llm, self.attempts, self.seed = llm, attempts, seed

    def ask(self, state: DialogState, gallery: Any, ranking: Ranking) -> Question | None:
        rejected: list[tuple[str, str]] = []
        for attempt in range(self.attempts):
            q = _generate(self.llm, state, None, attempt, self.seed)
            if q and not is_repeat(q, state.asked):
                return Question(q, {"rejected": rejected})
            rejected.append((q, "repeat" if q else "empty"))
        generic = fallback_question(state.asked)
        return Question(generic, {"rejected": rejected, "fallback": True}) if generic else None


def softmax_entropy(vectors: np.ndarray, tau: float = 0.01) -> np.ndarray:
    """Entropy of each row's softmax over its cosine similarities to all rows (itself included).

    ``vectors`` are L2-normalised, so similarities lie in [-1, 1]; tau = 0.01 (DIR-TIR) makes
    the softmax sharp enough that an item far from every other one puts almost all mass on
    itself (entropy ~ 0) while an item in a crowd of near-duplicates spreads it (high entropy).
    """
    v = np.asarray(vectors, dtype=np.float64)
    sims = v @ v.T / tau
    sims -= sims.max(axis=1, keepdims=True)
    p = np.exp(sims)
    p /= p.sum(axis=1, keepdims=True)
    return -(p * np.log(np.clip(p, 1e-30, None))).sum(axis=1)


def distinctive_members(vectors: np.ndarray, k: int = 10, seed: int = 0) -> list[int]:
    """Indices (into ``vectors``) of the min-entropy member of each of min(k, n) KMeans clusters."""
    from sklearn.cluster import KMeans
    from sklearn.exceptions import ConvergenceWarning

    n = len(vectors)
    if n == 0:
        return []
    k = min(k, n)
    if k > 1:
        with warnings.catch_warnings():  # duplicate captions -> fewer distinct points than k: fine
            warnings.simplefilter("ignore", ConvergenceWarning)
            labels = KMeans(n_clusters=k, n_init="auto", random_state=seed).fit_predict(vectors)
    else:
        labels = np.zeros(n, dtype=int)
    ent = softmax_entropy(vectors)
    picked = []
    for c in range(k):
        members = np.flatnonzero(labels == c)
        if len(members):
            picked.append(int(members[np.argmin(ent[members])]))
    return sorted(picked)


class CandidateQuestioner:
    name = "candidates"

    def __init__(
        self,
        llm: Any,
        top_n: int = 50,
        k: int = 10,
        n_questions: int = 3,
        split_pick: bool = True,
        seed: int = 0,
    ) -> None:
        self.llm, self.top_n, self.k, self.n_questions = llm, top_n, k, n_questions
        self.split_pick, self.seed = split_pick, seed
        self.plain = PlainQuestioner(llm, attempts=1, seed=seed)

    def context(self, gallery: Any, ranking: Ranking) -> tuple[list[str], np.ndarray]:
        """First captions and vectors of the distinctive members of the top-N candidates."""
        pos = np.asarray(ranking.positions[: self.top_n], dtype=np.int64)
        pos = pos[pos >= 0]
        vecs = np.asarray(gallery.ranker.vectors[pos], dtype=np.float32)
        picked = distinctive_members(vecs, self.k, self.seed)
        caps = gallery.captions(pos[picked])
        return [c[0] if c else "" for c in caps], vecs[picked]

    def answerable(self, context: list[str], question: str) -> bool:
        """True when the LLM answers from the context alone (anything but "Uncertain"): the
        answer would then be the same for all candidates and tell them apart no better.
        An empty reply or a failed call counts as not answerable (the question is kept)."""
        from convir.llm.base import GenParams, LLMError
        from convir.llm.prompts import ask

        try:
            out = ask(
                self.llm,
                "answerable",
                GenParams(max_tokens=12, stop=("\n",)),
                context="\n".join(context) if self.llm.instruct else "; ".join(context),
                question=question,
            )
        except LLMError:
            return False
        return "uncertain" not in out.lower() and bool(out.strip())

    def ask(self, state: DialogState, gallery: Any, ranking: Ranking) -> Question | None:
        context, ctx_vecs = self.context(gallery, ranking)
        # few-shot prompts keep each example on one line, hence "; " for base models
        ctx_text = ("\n".join(context) if self.llm.instruct else "; ".join(context)) or "(none)"
        kept: list[str] = []
        rejected: list[tuple[str, str]] = []
        for attempt in range(self.n_questions):
            q = _generate(self.llm, state, ctx_text, attempt, self.seed)
            if not q:
                rejected.append(("", "empty"))
            elif is_repeat(q, state.asked):
                rejected.append((q, "repeat"))
            elif is_repeat(q, kept + [r for r, _ in rejected if r]):  # no second Uncertain test
                rejected.append((q, "same as an earlier attempt"))
            elif self.answerable(context, q):
                rejected.append((q, "answerable from the candidates alone"))
            else:
                kept.append(q)
        fallback: str | None = None
        choice: str | None
        if kept:
            choice = (
                self.best_split(gallery, kept, ctx_vecs) if self.split_pick and len(kept) > 1 else kept[0]
            )
        else:  # the plain questioner, then generic questions, keep the dialogue going
            plain = self.plain.ask(state, gallery, ranking)
            choice, fallback = (plain.text if plain else None), "plain"
            if plain is None or plain.info.get("fallback"):
                fallback = "generic"
            if choice and is_repeat(choice, [q for q, _ in rejected if q]):  # e.g. answerable
                choice, fallback = fallback_question(state.asked), "generic"
        info = {"context": context, "kept": kept, "rejected": rejected, "fallback": fallback}
        return Question(choice, info) if choice else None

    @staticmethod
    def best_split(gallery: Any, questions: list[str], ctx_vecs: np.ndarray) -> str:
        """Proxy for PlugIR's information gain: the question whose embedding's similarity to the
        context items varies most is the one whose answer is most likely to differ between them."""
        qv = gallery.encoder.encode_text(questions)
        spread = (qv @ ctx_vecs.T).var(axis=1)
        return questions[int(np.argmax(spread))]


class NoQuestioner:
    name = "none"

    def __init__(self, llm: Any = None) -> None:
        pass  # ``llm`` accepted so every questioner builds the same way

    def ask(self, state: DialogState, gallery: Any, ranking: Ranking) -> Question | None:
        return None


QUESTIONERS = REGISTRY.names("questioner")  # name -> one-line doc


def load_questioner(name: str, llm: Any = None) -> Questioner:
    """A fresh questioner by registered name (the needs-an-LLM rule is the registry's)."""
    REGISTRY.require_llm("questioner", name, llm is not None)
    return REGISTRY.load("questioner", name, llm)
