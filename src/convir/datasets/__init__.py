"""Dataset loaders returning the same typed records (GalleryItem, Dialogue) for every format.

Loaders read the files exactly as published; malformed input raises
:class:`convir.errors.ConvirError` naming the file and the line (JSONL/CSV) or record index
(JSON arrays).
"""

from __future__ import annotations

from convir.datasets._io import DataFormatError
from convir.datasets.chatir import load_chatir, load_search_space
from convir.datasets.coco5k import load_coco5k
from convir.datasets.flickr8k import load_flickr8k
from convir.datasets.jsonl import load_dialogues_jsonl, load_recqr_jsonl
from convir.datasets.records import Dialogue, GalleryItem
from convir.datasets.splits import SPLITS, SplitName, split_items

__all__ = [
    "SPLITS",
    "DataFormatError",
    "Dialogue",
    "GalleryItem",
    "SplitName",
    "load_chatir",
    "load_coco5k",
    "load_dialogues_jsonl",
    "load_flickr8k",
    "load_recqr_jsonl",
    "load_search_space",
    "split_items",
]
