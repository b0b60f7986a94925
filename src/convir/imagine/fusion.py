"""Pure fusion and merge rules of the imagination methods (numpy only, unit-tested by hand).

* DAR query fusion: ``F = a * E_text + b * sum_k E_img_k``, L2-normalised, with the weights
  scheduled by turn (a/b = 0.7/0.3 for the first two turns, 0.5/0.5 after).
* DAR score fusion (option): each score list min-max normalised over the candidates, then
  ``a * text + b * sum_k image_k`` (without the normalisation this would rank exactly like the
  query fusion, since cosine is linear in the query).
* DIR-TIR merge: the first ``dial_num`` items of the dialogue ranking, then ``image_num`` items
  of the image ranking that are not already shown, without duplicates.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from convir.errors import ConvirError

# (a, b) per turn; the last pair holds for every later turn. Turn 0 is the description alone.
DAR_SCHEDULE: tuple[tuple[float, float], ...] = ((0.7, 0.3), (0.7, 0.3), (0.5, 0.5))


def dar_weights(turn: int, schedule: Sequence[tuple[float, float]] = DAR_SCHEDULE) -> tuple[float, float]:
    """(a, b) for dialogue turn ``turn`` (0 = the initial description)."""
    if not schedule:
        raise ConvirError("the DAR schedule is empty")
    if turn < 0:
        raise ValueError(f"turn must be >= 0, got {turn}")
    a, b = schedule[min(turn, len(schedule) - 1)]
    return float(a), float(b)


def parse_schedule(text: str) -> tuple[tuple[float, float], ...]:
    """``"0.7/0.3,0.7/0.3,0.5/0.5"`` -> ((0.7, 0.3), (0.7, 0.3), (0.5, 0.5)): one a/b per turn,
    the last one repeated for later turns."""
    pairs = []
    for part in (p.strip() for p in text.split(",")):
        a, sep, b = part.partition("/")
        try:
            pair = (float(a), float(b))
        except ValueError:
            pair = None
        if not sep or pair is None or min(pair) < 0 or sum(pair) <= 0:
            raise ConvirError(
                f"cannot read DAR schedule {text!r}: give a/b weights per turn, e.g. 0.7/0.3,0.7/0.3,0.5/0.5"
            )
        pairs.append(pair)
    return tuple(pairs)


def format_schedule(schedule: Sequence[tuple[float, float]]) -> str:
    return ",".join(f"{a:g}/{b:g}" for a, b in schedule)


def _unit(x: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(x))
    return x / n if n > 1e-12 else x


def fuse_query(text_vec: np.ndarray, image_vecs: np.ndarray | None, a: float, b: float) -> np.ndarray:
    """DAR feature fusion: ``a * text_vec + b * sum(image_vecs)``, L2-normalised (float32)."""
    t = np.asarray(text_vec, dtype=np.float64).reshape(-1)
    fused = a * t
    if image_vecs is not None and len(image_vecs):
        imgs = np.asarray(image_vecs, dtype=np.float64).reshape(-1, t.shape[0])
        fused = fused + b * imgs.sum(axis=0)
    return _unit(fused).astype(np.float32)


def minmax(scores: np.ndarray) -> np.ndarray:
    """Scale to [0, 1]; a constant list becomes all zeros (it carries no ordering)."""
    s = np.asarray(scores, dtype=np.float64)
    if s.size == 0:
        return s
    lo, hi = float(s.min()), float(s.max())
    return (s - lo) / (hi - lo) if hi - lo > 1e-12 else np.zeros_like(s)


def fuse_scores(text_scores: np.ndarray, image_scores: np.ndarray, a: float, b: float) -> np.ndarray:
    """DAR score fusion over one candidate set: ``a * mm(text) + b * sum_k mm(image_k)``.

    ``text_scores``: (n,); ``image_scores``: (K, n) (or (n,) for one image); ``mm`` is min-max
    normalisation over the n candidates.
    """
    t = np.asarray(text_scores, dtype=np.float64).reshape(-1)
    imgs = np.asarray(image_scores, dtype=np.float64).reshape(-1, t.shape[0]) if len(image_scores) else None
    fused = a * minmax(t)
    if imgs is not None:
        fused = fused + b * sum(minmax(row) for row in imgs)
    return fused


def _unique(items: Iterable[int], seen: set[int]) -> Iterable[int]:
    for p in items:
        p = int(p)
        if p not in seen:
            seen.add(p)
            yield p


def merge_rankings(
    dialog_positions: Sequence[int], image_positions: Sequence[int], dial_num: int = 7, image_num: int = 3
) -> list[int]:
    """DIR-TIR top list: ``dial_num`` dialogue results, then ``image_num`` image results.

    Image results already in the dialogue part are passed over (the next ones are taken);
    when one list runs out the other fills the remaining places, so the result has
    ``dial_num + image_num`` distinct items whenever the two lists hold that many.
    """
    if dial_num < 0 or image_num < 0:
        raise ValueError("dial_num and image_num must be >= 0")
    seen: set[int] = set()
    dialog = _unique(dialog_positions, seen)
    out = [p for _, p in zip(range(dial_num), dialog, strict=False)]
    images = _unique(image_positions, seen)
    out += [p for _, p in zip(range(image_num), images, strict=False)]
    total = dial_num + image_num
    for rest in (dialog, images):  # one list ran out: the other fills up
        out += [p for _, p in zip(range(total - len(out)), rest, strict=False)]
    return out


def extend_ranking(head: Sequence[int], *rest: Sequence[int], depth: int) -> list[int]:
    """``head`` followed by the unseen items of each list in ``rest``, at most ``depth`` items."""
    seen: set[int] = set()
    out = list(_unique(head, seen))
    for lst in rest:
        out += [p for _, p in zip(range(depth - len(out)), _unique(lst, seen), strict=False)]
    return out[:depth]
