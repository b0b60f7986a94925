"""COCO 5k (val2017) gallery as published with PlugIR/ChatIR: two index-aligned JSON files.

``Search_Space_coco.json`` is a list of image paths (``"val2017/000000000139.jpg"``);
``coco_captions.json`` is a list of ``{"caption": [5-7 strings]}`` aligned by index.
"""

from __future__ import annotations

from pathlib import Path

from convir.datasets._io import DataFormatError, load_json, str_list
from convir.datasets.records import GalleryItem

__all__ = ["COCO5K_CAPTIONS_FILE", "COCO5K_SEARCH_SPACE_FILE", "load_coco5k"]

COCO5K_SEARCH_SPACE_FILE = "Search_Space_coco.json"
COCO5K_CAPTIONS_FILE = "coco_captions.json"


def load_coco5k(path: str | Path, image_root: str | Path | None = None) -> list[GalleryItem]:
    """Load the COCO 5k gallery in published order.

    ``path`` is the folder holding both files (or either file, whose folder is then used).
    Each item's ``id`` is the path from the search-space file and ``meta["index"]`` its
    position (which defines the dev/test split). ``image`` is ``image_root / id`` when an
    image root is given, else None: the published files carry no images.
    Raises ConvirError if the files are missing, malformed, differ in length or repeat a path.
    """
    folder = Path(path)
    if folder.is_file():
        folder = folder.parent
    ss_path = folder / COCO5K_SEARCH_SPACE_FILE
    cap_path = folder / COCO5K_CAPTIONS_FILE
    paths = load_json(ss_path)
    captions = load_json(cap_path)
    if len(paths) != len(captions):
        raise DataFormatError(
            f"{ss_path} has {len(paths)} entries but {cap_path} has {len(captions)}; "
            "the two files must be aligned by index"
        )
    seen: dict[str, int] = {}
    items: list[GalleryItem] = []
    for i, (img, rec) in enumerate(zip(paths, captions, strict=True)):
        if not isinstance(img, str) or not img.strip():
            raise DataFormatError(
                f"{ss_path}, record {i}: expected a non-empty image path string, got {img!r}"
            )
        if img in seen:
            raise DataFormatError(
                f"{ss_path}, record {i}: duplicate image path {img!r} (first at record {seen[img]})"
            )
        seen[img] = i
        where = f"{cap_path}, record {i}"
        if not isinstance(rec, dict):
            raise DataFormatError(
                f'{where}: expected an object {{"caption": [...]}}, got {type(rec).__name__}'
            )
        caps = str_list(rec, "caption", where)
        image = str(Path(image_root) / img) if image_root is not None else None
        items.append(GalleryItem(id=img, image=image, captions=caps, meta={"index": i}))
    return items
