"""Second-stage re-rankers for the ``rerank`` strategy (Mario-style two-stage retrieval).

The first stage (hybrid search on the rewritten query) returns the top ``first_k`` items; a
re-ranker scores the top ``rerank_k`` of them against the query from their captions:

* ``llm`` — pointwise: the LLM rates each (query, caption) pair 0-9; fused 50/50 with the
  first-stage order (Mario), because a small LLM's single digits are coarse and noisy.
* ``llm-list`` — listwise: the LLM sees all candidates numbered [1]..[n] and replies with
  their order ("3 > 1 > 2"). The reply is parsed robustly (any numbers in range, first
  mention wins, unmentioned candidates keep their first-stage order after the mentioned
  ones); a reply without a usable number keeps the first-stage order.
* ``cross:PATH_OR_ID`` — a cross-encoder (e.g. ``cross:cross-encoder/ms-marco-MiniLM-L-6-v2``,
  or a ``save_pretrained`` folder): a transformers sequence-classification model that reads
  query and caption together; one label = relevance logit (sigmoid), two labels = P(label 1).
  Needs no LLM: without ``--llm`` the rerank strategy searches the concatenated dialogue.

Every re-ranker returns one score in [0, 1] per candidate (higher = better) or ``None`` when it
failed, in which case the first-stage order is kept for that turn.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from typing import Any, Protocol

from convir.errors import SpecError
from convir.specs import REGISTRY, NeedsLLMError

log = logging.getLogger("convir")

RERANKERS = REGISTRY.names("reranker")  # name -> one-line doc


class Reranker(Protocol):
    name: str
    weight: float  # share of the re-ranker's score when fused with the first-stage order (1 = its order)

    def score(self, query: str, captions: list[str]) -> list[float] | None:
        """One score in [0, 1] per caption (higher = more relevant), or None on failure."""
        ...


class LLMPointwiseReranker:
    name = "llm"
    weight = 0.5

    def __init__(self, llm: Any) -> None:
        self.llm = llm

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

    def score(self, query: str, captions: list[str]) -> list[float] | None:
        rel = [self.relevance(query, c) for c in captions]
        return None if any(r is None for r in rel) else [float(r) for r in rel]  # type: ignore[arg-type]


def parse_permutation(text: str, n: int) -> list[int] | None:
    """0-based order of ``n`` candidates from a reply such as "3 > 1 > 2" or "[2], [3]".

    Numbers outside 1..n are ignored, repeats count once (first mention), candidates the reply
    does not mention follow in their original order. None when no number in range appears."""
    order: list[int] = []
    for m in re.finditer(r"\d+", text):
        i = int(m.group()) - 1
        if 0 <= i < n and i not in order:
            order.append(i)
    if not order:
        return None
    return order + [i for i in range(n) if i not in order]


class LLMListwiseReranker:
    name = "llm-list"
    weight = 1.0

    def __init__(self, llm: Any) -> None:
        self.llm = llm
        self.last_reply = ""

    def order(self, query: str, captions: list[str]) -> list[int] | None:
        from convir.llm.base import GenParams, LLMError
        from convir.llm.prompts import ask

        if len(captions) < 2:
            return list(range(len(captions)))
        listing = "\n".join(f"[{i}] {' '.join(c.split())}" for i, c in enumerate(captions, 1))
        params = GenParams(max_tokens=4 * len(captions) + 8, stop=("\n",))
        try:
            self.last_reply = ask(self.llm, "rerank_list", params, query=query, candidates=listing)
        except LLMError as exc:
            log.warning("listwise re-ranking failed (%s); keeping the first-stage order", exc)
            return None
        order = parse_permutation(self.last_reply, len(captions))
        if order is None:
            log.warning("listwise re-ranker reply %r has no candidate numbers", self.last_reply[:80])
        return order

    def score(self, query: str, captions: list[str]) -> list[float] | None:
        order = self.order(query, captions)
        if order is None:
            return None
        n = len(order)
        scores = [0.0] * n
        for rank, i in enumerate(order):
            scores[i] = 1.0 - rank / n
        return scores


class CrossEncoderReranker:
    """A transformers sequence-classification model scoring (query, caption) pairs."""

    name = "cross"
    weight = 1.0

    def __init__(self, name: str, device: str = "cpu", batch_size: int = 32) -> None:
        from convir._compat import ensure_torchvision
        from convir.specs import local_or_hub

        ensure_torchvision()
        path, local = local_or_hub(
            name, "cross", "cross:cross-encoder/ms-marco-MiniLM-L-6-v2 or cross:/path/to/folder"
        )
        if local:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.spec = f"cross:{path}"
        where = "local folder" if local else "hub id (needs network the first time)"
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            model = AutoModelForSequenceClassification.from_pretrained(path, dtype=torch.float32)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SpecError(
                f"cannot load {self.spec} as a cross-encoder ({where}): {type(exc).__name__}: {exc}"
            ) from exc
        self.num_labels = int(model.config.num_labels)
        if self.num_labels not in (1, 2):
            raise SpecError(
                f"{self.spec} has {self.num_labels} output labels; a re-ranker needs a relevance model "
                "with 1 (score) or 2 (not relevant / relevant) labels"
            )
        self.device, self.batch_size = device, max(1, int(batch_size))
        self.model = model.to(device).eval()
        limits = [int(getattr(model.config, "max_position_embeddings", 0) or 0), 512]
        tok_max = int(getattr(self.tokenizer, "model_max_length", 0) or 0)
        if 0 < tok_max < 1_000_000:
            limits.append(tok_max)
        self.max_length = min(x for x in limits if x > 0)
        self._lock = threading.Lock()

    def score(self, query: str, captions: list[str]) -> list[float] | None:
        import torch

        out: list[float] = []
        try:
            with self._lock, torch.inference_mode():
                for start in range(0, len(captions), self.batch_size):
                    batch = captions[start : start + self.batch_size]
                    enc = self.tokenizer(
                        [query] * len(batch),
                        batch,
                        padding=True,
                        truncation=True,
                        max_length=self.max_length,
                        return_tensors="pt",
                    ).to(self.device)
                    logits = self.model(**enc).logits.float()
                    if self.num_labels == 1:
                        probs = torch.sigmoid(logits[:, 0])
                    else:
                        probs = torch.softmax(logits, dim=-1)[:, 1]
                    out.extend(float(x) for x in probs.cpu())
        except (RuntimeError, ValueError) as exc:
            log.warning("cross-encoder re-ranking failed (%s); keeping the first-stage order", exc)
            return None
        return out


def load_reranker(spec: str | None, llm: Any = None) -> Reranker:
    """``llm`` (default), ``llm-list`` or ``cross:PATH_OR_ID``; cross-encoders load once per process."""
    spec = (spec or "llm").strip()
    comp, _ = REGISTRY.parse("reranker", spec)
    if comp.needs_llm and llm is None:
        raise NeedsLLMError(
            f"strategy 'rerank' with --reranker {spec} needs an LLM: pass --llm (e.g. llamacpp:smollm2), "
            "or use --reranker cross:MODEL"
        )
    return REGISTRY.load("reranker", spec) if comp.takes_value else REGISTRY.load("reranker", spec, llm)
