"""Searching an index directory: ``open_index(path).search(query, k, mode=...)``.

One API for dense (encoder + vector index), BM25 (captions) and hybrid ranking, with text,
a query vector, or an image as the query. Results carry ids, scores and stored metadata.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from convir.errors import ConvirError, IndexMismatchError
from convir.gallery.layer import TextRanking
from convir.gallery.store import Store, index_command
from convir.index import DEFAULT_ALPHA, DEFAULT_FUSION
from convir.index.build import MMAP_ABOVE_BYTES, Build, BuildError

__all__ = ["MMAP_ABOVE_BYTES", "Hit", "SearchIndex", "open_index"]


@dataclass
class Hit:
    rank: int
    id: str
    score: float
    path: str | None = None
    captions: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    # a caption made by ``convir index --captioner``, kept apart from the user's ``captions``:
    # {"caption": text, "captioner": spec that made it}, or None
    generated: dict[str, str] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class SearchIndex(TextRanking):
    """A published build of an index directory, opened read-only for searching.

    The build is pinned while the index is open, so a ``convir index`` run publishing a
    newer one does not delete the files this reader serves (see :mod:`convir.index.build`)."""

    def __init__(self, root: Path, encoder: str | None = None, long_text: str = "chunk") -> None:
        from convir.encoders.base import LONG_TEXT_POLICIES
        from convir.index.ranker import Ranker

        if long_text not in LONG_TEXT_POLICIES:
            choices = ", ".join(LONG_TEXT_POLICIES)
            raise ConvirError(f"unknown long-text policy {long_text!r}; choose one of: {choices}")
        self.root = Path(root)
        self.store = Store(self.root)
        try:
            self._build = self._open_build()
        except BaseException:
            self.store.close()
            raise
        build = self._build.path
        self.build_dir = build
        self.info = self._build.info
        self.encoder_spec: str = self.info["encoder"]
        from convir.encoders.onnx import same_space

        if encoder is not None and not same_space(self.encoder_spec, encoder):
            self.close()
            raise IndexMismatchError(
                f"index {self.root} was built with encoder {self.encoder_spec!r}, not {encoder!r}: "
                "queries must use the same encoder (omit --encoder, or index again into a new folder)"
            )
        self.long_text = long_text
        self.ids: list[str] = self._build.ids
        if self._build.store_kind != "faiss":  # the vectors are searched in a vector store
            from convir.store import open_build_ann

            try:
                self._build.ann, self._build.vectors = open_build_ann(self._build, self.store)
            except BaseException:
                self.close()
                raise
        self.vectors = self._build.vectors
        self.position = {item_id: i for i, item_id in enumerate(self.ids)}
        self.ann_kind: str = self.info["ann"]
        self.has_bm25 = self._build.has_bm25
        self.ranker = Ranker(self._build.ann, self._load_bm25, self._filter_positions)
        saved = self.store.get("max_pixels")
        self.max_pixels: int | None = int(saved) if saved and saved.isdigit() else None
        self._encoder: Any = None
        # queries may run on another backend of the same function (torch vs ONNX fp32)
        self.query_encoder_spec: str = encoder or self.encoder_spec

    def _open_build(self) -> Build:
        """The published build, pinned; a clear error naming the repair when it is damaged."""
        for _attempt in range(3):
            gen = self.store.published
            if gen is None:
                raise ConvirError(
                    f"index {self.root} has no finished build (an interrupted run?): "
                    f"re-run `{index_command(self.root, self.store.get('source'))}` to resume and finish it"
                )
            try:
                return Build(self.store.builds_dir / gen)
            except BuildError as exc:
                if self.store.published != gen:
                    continue  # a writer published a newer build meanwhile: open that one
                raise BuildError(self._damaged(str(exc))) from exc
        raise ConvirError(f"index {self.root} keeps changing while being opened; try again")

    def _damaged(self, problem: str) -> str:
        return (
            f"index {self.root}: the published build is damaged ({problem}). Repair it with "
            f"`{index_command(self.root, self.store.get('source'), rebuild=True)}` (rebuilds the "
            f"search files from convir.sqlite, no re-encoding); `convir check {self.root}` lists all problems"
        )

    def _load_bm25(self) -> Any:
        try:
            return self._build.load_bm25()
        except BuildError as exc:
            raise BuildError(self._damaged(str(exc))) from exc

    def _filter_positions(self, where: Any) -> np.ndarray:
        """Positions of the build's items whose SQLite metadata passes ``where`` (the faiss
        store's filter, and the BM25 side of every store; same grammar as Milvus')."""
        clause, params = where.sql()
        found = self.store.ids_where(clause, params)
        return np.asarray(sorted(self.position[i] for i in found if i in self.position), dtype=np.int64)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def encoder(self) -> Any:
        if self._encoder is None:
            from convir.encoders import load_encoder

            self._encoder = load_encoder(self.query_encoder_spec, long_text=self.long_text)  # type: ignore[arg-type]
        return self._encoder

    def captions(self, positions: list[int] | np.ndarray) -> list[list[str]]:
        """Captions of items by position (the conversation loop shows and reasons over them): the
        user's, then the generated one (``convir index --captioner``), so a photo library without
        captions still gives the questioners and the answer reading text to work with."""
        ids = [self.ids[int(p)] for p in positions]
        found = self.store.items(ids)
        generated = self.store.generated(ids)
        return [
            (found[i].captions if i in found else []) + ([generated[i][0]] if i in generated else [])
            for i in ids
        ]

    def encode_text(self, texts: list[str]) -> np.ndarray:
        return self.encoder.encode_text(texts)

    def encode_image(self, path: Path) -> np.ndarray:
        from convir.encoders import ImageReadError, has_image_tower
        from convir.encoders.base import encode_images_skipping

        if not has_image_tower(self.encoder):
            raise ConvirError(
                f"encoder {self.encoder_spec} has no image tower: image queries need an index built "
                "with an image-text encoder such as open_clip:ViT-B-32/openai"
            )
        try:
            vecs, _ok, bad = encode_images_skipping(self.encoder, [Path(path)], 1, self.max_pixels)
        except ImageReadError as exc:
            raise ConvirError(f"cannot use {path} as a query image: {exc.reason}") from exc
        if bad:
            raise ConvirError(f"cannot use {path} as a query image: {bad[0][1]}")
        return vecs[0]

    def _query_vector(self, query: str | np.ndarray | None, image: Path | None) -> np.ndarray:
        if image is not None and isinstance(query, str) and query.strip():
            # image + text ("like this, but at night"): the fused vector the conversation uses
            from convir.dialog.reference import REFERENCE_WEIGHT
            from convir.encoders.base import l2_normalize

            img = self.encode_image(image)
            txt = self.encode_text([query])[0]
            return l2_normalize((1 - REFERENCE_WEIGHT) * txt + REFERENCE_WEIGHT * img)
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
        where: str | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(positions, scores) of the top ``k``; the metadata-free core used by eval loops.

        Text goes through :meth:`rank_text`; ``query_text`` gives the BM25 side of a vector or
        image query in hybrid mode.
        """
        from convir.index.ranker import check_mode

        if where is not None:
            from convir.store.filters import parse_where

            where = parse_where(where)  # type: ignore[assignment]  # before anything is encoded
        if isinstance(query, str) and image is None:
            return self.rank_text(query, k, mode, fusion, alpha, pool, where=where)
        check_mode(mode, fusion)
        text = query if isinstance(query, str) else query_text
        qvec = None if mode == "bm25" else self._query_vector(query, image)
        return self.ranker.rank(qvec, text, k, mode, fusion, alpha, pool, where=where)

    def search(
        self,
        query: str | np.ndarray | None = None,
        k: int = 10,
        mode: str = "dense",
        image: Path | None = None,
        fusion: str = DEFAULT_FUSION,
        alpha: float = DEFAULT_ALPHA,
        where: str | None = None,
    ) -> list[Hit]:
        """Top-``k`` hits for text, a vector, or ``image``, with stored metadata; ``where``
        keeps items whose metadata passes a filter (:mod:`convir.store.filters`)."""
        if query is None and image is None:
            raise ConvirError("give a text query or an image")
        pos, scores = self.rank(query, k, mode, image, fusion, alpha, where=where)
        ids = [self.ids[int(p)] for p in pos]
        meta = self.store.items(ids)
        generated = self.store.generated(ids)
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
                    {"caption": g[0], "captioner": g[1]} if (g := generated.get(item_id)) else None,
                )
            )
        return hits

    def close(self) -> None:
        build = getattr(self, "_build", None)
        if build is not None:
            milvus = getattr(build.ann, "milvus", None)
            if milvus is not None:
                milvus.close()  # Milvus Lite: lets other processes open the database
            build.close()
        self.store.close()


def open_index(path: str | Path, encoder: str | None = None, long_text: str = "chunk") -> SearchIndex:
    """Open an index directory built by ``convir index`` for searching."""
    return SearchIndex(Path(path).expanduser(), encoder=encoder, long_text=long_text)
