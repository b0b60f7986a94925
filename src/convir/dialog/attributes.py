"""Soft attribute evidence: P(item shows an attribute), from captions or from the encoder itself.

A photo library has no captions, yet a yes/no question ("Is there a dog in the photo?") and its
answer still say something about every candidate, if the gallery's own encoder can tell which
photos show a dog. Here:

* :func:`item_texts` is the one accessor for the text of items the conversation may read
  (captions today, generated captions when an index has them); a gallery wrapped by
  :class:`CaptionFreeGallery` (``eval dialog --gallery-captions hidden``) has none;
* :class:`EncoderAttributes` scores a phrase against item vectors: the cosine of the item
  vector and the phrase's text embedding (prompt "a photo of {}"), calibrated per phrase
  against the gallery's distribution: z = (s - mean) / std over a fixed sample of at most
  ``SAMPLE`` gallery items, then P = sigmoid(slope * (z - offset)). The statistics are
  computed once per gallery and phrase and cached with the gallery object, and a turn scores
  only the candidates in hand, so the per-turn cost does not grow with the gallery;
* :func:`soft_has` gives the (n_phrases, n_items) matrix in [0, 1] the questioners and the
  answer-aware posterior use: the caption match (0/1) for items with text, the encoder's
  probability for items without (so a captioned gallery behaves exactly as before; combining
  both on captioned items is not measured yet);
* :func:`vocabulary` is the shipped visual vocabulary (dialog/vocabulary/visual.txt, its
  sources named there), plus a user's file (the questioner's ``vocabulary`` argument, one
  phrase a line; no CLI flag yet).
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from convir.errors import ConvirError
from convir.text import content_stems

SAMPLE = 2000  # gallery items the per-phrase statistics are computed on (fixed, seeded)
TEMPLATE = "a photo of {}"
SLOPE = 1.5  # calibration, set by hand (not yet tuned on dev: docs/benchmarks.md, issue 29)
OFFSET = 1.5


def _read_phrases(text: str) -> list[str]:
    out: list[str] = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip().lower()
        if line and line not in out:
            out.append(line)
    return out


def vocabulary(extra: str | Path | None = None) -> list[str]:
    """The shipped visual vocabulary, plus the phrases of ``extra`` (a user's file)."""
    words = _read_phrases(resources.files("convir.dialog.vocabulary").joinpath("visual.txt").read_text())
    if extra:
        p = Path(extra)
        if not p.is_file():
            raise ConvirError(f"vocabulary file {p}: no such file")
        words += [w for w in _read_phrases(p.read_text(encoding="utf-8")) if w not in words]
    return words


class CaptionFreeGallery:
    """A gallery seen without its caption text (the photo-library setting, measurable on a
    captioned benchmark): item vectors stay, ``captions`` are empty, and ranking is dense only
    (BM25 and hybrid rank caption words)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def captions(self, positions: Sequence[int]) -> list[list[str]]:
        return [[] for _ in positions]

    def rank_text(self, text: str, k: int, mode: str = "dense", *args: Any, **kw: Any) -> Any:
        if mode != "dense":
            raise ConvirError(f"--gallery-captions hidden ranks by vectors; --mode {mode} reads captions")
        return self._inner.rank_text(text, k, mode, *args, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def item_texts(gallery: Any, positions: Sequence[int]) -> list[list[str]]:
    """The texts of the items the conversation may read (the single accessor: captions, or
    generated captions where an index stores them)."""
    return gallery.captions(positions)


class EncoderAttributes:
    """P(item shows phrase) from the gallery's encoder (see the module docstring)."""

    def __init__(self, gallery: Any, slope: float = SLOPE, offset: float = OFFSET) -> None:
        # weakly: the scorer is cached per gallery and must not keep it alive
        self.gallery, self.slope, self.offset = weakref.proxy(gallery), slope, offset
        vectors = gallery.ranker.vectors
        n = len(vectors)
        rng = np.random.default_rng(0)
        idx = np.sort(rng.choice(n, size=min(SAMPLE, n), replace=False)) if n else np.zeros(0, np.int64)
        self._sample = np.asarray(vectors[idx], dtype=np.float32)
        self._stats: dict[str, tuple[np.ndarray, float, float]] = {}

    def _prepare(self, phrases: list[str]) -> None:
        new = [p for p in phrases if p not in self._stats]
        if not new:
            return
        vecs = np.asarray(
            self.gallery.encoder.encode_text([TEMPLATE.format(p) for p in new]), dtype=np.float32
        )
        sims = self._sample @ vecs.T if len(self._sample) else np.zeros((1, len(new)), np.float32)
        mu, sd = sims.mean(axis=0), sims.std(axis=0)
        for i, p in enumerate(new):
            self._stats[p] = (vecs[i], float(mu[i]), max(float(sd[i]), 1e-6))

    def probs(self, phrases: list[str], positions: Sequence[int]) -> np.ndarray:
        """(n_phrases, n_items) P(item shows phrase), for the given candidates only."""
        if not phrases or not len(positions):
            return np.zeros((len(phrases), len(positions)))
        self._prepare(phrases)
        items = np.asarray(self.gallery.ranker.vectors[np.asarray(positions, dtype=np.int64)], np.float32)
        vecs = np.stack([self._stats[p][0] for p in phrases])
        mu = np.array([self._stats[p][1] for p in phrases])[:, None]
        sd = np.array([self._stats[p][2] for p in phrases])[:, None]
        z = (vecs @ items.T - mu) / sd
        return 1.0 / (1.0 + np.exp(-self.slope * (z - self.offset)))


_SCORERS: weakref.WeakKeyDictionary[Any, EncoderAttributes] = weakref.WeakKeyDictionary()


def encoder_attributes(gallery: Any) -> EncoderAttributes:
    """The gallery's scorer, built once (statistics cached with it)."""
    key = getattr(gallery, "_inner", gallery)
    scorer = _SCORERS.get(key)
    if scorer is None:
        scorer = _SCORERS[key] = EncoderAttributes(key)
    return scorer


def soft_has(
    gallery: Any, phrases: list[str], positions: Sequence[int], texts: list[list[str]] | None = None
) -> np.ndarray:
    """(n_phrases, n_items) in [0, 1]: 1/0 by caption match for items with text, the encoder's
    P(shows) for items without."""
    texts = item_texts(gallery, positions) if texts is None else texts
    stems = [content_stems(" ".join(t)) for t in texts]
    out = np.zeros((len(phrases), len(stems)))
    for r, ph in enumerate(phrases):
        fs = content_stems(ph)
        out[r] = [bool(fs) and fs <= s for s in stems]
    bare = [i for i, t in enumerate(texts) if not any(x.strip() for x in t)]
    if bare and phrases:
        pos = np.asarray(positions, dtype=np.int64)[bare]
        out[:, bare] = encoder_attributes(gallery).probs(phrases, pos)
    return out
