"""The ``jsonl-sim`` format: simulate conversations on your own collection.

One JSON object per line, one line per gallery item::

    {"id": "img_001", "text": ["a brown dog on a beach"], "image": "photos/001.jpg",
     "description": "a dog", "facts": ["the dog is brown", "there are waves behind it"]}

* ``id`` (string or int, unique): the item.
* ``text`` (list of strings, or one string): what the gallery knows of the item (captions,
  alt text); optional when ``image`` is given and the encoder has an image tower.
* ``image`` (path, relative to the file): the item's picture (optional).
* ``description`` (string): makes the item a *target*: the simulated user's first message.
* ``facts`` (list of strings): what the simulated user knows about a target beyond the
  description (held out from the gallery): the ``captions`` answerer answers only from these.

Items without ``description`` are distractors. Malformed records are errors naming the file
and line. Blank lines are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from convir.datasets._io import DataFormatError, iter_jsonl, require

__all__ = ["SimRecord", "load_sim_jsonl"]


@dataclass(frozen=True)
class SimRecord:
    id: str
    text: tuple[str, ...]
    image: str | None
    description: str | None
    facts: tuple[str, ...]
    where: str  # "file, line N" for messages


def _strings(rec: dict, key: str, where: str) -> tuple[str, ...]:
    if key not in rec or rec[key] is None:
        return ()
    value = rec[key]
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise DataFormatError(f"{where}: key {key!r} must be a string or a list of strings")
    for i, v in enumerate(value):
        if not isinstance(v, str):
            raise DataFormatError(f"{where}: {key}[{i}] must be str, got {type(v).__name__}")
    return tuple(" ".join(v.split()) for v in value if v.strip())


def load_sim_jsonl(path: str | Path) -> list[SimRecord]:
    """The records of a ``jsonl-sim`` file, in file order (see the module docstring)."""
    path = Path(path)
    if path.is_dir():
        raise DataFormatError(f"{path}: jsonl-sim needs a .jsonl file, not a folder")
    out: list[SimRecord] = []
    seen: dict[str, int] = {}
    for lineno, rec in iter_jsonl(path):
        where = f"{path}, line {lineno}"
        rid = str(require(rec, "id", (str, int), where)).strip()
        if not rid:
            raise DataFormatError(f"{where}: key 'id' is empty")
        if rid in seen:
            raise DataFormatError(f"{where}: duplicate id {rid!r} (first on line {seen[rid]})")
        seen[rid] = lineno
        unknown = set(rec) - {"id", "text", "image", "description", "facts"}
        if unknown:
            raise DataFormatError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
        image = rec.get("image")
        if image is not None and (not isinstance(image, str) or not image.strip()):
            raise DataFormatError(f"{where}: key 'image' must be a file path (string)")
        img = None
        if image:
            p = Path(image).expanduser()
            img = str(p if p.is_absolute() else (path.parent / p).resolve())
            if not Path(img).is_file():
                raise DataFormatError(f"{where}: image file {img} not found")
        desc = rec.get("description")
        if desc is not None and (not isinstance(desc, str) or not desc.strip()):
            raise DataFormatError(f"{where}: key 'description' must be a non-empty string")
        text = _strings(rec, "text", where)
        if not text and img is None:
            raise DataFormatError(f'{where}: an item needs "text" or an "image"')
        out.append(
            SimRecord(
                rid, text, img, " ".join(desc.split()) if desc else None, _strings(rec, "facts", where), where
            )
        )
    return out
