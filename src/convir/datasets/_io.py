"""File reading and validation helpers that turn every malformed input into a ConvirError.

Messages always start with the file path and then ``line N`` (JSONL/CSV, 1-based) or
``record N`` (JSON arrays, 0-based index), so a user can jump straight to the bad spot.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from convir.errors import ConvirError

__all__ = ["DataFormatError", "iter_jsonl", "load_json", "nonempty_str", "read_text", "require", "str_list"]


class DataFormatError(ConvirError):
    """A data file that is missing, unreadable or not in the documented format."""


def read_text(path: Path) -> str:
    """Read a UTF-8 file (a BOM is tolerated); missing/unreadable files become DataFormatError."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataFormatError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise DataFormatError(f"{path}: is a directory, expected a file") from None
    except UnicodeDecodeError as exc:
        raise DataFormatError(f"{path}: not valid UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise DataFormatError(f"{path}: cannot read file ({exc.strerror or exc})") from None


def load_json(path: Path) -> list[Any]:
    """Parse a file holding one non-empty top-level JSON array."""
    text = read_text(path)
    if not text.strip():
        raise DataFormatError(f"{path}: file is empty")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataFormatError(
            f"{path}, line {exc.lineno} column {exc.colno}: invalid JSON: {exc.msg}"
        ) from None
    if not isinstance(data, list):
        raise DataFormatError(f"{path}: expected a JSON array at top level, got {type(data).__name__}")
    if not data:
        raise DataFormatError(f"{path}: the JSON array is empty (no records)")
    return data


def iter_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, object)`` for each non-blank line; blank lines are skipped."""
    text = read_text(path)
    n_records = 0
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataFormatError(
                f"{path}, line {lineno}: invalid JSON: {exc.msg} (column {exc.colno})"
            ) from None
        if not isinstance(obj, dict):
            raise DataFormatError(f"{path}, line {lineno}: expected a JSON object, got {type(obj).__name__}")
        n_records += 1
        yield lineno, obj
    if n_records == 0:
        raise DataFormatError(f"{path}: file is empty (no JSONL records)")


def require(record: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    """Return ``record[key]`` after checking presence and type; ``where`` prefixes the error."""
    if key not in record:
        raise DataFormatError(f"{where}: missing key {key!r}")
    value = record[key]
    # bool is an int subclass; it is never a valid id/count here.
    if not isinstance(value, kind) or isinstance(value, bool):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise DataFormatError(f"{where}: key {key!r} must be {names}, got {type(value).__name__}")
    return value


def str_list(
    record: Mapping[str, Any], key: str, where: str, *, allow_empty: bool = False
) -> tuple[str, ...]:
    """Return ``record[key]`` as a tuple of strings, checking every element."""
    value = require(record, key, list, where)
    if not value and not allow_empty:
        raise DataFormatError(f"{where}: key {key!r} is an empty list")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise DataFormatError(f"{where}: {key}[{i}] must be str, got {type(item).__name__}")
    return tuple(value)


def nonempty_str(record: Mapping[str, Any], key: str, where: str) -> str:
    """Return a required string field that is not blank (ids and targets)."""
    value = require(record, key, str, where)
    if not value.strip():
        raise DataFormatError(f"{where}: key {key!r} is an empty string")
    return value
