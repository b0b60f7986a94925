"""How one gallery item is represented for search: its vector from captions, its BM25 document.

The one place these rules live, so an index directory (``convir index``) and the in-memory
evaluation galleries represent items identically and what is measured is what users run.

* Vector from captions: the normalised mean of the item's caption vectors. Captions are
  independent paraphrases of one image; their centroid sits closer to an unseen paraphrase
  (the query) than any single caption does, and one vector per item keeps ranking per image
  without a max-over-captions de-duplication step.
* BM25 document: all captions joined, so BM25 ranks items, not captions.
* Caption size: every caption is capped at :data:`MAX_CAPTION_CHARS` characters at ingest, so
  one pasted novel cannot stall encoding (``--long-text chunk`` splits long text into model
  windows) or swamp BM25's length normalisation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

MAX_CAPTION_CHARS = 4000
DOCUMENT_SEPARATOR = " . "


def item_document(captions: Sequence[str]) -> str:
    """The BM25 document of one item."""
    return DOCUMENT_SEPARATOR.join(captions)


def item_documents(caption_lists: Sequence[Sequence[str]]) -> list[str]:
    return [item_document(c) for c in caption_lists]


def item_vectors(encoder: Any, caption_lists: Sequence[Sequence[str]], batch_size: int = 128) -> np.ndarray:
    """(n_items, dim): per item the normalised mean of its caption vectors, encoded in one pass.

    An item without captions gets the zero vector (it matches nothing)."""
    from convir.encoders.base import l2_normalize

    flat = [c for caps in caption_lists for c in caps]
    dim = int(encoder.dim)
    if not flat:
        return np.zeros((len(caption_lists), dim), dtype=np.float32)
    vecs = np.asarray(encoder.encode_text(flat, batch_size=batch_size), dtype=np.float32)
    owner = np.repeat(np.arange(len(caption_lists)), [len(c) for c in caption_lists])
    out = np.zeros((len(caption_lists), vecs.shape[1]), dtype=np.float32)
    np.add.at(out, owner, vecs)
    return l2_normalize(out)


def cap_captions(captions: list[str], limit: int = MAX_CAPTION_CHARS) -> tuple[list[str], int]:
    """(captions cut to ``limit`` characters at a word boundary, how many were cut)."""
    out: list[str] = []
    cut = 0
    for c in captions:
        if len(c) > limit:
            head = c[:limit]
            space = head.rfind(" ")
            c = head[:space] if space > limit // 2 else head
            cut += 1
        out.append(c)
    return out, cut
