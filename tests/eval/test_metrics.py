"""Metrics against hand-computed cases (arithmetic in comments) plus property tests."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from convir.eval.metrics import (
    bri,
    hits_at_k_per_turn,
    mrr,
    mrr_from_flags,
    ndcg_at_k,
    precision_at_k,
    rank_of_target,
    ranks_from_scores,
    recall_at_k,
    recall_at_k_per_turn,
    reciprocal_rank,
)

# ------------------------------------------------------------------------- ranks


def test_rank_without_ties() -> None:
    # scores [0.1, 0.5, 0.3]: only 0.5 beats 0.3 -> rank of item 2 = 1 + 1 = 2
    assert rank_of_target([0.1, 0.5, 0.3], 2) == 2
    assert rank_of_target([0.1, 0.5, 0.3], 1) == 1
    assert rank_of_target([0.1, 0.5, 0.3], 0) == 3


def test_rank_ties_broken_by_ascending_index() -> None:
    s = [0.5, 0.5, 0.5, 0.2]
    # item 0: 0 higher, 0 tied with lower index -> 1
    # item 1: 0 higher, 1 tied before (idx 0) -> 2
    # item 2: 0 higher, 2 tied before (idx 0, 1) -> 3
    # item 3: 3 higher -> 4
    assert [rank_of_target(s, t) for t in range(4)] == [1, 2, 3, 4]
    # [0.2, 0.9, 0.9, 0.9], target 2: 0 higher, idx 1 tied before, idx 3 tied after (not counted) -> 2
    assert rank_of_target([0.2, 0.9, 0.9, 0.9], 2) == 2
    # a tie with a HIGHER index never hurts: target 1 of [0.9, 0.7, 0.7] -> 1 + 1 (0.9) + 0 = 2
    assert rank_of_target([0.9, 0.7, 0.7], 1) == 2


def test_ranks_from_scores_matches_hand_values() -> None:
    scores = np.array(
        [
            [0.5, 0.5, 0.5, 0.2],  # target 2 -> 3 (two ties before it)
            [0.1, 0.9, 0.3, 0.9],  # target 3 -> 1 + 0 higher + 1 tie before (idx 1) = 2
            [1.0, 2.0, 3.0, 4.0],  # target 0 -> 1 + 3 higher = 4
        ]
    )
    assert ranks_from_scores(scores, [2, 3, 0]).tolist() == [3, 2, 4]


def test_ranks_from_scores_chunks_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    import convir.eval.metrics as m

    monkeypatch.setattr(m, "_CHUNK_CELLS", 4)  # one row (4 items) per chunk
    scores = np.array([[0.5, 0.5, 0.5, 0.2]] * 3)
    assert m.ranks_from_scores(scores, [0, 1, 3]).tolist() == [1, 2, 4]


def test_rank_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        rank_of_target([0.1, float("nan")], 0)
    with pytest.raises(ValueError):
        rank_of_target([0.1, 0.2], 2)
    with pytest.raises(ValueError):
        rank_of_target([0.1, 0.2], -1)
    with pytest.raises(ValueError):
        ranks_from_scores(np.zeros((2, 3)), [0])
    with pytest.raises(ValueError):
        ranks_from_scores(np.array([[0.0, np.nan]]), [0])


# ------------------------------------------------------------ single-target metrics


def test_recall_at_k() -> None:
    ranks = [1, 3, 10, 11]
    assert recall_at_k(ranks, 10) == 0.75  # 1, 3, 10 are <= 10 -> 3/4
    assert recall_at_k(ranks, 1) == 0.25  # only rank 1 -> 1/4
    assert recall_at_k(ranks, 100) == 1.0


def test_mrr_single_target() -> None:
    # (1/1 + 1/2 + 1/4 + 1/5) / 4 = (1 + 0.5 + 0.25 + 0.2) / 4 = 1.95 / 4 = 0.4875
    assert mrr([1, 2, 4, 5]) == pytest.approx(0.4875)


def test_rank_metrics_reject_bad_ranks_and_k() -> None:
    with pytest.raises(ValueError):
        recall_at_k([0, 1], 1)  # ranks are 1-based
    with pytest.raises(ValueError):
        recall_at_k([1, 2], 0)
    with pytest.raises(ValueError):
        mrr([])
    with pytest.raises(ValueError):
        mrr([1.5])


# ------------------------------------------------------- list-level (multi-relevant)


def test_precision_at_k() -> None:
    flags = [1, 0, 1, 1, 0]
    assert precision_at_k(flags, 3) == pytest.approx(2 / 3)  # positions 1..3: 1,0,1 -> 2/3
    assert precision_at_k(flags, 5) == pytest.approx(3 / 5)
    assert precision_at_k(flags, 10) == pytest.approx(3 / 10)  # short list: denominator stays k


def test_reciprocal_rank_and_list_mrr() -> None:
    assert reciprocal_rank([0, 0, 1, 1]) == pytest.approx(1 / 3)  # first relevant at position 3
    assert reciprocal_rank([0, 0]) == 0.0
    # (1/1 + 1/2 + 0) / 3 = 0.5
    assert mrr_from_flags([[1, 0], [0, 1, 1], [0, 0, 0]]) == pytest.approx(0.5)


def test_ndcg_graded_wikipedia_example() -> None:
    gains = [3, 2, 3, 0, 1, 2]
    # DCG@6 = 3/log2(2) + 2/log2(3) + 3/log2(4) + 0/log2(5) + 1/log2(6) + 2/log2(7)
    #       = 3 + 1.26186 + 1.5 + 0 + 0.38685 + 0.71241 = 6.86112
    dcg = 3 + 2 / math.log2(3) + 3 / 2 + 1 / math.log2(6) + 2 / math.log2(7)
    assert dcg == pytest.approx(6.86112, abs=1e-5)
    # all judged gains [3,3,3,2,2,2,1,0]; ideal top 6 = 3,3,3,2,2,2
    # IDCG@6 = 3 + 3/1.58496 + 3/2 + 2/2.32193 + 2/2.58496 + 2/2.80735
    #        = 3 + 1.89279 + 1.5 + 0.86135 + 0.77371 + 0.71241 = 8.74026
    idcg = 3 + 3 / math.log2(3) + 3 / 2 + 2 / math.log2(5) + 2 / math.log2(6) + 2 / math.log2(7)
    assert idcg == pytest.approx(8.74026, abs=1e-5)
    # nDCG@6 = 6.86112 / 8.74026 = 0.78500
    assert ndcg_at_k(gains, 6, ideal_gains=[3, 3, 3, 2, 2, 2, 1, 0]) == pytest.approx(dcg / idcg)
    assert ndcg_at_k(gains, 6, ideal_gains=[3, 3, 3, 2, 2, 2, 1, 0]) == pytest.approx(0.785, abs=5e-4)
    # ideal from the list itself: sorted [3,3,2,2,1,0]
    # IDCG@6 = 3 + 1.89279 + 2/2 + 0.86135 + 1/2.58496 + 0 = 7.14099 -> nDCG = 6.86112/7.14099 = 0.96081
    assert ndcg_at_k(gains, 6) == pytest.approx(0.96081, abs=1e-5)


def test_ndcg_binary_and_edge_cases() -> None:
    # [0,1,0,1]: DCG = 1/log2(3) + 1/log2(5) = 0.63093 + 0.43068 = 1.06161
    #            IDCG = 1/log2(2) + 1/log2(3) = 1 + 0.63093 = 1.63093 -> 0.65092
    assert ndcg_at_k([0, 1, 0, 1], 4) == pytest.approx(0.65092, abs=1e-5)
    # k = 1 cuts the list to [0]: DCG 0, IDCG 1 -> 0
    assert ndcg_at_k([0, 1], 1) == 0.0
    assert ndcg_at_k([1, 0], 1) == 1.0
    assert ndcg_at_k([0, 0, 0], 3) == 0.0  # no relevant item: defined as 0
    with pytest.raises(ValueError):
        ndcg_at_k([1, -1], 2)


# ------------------------------------------------------------ multi-turn (dialogue)

# 3 dialogues x 3 turns, k = 10
RANKS = np.array(
    [
        [20, 5, 30],  # found at turn 1, lost again at turn 2
        [1, 1, 1],  # always found
        [50, 40, 9],  # found only at turn 2
    ]
)


def test_recall_per_turn_is_not_cumulative() -> None:
    # turn 0: [20<=10, 1<=10, 50<=10] = [F,T,F] -> 1/3
    # turn 1: [ 5, 1, 40] -> [T,T,F] -> 2/3
    # turn 2: [30, 1,  9] -> [F,T,T] -> 2/3
    assert recall_at_k_per_turn(RANKS, 10) == pytest.approx([1 / 3, 2 / 3, 2 / 3])


def test_hits_per_turn_is_cumulative_first_hitting() -> None:
    # best rank so far: d0 [20, 5, 5], d1 [1, 1, 1], d2 [50, 40, 9]
    # turn 0: [F,T,F] -> 1/3; turn 1: [T,T,F] -> 2/3; turn 2: [T,T,T] -> 1
    hits = hits_at_k_per_turn(RANKS, 10)
    assert hits == pytest.approx([1 / 3, 2 / 3, 1.0])
    # dialogue 0 was found at turn 1 and lost at turn 2: it counts for Hits@10 at turn 2 ...
    assert hits_at_k_per_turn(RANKS[:1], 10)[2] == 1.0
    # ... but not for Recall@10 at turn 2
    assert recall_at_k_per_turn(RANKS[:1], 10)[2] == 0.0


def test_bri_hand_computed() -> None:
    # d0 ranks [4, 2, 8] -> best so far [4, 2, 2]
    #   trapezoid over 2 intervals: ((ln4 + ln2)/2 + (ln2 + ln2)/2) / 2
    #   = ((2ln2 + ln2)/2 + ln2) / 2 = (1.5 ln2 + ln2) / 2 = 1.25 ln2 = 0.866434
    assert bri([[4, 2, 8]]) == pytest.approx(1.25 * math.log(2))
    # d1 ranks [1, 1, 1] -> ln1 = 0 everywhere -> 0; mean over dialogues = 1.25 ln2 / 2
    assert bri([[4, 2, 8], [1, 1, 1]]) == pytest.approx(0.625 * math.log(2))
    # same as the official PlugIR code on 0-based positions [3, 1, 7]: log(min+1) = ln4, ln2, ln2
    pos0 = np.minimum.accumulate(np.array([3, 1, 7]))
    official = sum((math.log(pos0[t] + 1) + math.log(pos0[t + 1] + 1)) / 2 for t in range(2)) / 2
    assert bri([[4, 2, 8]]) == pytest.approx(official)


def test_bri_single_turn_and_perfect() -> None:
    # T = 0: mean of ln(b_0) = (ln3 + ln1) / 2
    assert bri([[3], [1]]) == pytest.approx(math.log(3) / 2)
    assert bri(np.ones((5, 11), dtype=int)) == 0.0


# --------------------------------------------------------------------- properties

small_scores = hnp.arrays(
    dtype=np.float64,
    shape=hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=8),
    elements=st.sampled_from([0.0, 0.25, 0.5, 1.0]),  # few values -> many ties
)


@given(small_scores, st.data())
def test_vectorised_ranks_equal_scalar_ranks(scores: np.ndarray, data: st.DataObject) -> None:
    n_q, n_items = scores.shape
    targets = np.array(data.draw(st.lists(st.integers(0, n_items - 1), min_size=n_q, max_size=n_q)))
    expected = [rank_of_target(scores[q], int(targets[q])) for q in range(n_q)]
    assert ranks_from_scores(scores, targets).tolist() == expected


@given(hnp.arrays(np.float64, st.integers(1, 12), elements=st.sampled_from([-1.0, 0.0, 0.5, 2.0])))
def test_ranks_equal_stable_descending_sort_and_form_permutation(scores: np.ndarray) -> None:
    order = np.argsort(-scores, kind="stable")  # stable: ties keep ascending index
    position = np.empty_like(order)
    position[order] = np.arange(1, scores.size + 1)
    ranks = [rank_of_target(scores, t) for t in range(scores.size)]
    assert ranks == position.tolist()
    assert sorted(ranks) == list(range(1, scores.size + 1))


ranks_matrix = hnp.arrays(
    dtype=np.int64,
    shape=hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=12),
    elements=st.integers(1, 60),
)


@given(ranks_matrix, st.integers(1, 30))
def test_hits_monotone_and_dominates_recall(ranks: np.ndarray, k: int) -> None:
    hits = hits_at_k_per_turn(ranks, k)
    rec = recall_at_k_per_turn(ranks, k)
    assert hits.shape == rec.shape == (ranks.shape[1],)
    assert np.all(np.diff(hits) >= 0)
    assert np.all(hits >= rec)
    assert hits[0] == rec[0]  # nothing to accumulate at the first turn
    assert hits[-1] == recall_at_k(ranks.min(axis=1), k)


@given(ranks_matrix)
def test_bri_bounds(ranks: np.ndarray) -> None:
    value = bri(ranks)
    # best-so-far ranks lie in [1, max rank] -> ln in [0, ln max]; a mean stays inside
    assert 0.0 <= value <= math.log(ranks.max()) + 1e-12
    # zero iff every target is first from turn 0 on (then every best-so-far rank is 1)
    assert (value == 0.0) == bool(np.all(ranks[:, 0] == 1))


@given(
    hnp.arrays(np.float64, st.integers(1, 10), elements=st.sampled_from([0.0, 1.0, 2.0, 3.0])),
    st.integers(1, 12),
)
def test_ndcg_in_unit_interval(gains: np.ndarray, k: int) -> None:
    assert 0.0 <= ndcg_at_k(gains, k) <= 1.0 + 1e-12
