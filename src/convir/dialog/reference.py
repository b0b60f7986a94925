"""Start from a photo: the query is a fused image + text vector (QueryFormer's multimodal query,
ReCQR's multimodal setting).

A conversation may carry a *reference*: an item of the gallery (``--like ITEM_ID``: its stored
vector, so it works on any index, caption-encoder ones included, since the item vector lives in
the same space as the text queries) or a photo (``--image PHOTO``: the image tower's vector, so
only image-text encoders). Every turn the strategy's ranking is fused with it:

    score_i = (1 - w) * base_i + w * r . v_i

over the strategy's candidates plus the dense neighbours of the fused vector
normalise((1 - w) q + w r), where base_i is the strategy's score (the cosine q . v_i for the
dense strategies, where this is exactly ranking by the fused vector) and r the reference
vector; ``w`` is :attr:`~convir.dialog.session.SessionSpec.reference_weight` (default
:data:`REFERENCE_WEIGHT`) times :data:`REFERENCE_DECAY` per exchange that added words (both
tuned on dev: docs/conversation.md), so the photo leads at first and the words take over.
With no text at all the ranking is by the reference alone. The reference item itself is not
shown: the user already has it.

The reference is saved in the state as ``{"item": id}`` or ``{"image": name, "vector": [...]}``,
so sessions round-trip through JSON (chat session files, the server's rows).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from convir.dialog.state import DialogState
from convir.dialog.strategies import Ranking
from convir.errors import ConvirError

# weight of the reference vector in the fused query at turn 0, and its decay per exchange with
# words (turn t: weight * decay ** t), so the dialogue's words take over (tuned on coco5k-sim
# dev with the caption surrogate: docs/conversation.md)
REFERENCE_WEIGHT = 0.5
REFERENCE_DECAY = 0.6


def like_reference(gallery: Any, item_id: str) -> dict[str, Any]:
    """``--like ITEM_ID``: a reference to a gallery item (one-line error for an unknown id)."""
    if item_id not in gallery.position:
        raise ConvirError(f"--like: {item_id!r} is not in this index")
    return {"item": item_id}


def image_reference(gallery: Any, path: Path) -> dict[str, Any]:
    """``--image PHOTO``: the photo's vector from the encoder's image tower (the gallery's
    ``encode_image`` refuses encoders without one and unreadable images, in one line)."""
    encode = getattr(gallery, "encode_image", None)
    if encode is None:
        raise ConvirError("this gallery cannot encode a query image")
    vec = np.asarray(encode(Path(path)), dtype=np.float32).reshape(-1)
    return {"image": Path(path).name, "vector": [float(x) for x in vec]}


def reference_vector(state: DialogState, gallery: Any) -> np.ndarray | None:
    """The unit reference vector of ``state``, or None when it has none."""
    ref = state.reference
    if not ref:
        return None
    if ref.get("item") is not None:
        pos = gallery.position.get(ref["item"])
        if pos is None:
            raise ConvirError(f"the reference item {ref['item']!r} is no longer in this index")
        vec = np.asarray(gallery.ranker.vectors[pos], dtype=np.float32)
    else:
        vec = np.asarray(ref.get("vector") or [], dtype=np.float32)
        if vec.shape != (gallery.ranker.vectors.shape[1],):
            raise ConvirError("the reference image's vector does not match this index's encoder")
    norm = float(np.linalg.norm(vec))
    return vec / norm if norm > 0 else vec


def fuse(ranking: Ranking, gallery: Any, ref: np.ndarray, weight: float, depth: int, text: bool) -> Ranking:
    """The strategy's ranking fused with the reference (see the module docstring); ``text``:
    whether the dialogue has any words (without, the reference alone ranks)."""
    w = 1.0 if not text else float(weight)
    vectors = gallery.ranker.vectors
    q = gallery.encoder.encode_text([ranking.query.split(" | ")[0]])[0] if text else np.zeros_like(ref)
    fused = (1 - w) * np.asarray(q, dtype=np.float32) + w * ref
    norm = float(np.linalg.norm(fused))
    _, near = gallery.ranker.ann.search(fused / norm if norm > 0 else fused, depth + 1)
    base = {int(p): float(s) for p, s in zip(ranking.positions, ranking.scores, strict=False)} if text else {}
    cand = np.unique(np.concatenate([np.asarray(ranking.positions, dtype=np.int64), near[0][near[0] >= 0]]))
    v = np.asarray(vectors[cand], dtype=np.float32)
    base_s = np.array([base.get(int(p), float(v[i] @ q)) for i, p in enumerate(cand)], dtype=np.float32)
    scores = (1 - w) * base_s + w * (v @ ref)
    order = np.lexsort((cand, -scores))
    return Ranking(
        cand[order], scores[order].astype(np.float32), ranking.query, {**ranking.info, "reference": w}
    )


class ReferenceStrategy:
    """Any strategy whose ranking is fused with the conversation's reference, when it has one."""

    def __init__(self, inner: Any, weight: float = REFERENCE_WEIGHT) -> None:
        self.inner, self.weight = inner, weight
        self.name = inner.name

    def query(self, state: DialogState) -> str:
        return self.inner.query(state)

    def rank(self, state: DialogState, gallery: Any, k: int) -> Ranking:
        ref = reference_vector(state, gallery)
        if ref is None:
            return self.inner.rank(state, gallery, k)
        text = any(t.strip() for t in state.turns)
        if text:
            ranking = self.inner.rank(state, gallery, k)
        else:  # nothing said yet: no query to run (an LLM would rewrite an empty dialogue)
            ranking = Ranking(np.zeros(0, np.int64), np.zeros(0, np.float32), "")
        weight = self.weight * REFERENCE_DECAY ** len(state.said)
        ranking = fuse(ranking, gallery, ref, weight, k, text)
        item = (state.reference or {}).get("item")
        if item is not None:  # the user has this one: show the others
            keep = np.asarray(ranking.positions) != gallery.position[item]
            ranking = Ranking(ranking.positions[keep], ranking.scores[keep], ranking.query, ranking.info)
        return Ranking(ranking.positions[:k], ranking.scores[:k], ranking.query, ranking.info)

    def __getattr__(self, name: str) -> Any:  # e.g. the rerank strategy's reranker, for reports
        return getattr(self.inner, name)
