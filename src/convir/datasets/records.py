"""Typed records shared by every loader, so evaluation code never sees a dataset's raw format."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Dialogue", "GalleryItem"]


@dataclass(frozen=True)
class GalleryItem:
    """One searchable image with its reference captions.

    ``id`` is the dataset's own image key (e.g. ``"val2017/000000000139.jpg"`` for COCO,
    the file name for Flickr8k); ``image`` is a local path to the image file when one is
    known, else None. ``captions`` are kept exactly as published (no stripping).
    ``meta`` holds provenance such as ``{"index": i}`` (position in the published file, which
    defines the dev/test split); it is excluded from hashing because dicts are unhashable.
    """

    id: str
    image: str | None
    captions: tuple[str, ...]
    meta: dict[str, Any] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class Dialogue:
    """One retrieval dialogue ending in a single target image.

    ``turns[0]`` is the user's initial description; ``turns[i]`` (i >= 1) is the i-th
    ``"question? answer"`` exchange, as one string. ``target`` is the gallery id of the image
    being searched for. For query-rewriting data (ReCQR-style) ``final_query`` is the last,
    possibly elliptical user query (also the last turn) and ``rewritten`` its gold
    self-contained rewrite; both are None for plain dialogues.
    """

    id: str
    target: str
    turns: tuple[str, ...]
    meta: dict[str, Any] = field(default_factory=dict, hash=False)
    rewritten: str | None = None
    final_query: str | None = None
