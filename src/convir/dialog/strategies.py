"""Query builders (strategies): dialogue state -> ranking of the gallery.

* ``concat`` — ChatIR baseline: ", ".join(dialogue so far), dense search.
* ``rewrite`` — ReCQR / DAR-R1: the LLM rewrites the whole dialogue into one concise,
  self-contained caption-style query (summarise -> structure -> generate, in the prompt).
* ``expand`` — QueryFormer: the (rewritten) query plus LLM-suggested related terms, with
  adaptive term weights (original words 1.0, expansion words ``expansion_weight`` x their
  normalised IDF so rare, specific words count more), run as weighted BM25 + dense hybrid.
* ``rerank`` — Mario-style: first stage top-``first_k`` hybrid on the rewritten query, then
  the top ``rerank_k`` re-scored by the LLM (pointwise relevance 0-9 over each candidate's
  captions) and fused with the first-stage order.

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


def concat_query(turns: list[str]) -> str:
    return ", ".join(turns)


def _dense(gallery: Any, text: str, k: int) -> tuple[np.ndarray, np.ndarray]:
    vec = gallery.encoder.encode_text([text])[0]
    return gallery.ranker.rank(vec, text, k, "dense")


class ConcatStrategy:
    """ChatIR baseline; also the fallback of every LLM strategy."""

    name = "concat"

    def __init__(self, mode: str = "dense") -> None:
        self.mode = mode

    def build_query(self, turns: list[str]) -> str:
        return concat_query(turns)

    def rank(self, state: DialogState, gallery: Any, k: int) -> Ranking:
        text = concat_query(state.turns)
        vec = None if self.mode == "bm25" else gallery.encoder.encode_text([text])[0]
        pos, scores = gallery.ranker.rank(vec, text, k, self.mode)
        return Ranking(pos, scores, text)


class RewriteStrategy:
    name = "rewrite"

    def __init__(self, llm: Any, mode: str = "dense") -> None:
        self.llm = llm
        self.mode = mode

    def rewrite(self, state: DialogState) -> tuple[str, bool]:
        """(query, used_llm). A single description needs no rewriting."""
        if not state.exchanges:
            return state.description, False
        from convir.llm.base import GenParams, LLMError
        from convir.llm.prompts import ask

        try:
            out = ask(
                self.llm, "rewrite", GenParams(max_tokens=64, stop=("\n",)), dialogue=state.dialogue_text()
            )
        except LLMError as exc:
            log.warning("rewrite failed (%s); using the concatenated dialogue this turn", exc)
            return concat_query(state.turns), False
        out = clean_line(out)
        return (out, True) if len(out.split()) >= 2 else (concat_query(state.turns), False)

    def rank(self, state: DialogState, gallery: Any, k: int) -> Ranking:
        text, used = self.rewrite(state)
        vec = None if self.mode == "bm25" else gallery.encoder.encode_text([text])[0]
        pos, scores = gallery.ranker.rank(vec, text, k, self.mode)
        return Ranking(pos, scores, text, {"rewritten": used})


class ExpandStrategy:
    name = "expand"

    def __init__(
        self, llm: Any, expansion_weight: float = 0.5, alpha: float = 0.9, rewrite: bool = True
    ) -> None:
        self.llm = llm
        self.expansion_weight = expansion_weight
        self.alpha = alpha
        self.rewriter = RewriteStrategy(llm) if rewrite else None

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
        llm_weight: float = 0.5,
    ) -> None:
        self.llm = llm
        self.first_k, self.rerank_k, self.first_mode = first_k, rerank_k, first_mode
        self.llm_weight = llm_weight
        self.rewriter = RewriteStrategy(llm)

    def relevance(self, query: str, caption: str) -> float | None:
        from convir.llm.base import GenParams, LLMError
        from convir.llm.prompts import ask

        try:
            out = ask(
                self.llm, "relevance", GenParams(max_tokens=3, stop=("\n",)), query=query, caption=caption
            )
        except LLMError:
            return None
        m = re.search(r"\d", out)
        return int(m.group()) / 9.0 if m else None

    def rank(self, state: DialogState, gallery: Any, k: int) -> Ranking:
        text, used = self.rewriter.rewrite(state)
        vec = gallery.encoder.encode_text([text])[0]
        pos, scores = gallery.ranker.rank(vec, text, max(k, self.first_k), self.first_mode)
        n = min(self.rerank_k, len(pos))
        caps = gallery.captions(pos[:n])
        rel = [self.relevance(text, " ".join(c[:2])) for c in caps]
        if n and all(r is not None for r in rel):
            # fuse: first-stage order (1 at the top .. 0) and LLM relevance, equal scale
            first = 1.0 - np.arange(n) / max(n, 1)
            fused = (1 - self.llm_weight) * first + self.llm_weight * np.asarray(rel, dtype=np.float32)
            order = np.lexsort((np.arange(n), -fused))
            pos = np.concatenate([pos[:n][order], pos[n:]])
            scores = np.concatenate([fused[order].astype(np.float32), scores[n:]])
        return Ranking(pos[:k], scores[:k], text, {"rewritten": used, "reranked": n, "relevance": rel})


def query_for_turns(strategy: Strategy, turns: list[str]) -> str:
    """The text query a strategy would search for a fixed dialogue (used to replay ChatIR
    files against corpus embeddings, where only the query text matters)."""
    if isinstance(strategy, ConcatStrategy):
        return concat_query(turns)
    rewriter = strategy if isinstance(strategy, RewriteStrategy) else getattr(strategy, "rewriter", None)
    if rewriter is None:
        raise ConvirError(f"strategy {strategy.name!r} cannot replay fixed dialogues")
    state = DialogState(turns[0], [Exchange(None, t) for t in turns[1:]])
    return rewriter.rewrite(state)[0]


def clean_line(text: str) -> str:
    """First non-empty line without a leading label ("Caption:", "Query:") or quotes."""
    for line in text.strip().splitlines():
        line = re.sub(r"^\s*(caption|query|answer|question|related terms)\s*:\s*", "", line, flags=re.I)
        line = line.strip().strip('"').strip()
        if line:
            return line
    return ""


STRATEGIES = {
    "concat": "ChatIR baseline: ', '.join(dialogue so far), dense",
    "rewrite": "LLM rewrites the dialogue into one caption-style query (ReCQR / DAR R1)",
    "expand": "rewrite + LLM query expansion with adaptive term weights, weighted BM25 + dense (QueryFormer)",
    "rerank": "hybrid top-100 on the rewrite, LLM re-scores the top 10 (Mario)",
}


def load_strategy(name: str, llm: Any = None) -> Strategy:
    if name not in STRATEGIES:
        raise ConvirError(f"unknown strategy {name!r}; available: {', '.join(STRATEGIES)}")
    if name == "concat":
        return ConcatStrategy()
    if llm is None:
        raise ConvirError(f"strategy {name!r} needs an LLM: pass --llm (e.g. llamacpp:smollm2)")
    return {"rewrite": RewriteStrategy, "expand": ExpandStrategy, "rerank": RerankStrategy}[name](llm)
