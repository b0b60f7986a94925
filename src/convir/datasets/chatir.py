"""ChatIR dialogues (Levy et al., NeurIPS 2023) as published: a JSON array of
``{"img": "unlabeled2017/....jpg", "dialog": [caption, "q? a", ...]}`` plus an optional
search-space file (JSON array of gallery image paths, 50k for the VisDial protocol).
"""

from __future__ import annotations

from pathlib import Path

from convir.datasets._io import DataFormatError, load_json, nonempty_str, str_list
from convir.datasets.records import Dialogue

__all__ = ["load_chatir", "load_search_space"]


def load_search_space(path: str | Path) -> list[str]:
    """Load a gallery list (JSON array of unique, non-empty image path strings)."""
    path = Path(path)
    paths = load_json(path)
    seen: dict[str, int] = {}
    for i, p in enumerate(paths):
        if not isinstance(p, str) or not p.strip():
            raise DataFormatError(f"{path}, record {i}: expected a non-empty image path string, got {p!r}")
        if p in seen:
            raise DataFormatError(
                f"{path}, record {i}: duplicate image path {p!r} (first at record {seen[p]})"
            )
        seen[p] = i
    return paths


def load_chatir(
    dialogues_file: str | Path, search_space_file: str | Path | None = None
) -> tuple[list[Dialogue], list[str] | None]:
    """Load ChatIR-format dialogues and, optionally, their search space.

    Each record becomes ``Dialogue(id=str(index), target=record["img"],
    turns=tuple(record["dialog"]), meta={"index": index})``; turns are kept verbatim. The id
    is the record index because the published dialogue sets (human, ChatGPT, FLAN, ...) share
    targets and order, so equal ids mean the same search across sets. When a search space is
    given every target must be in it (else the target could never be retrieved and every
    metric would silently be wrong). Returns ``(dialogues, search_space_or_None)``.
    """
    dpath = Path(dialogues_file)
    records = load_json(dpath)
    dialogues: list[Dialogue] = []
    for i, rec in enumerate(records):
        where = f"{dpath}, record {i}"
        if not isinstance(rec, dict):
            raise DataFormatError(
                f"{where}: expected an object with 'img' and 'dialog', got {type(rec).__name__}"
            )
        target = nonempty_str(rec, "img", where)
        turns = str_list(rec, "dialog", where)
        dialogues.append(Dialogue(id=str(i), target=target, turns=turns, meta={"index": i}))
    if search_space_file is None:
        return dialogues, None
    space = load_search_space(search_space_file)
    members = set(space)
    for d in dialogues:
        if d.target not in members:
            raise DataFormatError(
                f"{dpath}, record {d.meta['index']}: target {d.target!r} is not in the search space "
                f"{Path(search_space_file)}"
            )
    return dialogues, space
