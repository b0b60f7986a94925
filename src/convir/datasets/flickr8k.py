"""Flickr8k captions as published on Kaggle: ``captions.txt`` CSV with header ``image,caption``.

One row per caption (5 per image in the original), images in an ``images/`` folder next to it.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from convir.datasets._io import DataFormatError, read_text
from convir.datasets.records import GalleryItem

__all__ = ["FLICKR8K_CAPTIONS_FILE", "FLICKR8K_IMAGES_DIR", "load_flickr8k"]

FLICKR8K_CAPTIONS_FILE = "captions.txt"
FLICKR8K_IMAGES_DIR = "images"
_HEADER = ["image", "caption"]


def load_flickr8k(path: str | Path) -> list[GalleryItem]:
    """Load Flickr8k-style captions, one GalleryItem per image in first-seen order.

    ``path`` is the folder holding ``captions.txt`` (or the CSV file itself). ``id`` is the
    image file name, ``image`` the path ``<folder>/images/<file name>`` (not checked for
    existence, so a captions-only copy still loads), ``captions`` every caption of that image
    in file order, verbatim, and ``meta["index"]`` the item position. Rows of one image need
    not be contiguous. Malformed CSV raises ConvirError naming the file and line.
    """
    csv_path = Path(path)
    if csv_path.is_dir():
        csv_path = csv_path / FLICKR8K_CAPTIONS_FILE
    text = read_text(csv_path)
    if not text.strip():
        raise DataFormatError(f"{csv_path}: file is empty")
    image_dir = csv_path.parent / FLICKR8K_IMAGES_DIR
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    by_image: dict[str, list[str]] = {}
    try:
        header = next(reader)
        if [h.strip() for h in header] != _HEADER:
            raise DataFormatError(
                f"{csv_path}, line 1: expected header 'image,caption', got {','.join(header)!r}"
            )
        for row in reader:
            line = reader.line_num
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) != 2:
                raise DataFormatError(
                    f"{csv_path}, line {line}: expected 2 fields (image,caption), got {len(row)}"
                )
            image, caption = row
            if not image.strip():
                raise DataFormatError(f"{csv_path}, line {line}: empty image name")
            if not caption.strip():
                raise DataFormatError(f"{csv_path}, line {line}: empty caption")
            by_image.setdefault(image, []).append(caption)
    except csv.Error as exc:
        raise DataFormatError(f"{csv_path}, line {reader.line_num}: malformed CSV: {exc}") from None
    if not by_image:
        raise DataFormatError(f"{csv_path}: no caption rows after the header")
    return [
        GalleryItem(id=name, image=str(image_dir / name), captions=tuple(caps), meta={"index": i})
        for i, (name, caps) in enumerate(by_image.items())
    ]
