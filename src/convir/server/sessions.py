"""Conversation sessions kept in SQLite (``INDEX_DIR/sessions.sqlite``).

A session row holds the whole :class:`~convir.dialog.state.DialogState` as JSON, the options
it was created with, the view of its last turn (scores, question, generated images) and a
version counter. Every turn is written in one transaction with an optimistic version check
(``UPDATE ... WHERE version = ?``), so a server restart continues each session exactly where
it was and two writers (threads or processes) can never silently overwrite each other.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DB_NAME = "sessions.sqlite"
_BUSY_MS = 30_000
_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    version INTEGER NOT NULL,
    status TEXT NOT NULL,
    options TEXT NOT NULL,
    state TEXT NOT NULL,
    last TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_updated ON sessions (updated);
"""


@dataclass
class SessionRow:
    id: str
    created: float
    updated: float
    version: int
    status: str  # "open" | "found"
    options: dict[str, Any]
    state: dict[str, Any]  # DialogState.to_dict()
    last: dict[str, Any]  # the last turn's view (see convir.server.app._last_view)


class VersionConflict(Exception):
    """The row changed (or vanished) since it was read; the caller re-reads and retries."""


def new_session_id() -> str:
    """Unguessable (96 random bits): an id is the only handle on a session."""
    return secrets.token_urlsafe(12)


class SessionStore:
    """One SQLite file shared by all threads of the server (one connection behind a lock;
    WAL + busy timeout so a second process on the same index waits instead of failing)."""

    def __init__(self, index_dir: Path) -> None:
        self.path = Path(index_dir) / DB_NAME
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=_BUSY_MS / 1000)
        self._db.execute(f"PRAGMA busy_timeout={_BUSY_MS}")
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    @staticmethod
    def _row(r: tuple[Any, ...]) -> SessionRow:
        return SessionRow(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]), json.loads(r[6]), json.loads(r[7]))

    def create(self, options: dict[str, Any], state: dict[str, Any], last: dict[str, Any]) -> SessionRow:
        now = time.time()
        row = SessionRow(new_session_id(), now, now, 1, "open", options, state, last)
        with self._lock, self._db:
            self._db.execute(
                "INSERT INTO sessions VALUES (?,?,?,?,?,?,?,?)",
                (
                    row.id,
                    now,
                    now,
                    1,
                    row.status,
                    _dumps(options),
                    _dumps(state),
                    _dumps(last),
                ),
            )
        return row

    def get(self, session_id: str) -> SessionRow | None:
        with self._lock:
            r = self._db.execute("SELECT * FROM sessions WHERE id=?", (session_id,)).fetchone()
        return self._row(r) if r else None

    def save(self, row: SessionRow, state: dict[str, Any], last: dict[str, Any], status: str) -> SessionRow:
        """Write one turn; :class:`VersionConflict` when ``row`` is no longer the stored version."""
        now = time.time()
        with self._lock, self._db:
            cur = self._db.execute(
                "UPDATE sessions SET updated=?, version=version+1, status=?, state=?, last=? "
                "WHERE id=? AND version=?",
                (now, status, _dumps(state), _dumps(last), row.id, row.version),
            )
            if cur.rowcount != 1:
                raise VersionConflict(row.id)
        return SessionRow(row.id, row.created, now, row.version + 1, status, row.options, state, last)

    def recent(self, limit: int = 100, offset: int = 0) -> list[SessionRow]:
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM sessions ORDER BY updated DESC, id LIMIT ? OFFSET ?", (limit, offset)
            ).fetchall()
        return [self._row(r) for r in rows]

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM sessions").fetchone()[0])

    def delete(self, session_id: str) -> bool:
        with self._lock, self._db:
            return self._db.execute("DELETE FROM sessions WHERE id=?", (session_id,)).rowcount == 1

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
