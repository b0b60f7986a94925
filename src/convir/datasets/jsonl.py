"""JSON-Lines dialogue formats: ReCQR-style query-rewriting records and a generic format.

Generic format (for users' own dialogues), one JSON object per line::

    {"id": "d1", "target": "img_042.jpg", "turns": ["a red car", "is it parked? yes"]}

``id`` is optional (str or int; defaults to the record's 0-based position) and must be unique;
``target`` is the gallery id of the searched image; ``turns[0]`` is the initial description
and later turns are ``"question? answer"`` strings. Any other keys are kept in ``meta``.
Blank lines are ignored.

ReCQR-style format::

    {"id": "r1", "history": ["...", "..."], "query": "what about the blue one?",
     "rewrite": "a blue car parked on a street", "target": "img_007.jpg"}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from convir.datasets._io import DataFormatError, iter_jsonl, nonempty_str, require, str_list
from convir.datasets.records import Dialogue

__all__ = ["load_dialogues_jsonl", "load_recqr_jsonl"]


def _record_id(rec: dict[str, Any], index: int, where: str) -> str:
    if "id" not in rec:
        return str(index)
    value = require(rec, "id", (str, int), where)
    value = str(value)
    if not value.strip():
        raise DataFormatError(f"{where}: key 'id' is an empty string")
    return value


def _check_unique(ids: dict[str, int], rid: str, path: Path, lineno: int) -> None:
    if rid in ids:
        raise DataFormatError(f"{path}, line {lineno}: duplicate id {rid!r} (first on line {ids[rid]})")
    ids[rid] = lineno


def load_dialogues_jsonl(path: str | Path) -> list[Dialogue]:
    """Load the generic dialogue JSONL described in this module's docstring, in file order."""
    path = Path(path)
    out: list[Dialogue] = []
    ids: dict[str, int] = {}
    for lineno, rec in iter_jsonl(path):
        where = f"{path}, line {lineno}"
        rid = _record_id(rec, len(out), where)
        _check_unique(ids, rid, path, lineno)
        target = nonempty_str(rec, "target", where)
        turns = str_list(rec, "turns", where)
        meta = {k: v for k, v in rec.items() if k not in {"id", "target", "turns"}}
        out.append(Dialogue(id=rid, target=target, turns=turns, meta=meta))
    return out


def load_recqr_jsonl(path: str | Path) -> list[Dialogue]:
    """Load ReCQR-style records: dialogue history, elliptical final query and its gold rewrite.

    Returns ``Dialogue(turns=history + [query], final_query=query, rewritten=rewrite,
    meta={"rewrite": rewrite, **other keys})``. ``history`` may be empty (a first-turn query).
    """
    path = Path(path)
    out: list[Dialogue] = []
    ids: dict[str, int] = {}
    for lineno, rec in iter_jsonl(path):
        where = f"{path}, line {lineno}"
        rid = _record_id(rec, len(out), where)
        _check_unique(ids, rid, path, lineno)
        history = str_list(rec, "history", where, allow_empty=True)
        query = nonempty_str(rec, "query", where)
        rewrite = nonempty_str(rec, "rewrite", where)
        target = nonempty_str(rec, "target", where)
        extra = {k: v for k, v in rec.items() if k not in {"id", "history", "query", "rewrite", "target"}}
        out.append(
            Dialogue(
                id=rid,
                target=target,
                turns=(*history, query),
                meta={"rewrite": rewrite, **extra},
                rewritten=rewrite,
                final_query=query,
            )
        )
    return out
