"""Metadata filters: ``--where "meta.year >= 2020 and meta.place == 'beach'"``.

One small grammar, three back-ends that mean the same thing:

* :meth:`Where.sql` - a parameterised SQLite clause over ``items.meta`` (the faiss store,
  and the BM25 side of every store);
* :meth:`Where.milvus` - a Milvus boolean expression over the collection's ``meta`` JSON
  field, passed down to the engine;
* :meth:`Where.matches` - the reference evaluator (tests check the other two against it).

Grammar (parsed with :func:`ast.parse` and walked node by node against a whitelist: nothing
is ever evaluated as Python)::

    expr   := expr and expr | expr or expr | not expr | ( expr ) | cmp
    cmp    := path OP value | value OP path | path [not] in [value, ...]
              (chains such as ``2000 <= meta.year < 2020`` are allowed)
    path   := meta.KEY(.KEY)* | meta["KEY"]...      KEY: letters, digits, _, -, space
    OP     := == != < <= > >=
    value  := number | 'string' | "string" | true | false

Semantics are SQL's three-valued logic: a comparison whose field is missing, null, or holds
another type than the value (a string against a number, a list, ...) is *unknown*, ``not
unknown`` is unknown, and only items for which the whole filter is *true* are kept. So
``meta.year != 2020`` keeps items that have a year other than 2020, not items without one.
Booleans compare only with ``==``/``!=``. ``in`` is a disjunction of ``==``.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass
from typing import Any

from convir.errors import ConvirError

MAX_WHERE_CHARS = 2000
_KEY = re.compile(r"^[\w\- ]+$")
_OPS = {ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">="}
_FLIP = {"==": "==", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}
_SQL_OP = {"==": "=", "!=": "<>", "<": "<", "<=": "<=", ">": ">", ">=": ">="}

Value = bool | int | float | str


class WhereError(ConvirError):
    """A ``--where`` filter that does not follow the grammar."""


@dataclass(frozen=True)
class Cmp:
    path: tuple[str, ...]
    op: str
    value: Value


@dataclass(frozen=True)
class In:
    path: tuple[str, ...]
    values: tuple[Value, ...]
    negated: bool = False


@dataclass(frozen=True)
class BoolOp:
    op: str  # "and" | "or"
    parts: tuple[Any, ...]


@dataclass(frozen=True)
class Not:
    part: Any


def _kind(v: Any) -> str | None:
    """Type class of a JSON value: 'bool', 'number', 'text'; None for null/list/object."""
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "text"
    return None


class Where:
    """A parsed filter; build it with :func:`parse_where`."""

    def __init__(self, text: str, tree: Any) -> None:
        self.text = text
        self.tree = tree

    def __repr__(self) -> str:
        return f"Where({self.text!r})"

    # reference semantics ------------------------------------------------------------------
    def matches(self, meta: dict[str, Any]) -> bool:
        """True when the filter is *true* for an item with this metadata (unknown -> False)."""
        return _eval(self.tree, meta) is True

    # SQLite -------------------------------------------------------------------------------
    def sql(self, column: str = "meta") -> tuple[str, list[Any]]:
        """(clause, parameters) for ``WHERE clause`` over a JSON text column."""
        params: list[Any] = []
        return _sql(self.tree, column, params), params

    # Milvus -------------------------------------------------------------------------------
    def milvus(self, field: str = "meta") -> str:
        """The same filter as a Milvus expression over a JSON field."""
        return _milvus(self.tree, field)


def parse_where(text: str) -> Where:
    """Parse a filter; a :class:`WhereError` names what is wrong and shows the grammar."""
    if not isinstance(text, str) or not text.strip():
        raise WhereError('--where is empty; e.g. --where "meta.year >= 2020"')
    if len(text) > MAX_WHERE_CHARS:
        raise WhereError(f"--where is longer than {MAX_WHERE_CHARS} characters")
    try:
        node = ast.parse(text.strip(), mode="eval").body
    except SyntaxError as exc:
        raise WhereError(f"cannot parse --where {text!r}: {exc.msg}{_HINT}") from None
    return Where(text, _node(node, text))


_HINT = (
    ' (write e.g. meta.year >= 2020 and meta.place == "beach", meta.tag in ["a", "b"]; '
    "operators == != < <= > >=, and, or, not)"
)


def _bad(text: str, why: str) -> WhereError:
    return WhereError(f"--where {text!r}: {why}{_HINT}")


def _node(n: ast.AST, text: str) -> Any:
    if isinstance(n, ast.BoolOp):
        op = "and" if isinstance(n.op, ast.And) else "or"
        return BoolOp(op, tuple(_node(v, text) for v in n.values))
    if isinstance(n, ast.UnaryOp) and isinstance(n.op, ast.Not):
        return Not(_node(n.operand, text))
    if isinstance(n, ast.Compare):
        parts: list[Any] = []
        left = n.left
        for op, right in zip(n.ops, n.comparators, strict=True):
            parts.append(_compare(left, op, right, text))
            left = right
        return parts[0] if len(parts) == 1 else BoolOp("and", tuple(parts))
    raise _bad(text, f"unexpected {ast.unparse(n)!r} (expected a comparison such as meta.year >= 2020)")


def _compare(left: ast.AST, op: ast.cmpop, right: ast.AST, text: str) -> Any:
    if isinstance(op, (ast.In, ast.NotIn)):
        path = _path(left, text)
        if not isinstance(right, (ast.List, ast.Tuple)) or not right.elts:
            raise _bad(text, '\'in\' needs a non-empty list of values, e.g. meta.tag in ["a", "b"]')
        return In(path, tuple(_value(v, text) for v in right.elts), isinstance(op, ast.NotIn))
    if type(op) not in _OPS:
        raise _bad(text, f"unsupported operator {type(op).__name__}")
    sym = _OPS[type(op)]
    if _is_path(left):
        path, value = _path(left, text), _value(right, text)
    elif _is_path(right):
        path, value, sym = _path(right, text), _value(left, text), _FLIP[sym]
    else:
        raise _bad(text, f"{ast.unparse(left)} {sym} {ast.unparse(right)} compares no meta field")
    if isinstance(value, bool) and sym not in ("==", "!="):
        raise _bad(text, f"true/false compare only with == or != (got {sym})")
    return Cmp(path, sym, value)


def _is_path(n: ast.AST) -> bool:
    while isinstance(n, (ast.Attribute, ast.Subscript)):
        n = n.value
    return isinstance(n, ast.Name) and n.id == "meta"


def _path(n: ast.AST, text: str) -> tuple[str, ...]:
    keys: list[str] = []
    while isinstance(n, (ast.Attribute, ast.Subscript)):
        if isinstance(n, ast.Attribute):
            keys.append(n.attr)
        else:
            sl = n.slice
            if not (isinstance(sl, ast.Constant) and isinstance(sl.value, str)):
                raise _bad(text, f"{ast.unparse(n)}: a key in brackets must be a quoted string")
            keys.append(sl.value)
        n = n.value
    if not (isinstance(n, ast.Name) and n.id == "meta") or not keys:
        raise _bad(text, f"{ast.unparse(n)} is not a metadata field: fields are written meta.NAME")
    for key in keys:
        if not _KEY.match(key):
            raise _bad(text, f"field name {key!r} may hold only letters, digits, _, - and spaces")
    return tuple(reversed(keys))


def _value(n: ast.AST, text: str) -> Value:
    if isinstance(n, ast.Constant) and isinstance(n.value, (bool, int, float, str)):
        if isinstance(n.value, float) and n.value != n.value:  # pragma: no cover - nan is not a literal
            raise _bad(text, "nan is not a value")
        return n.value
    if isinstance(n, ast.UnaryOp) and isinstance(n.op, (ast.USub, ast.UAdd)):
        inner = _value(n.operand, text)
        if isinstance(inner, bool) or not isinstance(inner, (int, float)):
            raise _bad(text, f"{ast.unparse(n)} is not a number")
        return -inner if isinstance(n.op, ast.USub) else inner
    if isinstance(n, ast.Name) and n.id in ("true", "false"):
        return n.id == "true"
    raise _bad(text, f"{ast.unparse(n)!r} is not a value (numbers, quoted strings, true, false)")


# -- reference evaluator (Kleene logic; None = unknown) ------------------------------------------
def _lookup(meta: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(meta, dict) or key not in meta:
            return None
        meta = meta[key]
    return meta


def _cmp(have: Any, op: str, want: Value) -> bool | None:
    if have is None or _kind(have) is None or _kind(have) != _kind(want):
        return None
    return {
        "==": have == want,
        "!=": have != want,
        "<": have < want,
        "<=": have <= want,
        ">": have > want,
        ">=": have >= want,
    }[op]


def _or(values: list[bool | None]) -> bool | None:
    if any(v is True for v in values):
        return True
    return None if any(v is None for v in values) else False


def _eval(t: Any, meta: dict[str, Any]) -> bool | None:
    if isinstance(t, Cmp):
        return _cmp(_lookup(meta, t.path), t.op, t.value)
    if isinstance(t, In):
        have = _lookup(meta, t.path)
        got = _or([_cmp(have, "==", v) for v in t.values])
        return (None if got is None else not got) if t.negated else got
    if isinstance(t, Not):
        got = _eval(t.part, meta)
        return None if got is None else not got
    values = [_eval(p, meta) for p in t.parts]
    if t.op == "or":
        return _or(values)
    if any(v is False for v in values):
        return False
    return None if any(v is None for v in values) else True


# -- SQLite ---------------------------------------------------------------------------------------
_SQL_TYPES = {"number": "('integer', 'real')", "text": "('text')", "bool": "('true', 'false')"}


def _json_path(path: tuple[str, ...]) -> str:
    return "$" + "".join(f'."{k}"' for k in path)


def _sql_cmp(path: tuple[str, ...], op: str, value: Value, column: str, params: list[Any]) -> str:
    jp = _json_path(path)
    params += [jp, jp, int(value) if isinstance(value, bool) else value]
    # the CASE makes a missing field or another type NULL (unknown), as in the reference
    return (
        f"(CASE WHEN json_type({column}, ?) IN {_SQL_TYPES[_kind(value)]} "  # type: ignore[index]
        f"THEN json_extract({column}, ?) {_SQL_OP[op]} ? END)"
    )


def _sql(t: Any, column: str, params: list[Any]) -> str:
    if isinstance(t, Cmp):
        return _sql_cmp(t.path, t.op, t.value, column, params)
    if isinstance(t, In):
        inner = " OR ".join(_sql_cmp(t.path, "==", v, column, params) for v in t.values)
        return f"(NOT ({inner}))" if t.negated else f"({inner})"
    if isinstance(t, Not):
        return f"(NOT {_sql(t.part, column, params)})"
    joiner = " AND " if t.op == "and" else " OR "
    return "(" + joiner.join(_sql(p, column, params) for p in t.parts) + ")"


# -- Milvus ---------------------------------------------------------------------------------------
def _milvus_value(v: Value) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    return repr(v)


def _milvus_cmp(path: tuple[str, ...], op: str, value: Value, field: str) -> str:
    ref = field + "".join(f'["{k}"]' for k in path)
    return f"{ref} {op} {_milvus_value(value)}"


def _milvus(t: Any, field: str) -> str:
    if isinstance(t, Cmp):
        return _milvus_cmp(t.path, t.op, t.value, field)
    if isinstance(t, In):  # Milvus Lite has no `in` over JSON keys: an explicit disjunction
        inner = " or ".join(_milvus_cmp(t.path, "==", v, field) for v in t.values)
        return f"not ({inner})" if t.negated else f"({inner})"
    if isinstance(t, Not):
        return f"not ({_milvus(t.part, field)})"
    return "(" + f" {t.op} ".join(_milvus(p, field) for p in t.parts) + ")"


class BoundFilter:
    """A filter bound to one build: an engine takes :attr:`where` (Milvus), the faiss indexes and
    BM25 take :attr:`positions` (resolved once, lazily, from SQLite's metadata)."""

    def __init__(self, where: Where, resolve: Any) -> None:
        self.where = where
        self._resolve = resolve
        self._positions: Any = None

    @property
    def positions(self) -> Any:
        """Sorted int64 positions of the build's items that pass the filter."""
        if self._positions is None:
            import numpy as np

            self._positions = np.unique(np.asarray(self._resolve(self.where), dtype=np.int64))
        return self._positions
