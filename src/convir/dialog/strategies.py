"""Query builders (strategies): dialogue state -> ranking of the gallery.

* ``concat`` — ChatIR baseline: ", ".join(dialogue so far), dense search.
* ``rewrite`` — ReCQR / DAR-R1: the LLM rewrites the whole dialogue into one concise,
  self-contained caption-style query (summarise -> structure -> generate, in the prompt).
* ``expand`` — QueryFormer: the (rewritten) query plus LLM-suggested related terms, with
  adaptive term weights (original words 1.0, expansion words ``expansion_weight`` x their
  normalised IDF so rare, specific words count more), run as weighted BM25 + dense hybrid.
* ``rerank`` — Mario-style: first stage top-``first_k`` hybrid on the rewritten query, then
  the top ``rerank_k`` re-scored by a re-ranker over each candidate's captions and fused with
  the first-stage order: the LLM pointwise (relevance 0-9, default), the LLM listwise
  (``llm-list``) or a cross-encoder (``cross:MODEL``), see :mod:`convir.dialog.rerankers`.

Any LLM failure falls back to the concat query for that turn (logged), so a session never
dies because a model server hiccupped.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from convir.dialog.state import DialogState, Exchange
from convir.errors import ConvirError
from convir.specs import REGISTRY

log = logging.getLogger("convir")


@dataclass
class Ranking:
    positions: np.ndarray
    scores: np.ndarray
    query: str
    info: dict[str, Any] = field(default_factory=dict)


class Strategy(Protocol):
    name: str

    def rank(self, state: DialogState, gallery: Any, k: int) -> Ranking:
        """Rank the gallery for the dialogue so far; best first."""
        ...

    def query(self, state: DialogState) -> str:
        """The text this strategy searches for the dialogue (replays of fixed dialogues
        against corpus embeddings only need this)."""
        ...


def concat_query(turns: list[str]) -> str:
    return ", ".join(turns)


class ConcatStrategy:
    """ChatIR baseline; also the fallback of every LLM strategy."""

    name = "concat"

    def __init__(self, llm: Any = None, mode: str = "dense") -> None:
        self.mode = mode  # ``llm`` is accepted (and unused) so every strategy builds the same way

    def query(self, state: DialogState) -> str:
        return concat_query(state.turns)

    def rank(self, state: DialogState, gallery: Any, k: int) -> Ranking:
        text = self.query(state)
        pos, scores = gallery.rank_text(text, k, self.mode)
        return Ranking(pos, scores, text)


class RewriteStrategy:
    name = "rewrite"

    def __init__(self, llm: Any, mode: str = "dense", anchor: bool = True, keep_answers: bool = True) -> None:
        self.llm = llm
        self.mode = mode
        self.anchor = anchor
        self.keep_answers = keep_answers

    def rewrite(self, state: DialogState) -> tuple[str, bool]:
        """(query, used_llm). A single description needs no rewriting.

        With ``anchor`` (default), exchanges answered "unknown" are not shown to the LLM (they
        carry no fact and small models copy them), and a rewrite that lost more than half of
        the description's content words is prefixed with the description: small rewriters
        (Gemma 3 270M) shrink "a young woman in pink leggings playing tennis" to "a tennis
        player". With ``keep_answers`` (default) an exchange whose answer lost more than half
        of its content words in the rewrite is appended as asked ("what colour is the sail?
        red"). Tuned on coco5k-sim dev (benchmarks/tune_dialog.py, docs/benchmarks.md)."""
        informative = [e for e in state.said if e.answer.strip().lower() != "unknown"]
        if not state.said or (self.anchor and not informative):
            return state.description, False
        from convir.llm.base import GenParams, LLMError
        from convir.llm.prompts import ask

        shown = DialogState(state.description, informative, spec=state.spec) if self.anchor else state
        try:
            out = ask(
                self.llm, "rewrite", GenParams(max_tokens=64, stop=("\n",)), dialogue=shown.dialogue_text()
            )
        except LLMError as exc:
            log.warning("rewrite failed (%s); using the concatenated dialogue this turn", exc)
            return concat_query(state.turns), False
        out = clean_line(out)
        if len(out.split()) < 2:
            return concat_query(state.turns), False
        if self.anchor and coverage(out, state.description) < 0.5:
            out = f"{state.description.rstrip(' .')}, {out}"
        if self.keep_answers:  # an answer whose facts the rewrite dropped is appended as asked
            lost = [e.text for e in informative if coverage(out, e.answer) < 0.5]
            out = ", ".join([out.rstrip(" ."), *lost])
        return out, True

    def query(self, state: DialogState) -> str:
        return self.rewrite(state)[0]

    def rank(self, state: DialogState, gallery: Any, k: int) -> Ranking:
        text, used = self.rewrite(state)
        pos, scores = gallery.rank_text(text, k, self.mode)
        return Ranking(pos, scores, text, {"rewritten": used})


class ExpandStrategy:
    name = "expand"

    def __init__(
        self,
        llm: Any,
        expansion_weight: float = 0.5,
        alpha: float = 0.9,
        rewrite: bool = True,
        anchor: bool = True,
        keep_answers: bool = True,
    ) -> None:
        self.llm = llm
        self.expansion_weight = expansion_weight
        self.alpha = alpha
        self.rewriter = RewriteStrategy(llm, anchor=anchor, keep_answers=keep_answers) if rewrite else None

    def expansion_terms(self, query: str) -> list[str]:
        from convir.llm.base import GenParams, LLMError
        from convir.llm.prompts import ask

        try:
            out = ask(self.llm, "expand", GenParams(max_tokens=40, stop=("\n",)), query=query)
        except LLMError as exc:
            log.warning("query expansion failed (%s); searching without it", exc)
            return []
        terms = [t.strip(" .\"'") for t in clean_line(out).split(",")]
        seen = set(query.lower().split())
        out_terms = []
        for t in terms:
            if t and len(t) <= 40 and t.lower() not in seen:
                seen.add(t.lower())
                out_terms.append(t)
        return out_terms[:8]

    def term_weights(self, gallery: Any, query: str, terms: list[str]) -> dict[str, float]:
        """Original words weigh 1; expansion words ``expansion_weight`` x IDF / max IDF."""
        bm25 = gallery.ranker.bm25
        weights = {w: 1.0 for w in set(query.lower().split())}
        idf = {t: bm25.idf(t) for t in terms}
        top = max(idf.values(), default=0.0) or 1.0
        for t, v in idf.items():
            if v > 0:
                weights[t.lower()] = self.expansion_weight * v / top
        return weights

    def query(self, state: DialogState) -> str:
        """The (rewritten) base query; a replay searches it without the expansion terms."""
        return self.rewriter.rewrite(state)[0] if self.rewriter else concat_query(state.turns)

    def rank(self, state: DialogState, gallery: Any, k: int) -> Ranking:
        base, used = self.rewriter.rewrite(state) if self.rewriter else (concat_query(state.turns), False)
        terms = self.expansion_terms(base)
        weights = self.term_weights(gallery, base, terms)
        enc = gallery.encoder
        vec = enc.encode_text([base])[0]
        if terms:  # dense side: the base query nudged towards the expansion terms
            from convir.encoders.base import l2_normalize

            vec = l2_normalize(vec + self.expansion_weight * 0.5 * enc.encode_text([", ".join(terms)])[0])
        pos, scores = gallery.ranker.rank(vec, base, k, "hybrid", alpha=self.alpha, weights=weights)
        return Ranking(
            pos,
            scores,
            base + (" | " + ", ".join(terms) if terms else ""),
            {"rewritten": used, "terms": terms},
        )


class RerankStrategy:
    name = "rerank"

    def __init__(
        self,
        llm: Any,
        first_k: int = 100,
        rerank_k: int = 10,
        first_mode: str = "hybrid",
        llm_weight: float | None = None,
        reranker: Any = None,
        anchor: bool = True,
        keep_answers: bool = True,
    ) -> None:
        """``reranker``: a :class:`convir.dialog.rerankers.Reranker` (default: the LLM pointwise).
        ``llm_weight``: share of the re-ranker's score in the fusion with the first-stage order;
        default the re-ranker's own (0.5 pointwise LLM, 1.0 listwise and cross-encoder). Without
        an LLM (cross-encoder only) the query is the concatenated dialogue."""
        from convir.dialog.rerankers import LLMPointwiseReranker

        self.llm = llm
        self.first_k, self.rerank_k, self.first_mode = first_k, rerank_k, first_mode
        self.reranker = reranker if reranker is not None else LLMPointwiseReranker(llm)
        self.llm_weight = float(self.reranker.weight if llm_weight is None else llm_weight)
        self.rewriter = (
            RewriteStrategy(llm, anchor=anchor, keep_answers=keep_answers) if llm is not None else None
        )

    def relevance(self, query: str, caption: str) -> float | None:
        """The LLM's pointwise 0-9 relevance scaled to [0, 1] (None when it fails)."""
        from convir.dialog.rerankers import LLMPointwiseReranker

        return LLMPointwiseReranker(self.llm).relevance(query, caption)

    def query(self, state: DialogState) -> str:
        """The first-stage query: the rewrite, or the concatenated dialogue without an LLM."""
        return self.rewriter.rewrite(state)[0] if self.rewriter else concat_query(state.turns)

    def rank(self, state: DialogState, gallery: Any, k: int) -> Ranking:
        text, used = self.rewriter.rewrite(state) if self.rewriter else (concat_query(state.turns), False)
        pos, scores = gallery.rank_text(text, max(k, self.first_k), self.first_mode)
        n = min(self.rerank_k, len(pos))
        caps = gallery.captions(pos[:n])
        rel = self.reranker.score(text, [" ".join(c[:2]) for c in caps]) if n else None
        if n and rel is not None and len(rel) == n:
            # fuse: first-stage order (1 at the top .. 0) and re-ranker score, equal scale
            first = 1.0 - np.arange(n) / max(n, 1)
            fused = (1 - self.llm_weight) * first + self.llm_weight * np.asarray(rel, dtype=np.float32)
            order = np.lexsort((np.arange(n), -fused))
            pos = np.concatenate([pos[:n][order], pos[n:]])
            scores = np.concatenate([fused[order].astype(np.float32), scores[n:]])
        info = {"rewritten": used, "reranked": n, "reranker": self.reranker.name, "relevance": rel}
        return Ranking(pos[:k], scores[:k], text, info)


def query_for_turns(strategy: Strategy, turns: list[str]) -> str:
    """The text query a strategy would search for a fixed dialogue (used to replay ChatIR
    files against corpus embeddings, where only the query text matters)."""
    return strategy.query(DialogState(turns[0], [Exchange(None, t) for t in turns[1:]]))


def content_words(text: str) -> set[str]:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return {w for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in ENGLISH_STOP_WORDS}


def coverage(text: str, source: str) -> float:
    """Share of ``source``'s content words (stop words aside) that ``text`` still contains."""
    src = content_words(source)
    return len(src & content_words(text)) / len(src) if src else 1.0


def clean_line(text: str) -> str:
    """First non-empty line without a leading label ("Caption:", "Query:") or quotes."""
    for line in text.strip().splitlines():
        line = re.sub(r"^\s*(caption|query|answer|question|related terms)\s*:\s*", "", line, flags=re.I)
        line = line.strip().strip('"').strip()
        if line:
            return line
    return ""


STRATEGIES = REGISTRY.names("strategy")  # name -> one-line doc


def load_strategy(name: str, llm: Any = None, reranker: Any = None, mode: str = "dense") -> Strategy:
    """A fresh strategy by registered name. ``reranker`` (rerank only): a spec (``llm``,
    ``llm-list``, ``cross:PATH_OR_ID``) or a Reranker; ``mode``: first-stage ranking of
    concat and rewrite (dense | bm25 | hybrid)."""
    REGISTRY.parse("strategy", name)
    if reranker not in (None, "llm") and name != "rerank":
        raise ConvirError(f"--reranker {reranker} only applies to --strategy rerank (not {name!r})")
    REGISTRY.require_llm("strategy", name, llm is not None)
    if name == "rerank":
        from convir.dialog.rerankers import load_reranker

        rr = (
            reranker
            if reranker is not None and not isinstance(reranker, str)
            else load_reranker(reranker, llm)
        )
        return REGISTRY.load("strategy", name, llm, reranker=rr)
    if name in ("concat", "rewrite"):
        return REGISTRY.load("strategy", name, llm, mode=mode)
    return REGISTRY.load("strategy", name, llm)
