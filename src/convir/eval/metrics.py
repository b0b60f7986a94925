"""Retrieval metrics for single- and multi-turn (conversational) image retrieval.

Pure numpy, no model code, so that every number we report can be recomputed from saved
scores or ranks. Conventions shared by all functions:

* Ranks are **1-based**: rank 1 is the top of the list.
* Ties are broken **deterministically by ascending item index** (a stable sort of the
  scores in descending order). The rank of a target is therefore
  ``1 + #{j : s_j > s_target} + #{j < target : s_j == s_target}``:
  an equal-scoring item counts against the target only if it has a lower index.
  This makes results reproducible across runs, BLAS back-ends and sort implementations
  (``np.argsort`` / ``torch.argsort`` give no such guarantee).
* Rates (recall, hits, precision) are fractions in [0, 1], not percentages
  (ChatIR/PlugIR print percentages: multiply by 100).
* Invalid arguments (wrong shape, NaN scores, rank < 1, k < 1) raise ``ValueError``:
  they are programming errors, not user input errors.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "bri",
    "hits_at_k_per_turn",
    "mrr",
    "mrr_from_flags",
    "ndcg_at_k",
    "precision_at_k",
    "rank_of_target",
    "ranks_from_scores",
    "recall_at_k",
    "recall_at_k_per_turn",
    "reciprocal_rank",
    "single_metrics",
    "turn_metrics",
    "turn_stage_seconds",
]

# Bound the temporary boolean matrices of ranks_from_scores to ~16M cells per chunk.
_CHUNK_CELLS = 1 << 24


def _check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return int(k)


def _as_ranks(ranks: npt.ArrayLike, ndim: int) -> np.ndarray:
    """Validate 1-based integer ranks of the given dimensionality."""
    arr = np.asarray(ranks)
    if arr.ndim != ndim:
        raise ValueError(f"ranks must be {ndim}-D, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError("ranks is empty")
    if not np.issubdtype(arr.dtype, np.integer):
        if not np.issubdtype(arr.dtype, np.floating) or not np.all(np.isfinite(arr)):
            raise ValueError("ranks must be finite integers")
        if np.any(arr != np.round(arr)):
            raise ValueError("ranks must be whole numbers")
        arr = arr.astype(np.int64)
    if np.any(arr < 1):
        raise ValueError("ranks are 1-based: every rank must be >= 1")
    return arr


def _as_list(values: npt.ArrayLike, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one ranked list), got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite")
    return arr


# --------------------------------------------------------------------------- ranks


def rank_of_target(scores: npt.ArrayLike, target: int) -> int:
    """1-based rank of item ``target`` when items are sorted by descending score.

    ``rank = 1 + #{j : s_j > s_t} + #{j < t : s_j == s_t}``. Ties are resolved by ascending
    index (stable order): an equal score counts against the target only when the other item
    has a lower index. Higher score = better. NaN scores are rejected because they have no
    order.
    """
    s = np.asarray(scores)
    if s.ndim != 1 or s.size == 0:
        raise ValueError(f"scores must be a non-empty 1-D array, got shape {s.shape}")
    if np.issubdtype(s.dtype, np.floating) and np.any(np.isnan(s)):
        raise ValueError("scores contain NaN")
    if isinstance(target, bool) or not isinstance(target, (int, np.integer)):
        raise ValueError(f"target must be an integer index, got {target!r}")
    if not 0 <= target < s.size:
        raise ValueError(f"target {target} out of range for {s.size} items")
    st = s[target]
    return int(1 + np.count_nonzero(s > st) + np.count_nonzero(s[:target] == st))


def ranks_from_scores(scores_matrix: npt.ArrayLike, targets: npt.ArrayLike) -> np.ndarray:
    """Vectorised :func:`rank_of_target` for many queries; returns int64 ranks (n_queries,).

    ``scores_matrix`` is (n_queries, n_items), ``targets`` the target item index per query.
    Same definition and tie-breaking as :func:`rank_of_target`:
    ``rank_q = 1 + #{j : S[q,j] > S[q,t_q]} + #{j < t_q : S[q,j] == S[q,t_q]}``.
    Rows are processed in chunks so a 2k x 50k gallery does not need GBs of temporaries.
    """
    s = np.asarray(scores_matrix)
    t = np.asarray(targets)
    if s.ndim != 2 or s.shape[1] == 0:
        raise ValueError(f"scores_matrix must be 2-D (n_queries, n_items), got shape {s.shape}")
    if t.ndim != 1 or t.shape[0] != s.shape[0]:
        raise ValueError(f"targets must be 1-D with {s.shape[0]} entries, got shape {t.shape}")
    if t.size and not np.issubdtype(t.dtype, np.integer):
        raise ValueError("targets must be integer indices")
    t = t.astype(np.int64, copy=False)
    n_items = s.shape[1]
    if t.size and (t.min() < 0 or t.max() >= n_items):
        raise ValueError(f"targets out of range for {n_items} items")
    if np.issubdtype(s.dtype, np.floating) and np.any(np.isnan(s)):
        raise ValueError("scores contain NaN")
    out = np.empty(s.shape[0], dtype=np.int64)
    cols = np.arange(n_items)
    step = max(1, _CHUNK_CELLS // n_items)
    for start in range(0, s.shape[0], step):
        block = s[start : start + step]
        tb = t[start : start + step]
        st = block[np.arange(block.shape[0]), tb][:, None]
        higher = np.count_nonzero(block > st, axis=1)
        tied_before = np.count_nonzero((block == st) & (cols[None, :] < tb[:, None]), axis=1)
        out[start : start + step] = 1 + higher + tied_before
    return out


# ------------------------------------------------------------ single-target metrics


def recall_at_k(ranks: npt.ArrayLike, k: int) -> float:
    """Share of queries whose (single) target has rank <= k: ``mean(rank_q <= k)``.

    With one relevant item per query this equals Hits@k / success@k.
    """
    r = _as_ranks(ranks, 1)
    return float(np.mean(r <= _check_k(k)))


def mrr(ranks: npt.ArrayLike) -> float:
    """Mean reciprocal rank for single-target retrieval: ``mean(1 / rank_q)``.

    No cut-off: every target is somewhere in the gallery, so there is no "not found" case.
    For lists with several relevant items use :func:`mrr_from_flags`.
    """
    r = _as_ranks(ranks, 1)
    return float(np.mean(1.0 / r))


# ------------------------------------------------------- list-level (multi-relevant)


def precision_at_k(relevant_flags_ranked: npt.ArrayLike, k: int) -> float:
    """Precision@k of one ranked list: ``(#relevant among positions 1..k) / k``.

    ``relevant_flags_ranked[i]`` is 1/True when the item at position i+1 is relevant
    (any non-zero value counts as relevant). If the list is shorter than k the missing
    positions count as non-relevant, i.e. the denominator stays k (the TREC convention).
    """
    flags = _as_list(relevant_flags_ranked, "relevant_flags_ranked")
    k = _check_k(k)
    return float(np.count_nonzero(flags[:k]) / k)


def reciprocal_rank(relevant_flags_ranked: npt.ArrayLike) -> float:
    """Reciprocal rank of one ranked list: ``1 / (position of the first relevant item)``.

    Positions are 1-based; 0.0 when the list holds no relevant item.
    """
    flags = _as_list(relevant_flags_ranked, "relevant_flags_ranked")
    hits = np.flatnonzero(flags)
    return 0.0 if hits.size == 0 else float(1.0 / (hits[0] + 1))


def mrr_from_flags(relevant_flags_per_query: Sequence[npt.ArrayLike]) -> float:
    """MRR over queries with any number of relevant items: mean of :func:`reciprocal_rank`.

    Takes a sequence of ranked flag lists (they may differ in length); a query with no
    relevant item in its list contributes 0.
    """
    if len(relevant_flags_per_query) == 0:
        raise ValueError("no queries")
    return float(np.mean([reciprocal_rank(f) for f in relevant_flags_per_query]))


def ndcg_at_k(
    gains_ranked: npt.ArrayLike,
    k: int,
    ideal_gains: npt.ArrayLike | None = None,
) -> float:
    """nDCG@k of one ranked list with binary or graded (linear) gains.

    ``DCG@k = sum_{i=1..min(k,n)} g_i / log2(i + 1)`` where ``g_i`` is the gain of the item at
    1-based position i (so position 1 is undiscounted). ``nDCG@k = DCG@k / IDCG@k`` where
    IDCG@k is the DCG@k of the ideal ordering: ``ideal_gains`` (or, if None, ``gains_ranked``)
    sorted in descending order. Pass ``ideal_gains`` = the gains of *all* judged relevant items
    when some are missing from the retrieved list; otherwise nDCG is optimistic. Gains are
    used as given (pass ``2**rel - 1`` for the exponential variant). Returns 0.0 when
    IDCG@k is 0 (no relevant item at all). Gains must be >= 0.
    """
    gains = _as_list(gains_ranked, "gains_ranked")
    k = _check_k(k)
    ideal = gains if ideal_gains is None else _as_list(ideal_gains, "ideal_gains")
    if np.any(gains < 0) or np.any(ideal < 0):
        raise ValueError("gains must be >= 0")

    def dcg(g: np.ndarray) -> float:
        g = g[:k]
        return float(np.sum(g / np.log2(np.arange(2, g.size + 2))))

    idcg = dcg(np.sort(ideal)[::-1])
    return 0.0 if idcg == 0.0 else dcg(gains) / idcg


# ------------------------------------------------------------ multi-turn (dialogue)


def hits_at_k_per_turn(ranks_per_turn: npt.ArrayLike, k: int) -> np.ndarray:
    """Cumulative Hits@k per turn, the ChatIR protocol; returns shape (n_turns,).

    ``hits[t] = mean_d [ min(r_{d,0}, ..., r_{d,t}) <= k ]``: a dialogue counts as a hit at
    turn t if its target was within the top k at ANY turn <= t (first-hitting time <= t),
    even if later turns lost it again. Non-decreasing in t by construction.
    ``ranks_per_turn`` is (n_dialogs, n_turns), turn 0 = the initial description alone.
    """
    r = _as_ranks(ranks_per_turn, 2)
    best = np.minimum.accumulate(r, axis=1)
    return np.mean(best <= _check_k(k), axis=0)


def recall_at_k_per_turn(ranks_per_turn: npt.ArrayLike, k: int) -> np.ndarray:
    """Non-cumulative Recall@k per turn; returns shape (n_turns,).

    ``recall[t] = mean_d [ r_{d,t} <= k ]``: only the ranking produced at turn t counts
    (ChatIR/PlugIR "Recall@K" per round). Always <= :func:`hits_at_k_per_turn`.
    """
    r = _as_ranks(ranks_per_turn, 2)
    return np.mean(r <= _check_k(k), axis=0)


def bri(ranks_per_turn: npt.ArrayLike) -> float:
    """PlugIR's Best log Rank Integral (Lee et al., ACL 2024); lower is better, 0 is perfect.

    For each dialogue d with 1-based ranks r_{d,0..T}: best rank so far
    ``b_t = min(r_0, ..., r_t)``; integrate ``ln(b_t)`` over turns 0..T with the trapezoid
    rule and divide by the number of intervals T (a trapezoid-weighted mean over turns);
    then average over dialogues::

        BRI = mean_d (1/T) * sum_{t=0}^{T-1} (ln b_{d,t} + ln b_{d,t+1}) / 2

    Ambiguity, resolved to match the official code (github.com/Saehyung-Lee/PlugIR,
    ``eval.py``): BRI is usually stated as ``log(b_t + 1)``, and the code computes
    ``torch.log(min_rank + 1)`` where ``min_rank`` is the **0-based** position of the target
    (from ``argsort``). With the 1-based ranks used here that is ``ln(b_t)``, so a system
    that always ranks the target first scores 0. Using ``ln(b_t + 1)`` on 1-based ranks would
    add up to ln 2 and not reproduce published numbers. The log is natural (``torch.log``).
    An earlier commit of that file omitted the log; we follow the fixed version.
    With a single turn (T = 0) there is no interval; we return ``mean_d ln(b_{d,0})``,
    the limit of the trapezoid mean.
    """
    r = _as_ranks(ranks_per_turn, 2)
    logb = np.log(np.minimum.accumulate(r, axis=1).astype(np.float64))
    n_turns = logb.shape[1]
    if n_turns == 1:
        return float(np.mean(logb[:, 0]))
    per_dialog = ((logb[:, :-1] + logb[:, 1:]) / 2.0).sum(axis=1) / (n_turns - 1)
    return float(np.mean(per_dialog))


# --------------------------------------------------------------------- summaries (reports)


def turn_metrics(ranks: npt.ArrayLike | list[list[int]], ks: Sequence[int] = (1, 5, 10)) -> dict[str, Any]:
    """ChatIR/PlugIR metrics from a (n_targets, n_turns) matrix of 1-based ranks.

    Returns ``{"hits@K": [per turn, cumulative], "recall@K": [per turn], "mrr": [per turn],
    "bri": float}`` as plain lists/floats, ready for ``report.json``. Rates are fractions.
    """
    r = np.asarray(ranks)
    if r.ndim != 2:
        raise ValueError(f"ranks must be 2-D (n_targets, n_turns), got shape {r.shape}")
    out: dict[str, Any] = {}
    for k in ks:
        out[f"hits@{k}"] = hits_at_k_per_turn(r, k).tolist()
    for k in ks:
        out[f"recall@{k}"] = recall_at_k_per_turn(r, k).tolist()
    out["mrr"] = [mrr(r[:, t]) for t in range(r.shape[1])]
    out["bri"] = bri(r)
    return out


# The simulated user's own time: not part of what a person would wait for.
USER_STAGES = ("answer_s", "feedback_s")


def turn_stage_seconds(turn: Mapping[str, Any]) -> dict[str, float]:
    """Seconds per stage of one logged turn (its ``*_s`` keys), plus ``turn_s`` (all stages)
    and ``system_s`` (all but the simulated user's ``answer_s``/``feedback_s``); {} when the
    turn logged no timings."""
    parts = {k: float(v) for k, v in turn.items() if k.endswith("_s")}
    if not parts:
        return {}
    total = sum(parts.values())
    user = sum(v for k, v in parts.items() if k in USER_STAGES)
    return {**parts, "turn_s": total, "system_s": total - user}


def single_metrics(ranks: npt.ArrayLike, ks: Sequence[int] = (1, 5, 10)) -> dict[str, Any]:
    """Single-shot retrieval metrics: ``{"R@K": ..., "MRR": ..., "n": n_queries}``.

    Accepts one rank per query, or a (n, 1) matrix as produced by a 1-turn run.
    """
    r = np.asarray(ranks)
    if r.ndim == 2 and r.shape[1] == 1:
        r = r[:, 0]
    out: dict[str, Any] = {f"R@{k}": recall_at_k(r, k) for k in ks}
    out["MRR"] = mrr(r)
    out["n"] = int(r.shape[0])
    return out
