"""Searching an index directory: ``open_index(path).search(query, k, mode=...)``.

One API for dense (encoder + vector index), BM25 (captions) and hybrid ranking, with text,
a query vector, or an image as the query. Results carry ids, scores and stored metadata.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from convir.errors import ConvirError, IndexMismatchError
from convir.gallery.store import Store
from convir.index import DEFAULT_ALPHA, DEFAULT_FUSION

MMAP_ABOVE_BYTES = 2 * 1024**3


@dataclass
class Hit:
    rank: int
    id: str
    score: float
    path: str | None = None
    captions: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class SearchIndex:
    """A published build of an index directory, opened read-only for searching."""

    def __init__(self, root: Path, encoder: str | None = None, long_text: str = "chunk") -> None:
        from convir.index.bm25 import BM25Index
        from convir.index.ranker import Ranker
        from convir.index.vector import AnnIndex

        self.root = Path(root)
        self.store = Store(self.root)
        build = self.store.current_build()
        if build is None:
            raise ConvirError(
                f"index {self.root} has no finished build (an interrupted run?): "
                "re-run the same `convir index` command to resume and finish it"
            )
        self.build_dir = build
        self.info = json.loads((build / "build.json").read_text(encoding="utf-8"))
        self.encoder_spec: str = self.info["encoder"]
        if encoder is not None and encoder != self.encoder_spec:
            raise IndexMismatchError(
                f"index {self.root} was built with encoder {self.encoder_spec!r}, not {encoder!r}: "
                "queries must use the same encoder (omit --encoder, or index again into a new folder)"
            )
        self.long_text = long_text
        vec_file = build / "vectors.npy"
        # in RAM when it fits comfortably (a memory map makes every exact search ~6x slower);
        # memory-mapped beyond that so huge galleries still open
        big = vec_file.stat().st_size > MMAP_ABOVE_BYTES
        self.vectors = np.load(vec_file, mmap_mode="r" if big else None)
        self.ids: list[str] = json.loads((build / "ids.json").read_text(encoding="utf-8"))
        self.position = {item_id: i for i, item_id in enumerate(self.ids)}
        self.ann_kind: str = self.info["ann"]
        ann_file = build / "ann.faiss"
        ann = AnnIndex.load(self.vectors, self.ann_kind, ann_file if ann_file.exists() else None)
        self.ranker = Ranker(ann, lambda: BM25Index.load(build / "bm25"))
        self._encoder: Any = None

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def encoder(self) -> Any:
        if self._encoder is None:
            from convir.encoders import load_encoder

            self._encoder = load_encoder(self.encoder_spec, long_text=self.long_text)  # type: ignore[arg-type]
        return self._encoder

    def captions(self, positions: list[int] | np.ndarray) -> list[list[str]]:
        """Captions of items by position (the conversation loop shows and reasons over them)."""
        ids = [self.ids[int(p)] for p in positions]
        found = self.store.items(ids)
        return [found[i].captions if i in found else [] for i in ids]

    def encode_text(self, texts: list[str]) -> np.ndarray:
        return self.encoder.encode_text(texts)

    def rank_text(
        self, text: str, k: int, mode: str = "dense", **options: Any
    ) -> tuple[np.ndarray, np.ndarray]:
        """(positions, scores) for a text query: the gallery protocol of the conversation loop."""
        from convir.dialog.gallery import rank_text

        return rank_text(self, text, k, mode, **options)

    def encode_image(self, path: Path) -> np.ndarray:
        from convir.encoders import ImageReadError, has_image_tower

        if not has_image_tower(self.encoder):
            raise ConvirError(
                f"encoder {self.encoder_spec} has no image tower: image queries need an index built "
                "with an image-text encoder such as open_clip:ViT-B-32/openai"
            )
        try:
            return self.encoder.encode_images([Path(path)])[0]
        except ImageReadError as exc:
            raise ConvirError(f"cannot use {path} as a query image: {exc.reason}") from exc

    def _query_vector(self, query: str | np.ndarray | None, image: Path | None) -> np.ndarray:
        if image is not None:
            return self.encode_image(image)
        if isinstance(query, str):
            return self.encode_text([query])[0]
        vec = np.asarray(query, dtype=np.float32).reshape(-1)
        if vec.shape[0] != self.dim:
            raise ConvirError(f"query vector has dimension {vec.shape[0]}, the index has {self.dim}")
        return vec

    def rank(
        self,
        query: str | np.ndarray | None = None,
        k: int = 10,
        mode: str = "dense",
        image: Path | None = None,
        fusion: str = DEFAULT_FUSION,
        alpha: float = DEFAULT_ALPHA,
        pool: int = 100,
        query_text: str | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(positions, scores) of the top ``k``; the metadata-free core used by eval loops.

        ``query_text`` gives the BM25 side of a vector query in hybrid mode.
        """
        if isinstance(query, str) and not query.strip():
            raise ConvirError("the query is empty")
        text = query if isinstance(query, str) else query_text
        qvec = None if mode == "bm25" else self._query_vector(query, image)
        return self.ranker.rank(qvec, text, k, mode, fusion, alpha, pool)

    def search(
        self,
        query: str | np.ndarray | None = None,
        k: int = 10,
        mode: str = "dense",
        image: Path | None = None,
        fusion: str = DEFAULT_FUSION,
        alpha: float = DEFAULT_ALPHA,
    ) -> list[Hit]:
        """Top-``k`` hits for text, a vector, or ``image``, with stored metadata."""
        if query is None and image is None:
            raise ConvirError("give a text query or an image")
        pos, scores = self.rank(query, k, mode, image, fusion, alpha)
        ids = [self.ids[int(p)] for p in pos]
        meta = self.store.items(ids)
        hits = []
        for r, (item_id, score) in enumerate(zip(ids, scores, strict=True), 1):
            m = meta.get(item_id)
            hits.append(
                Hit(
                    r,
                    item_id,
                    float(score),
                    m.path if m else None,
                    m.captions if m else [],
                    m.meta if m else {},
                )
            )
        return hits

    def close(self) -> None:
        self.store.close()


def open_index(path: str | Path, encoder: str | None = None, long_text: str = "chunk") -> SearchIndex:
    """Open an index directory built by ``convir index`` for searching."""
    return SearchIndex(Path(path).expanduser(), encoder=encoder, long_text=long_text)
