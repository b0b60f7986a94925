"""Conversation sessions kept in SQLite (``INDEX_DIR/sessions.sqlite``).

A session row holds the whole :class:`~convir.dialog.state.DialogState` as JSON, the options
it was created with, the view of its last turn (scores, question, generated images) and a
version counter. Every turn is written in one transaction with an optimistic version check
(``UPDATE ... WHERE version = ?``), so a server restart continues each session exactly where
it was and two writers (threads or processes) can never silently overwrite each other.

Each row also records its owner: the SHA-256 of the owner secret the creating client got
(the secret itself is never stored) and the user of the bearer token it came with ("" when
the server has no per-user tokens). Every read, write, list and delete filters on both in
SQL, so a session of another owner is indistinguishable from one that does not exist.
"""

from __future__ import annotations

import json
import logging
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from convir.sqlitedb import use_wal

log = logging.getLogger("convir.server")
DB_NAME = "sessions.sqlite"
_BUSY_MS = 30_000
# owner / username come last: databases from before owner secrets get them by ALTER TABLE
# (see SessionStore._migrate), and fresh ones have the same column order
_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    version INTEGER NOT NULL,
    status TEXT NOT NULL,
    options TEXT NOT NULL,
    state TEXT NOT NULL,
    last TEXT NOT NULL,
    owner TEXT,
    username TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS sessions_updated ON sessions (updated);
"""
_COLUMNS = "id, created, updated, version, status, options, state, last, owner, username"


@dataclass
class SessionRow:
    id: str
    created: float
    updated: float
    version: int
    status: str  # "open" | "found"
    options: dict[str, Any]
    state: dict[str, Any]  # DialogState.to_dict()
    last: dict[str, Any]  # the last turn's view (see convir.server.service.Service._last)
    owner: str | None = None  # SHA-256 hex of the owner secret; None for pre-owner rows
    username: str = ""


@dataclass(frozen=True)
class Owner:
    """Who is asking: the bearer token's user ("" without per-user tokens) and the SHA-256
    of the owner secret the client sent (None: it sent none, so it owns nothing)."""

    username: str
    key: str | None


class VersionConflict(Exception):
    """The row changed (or vanished) since it was read; the caller re-reads and retries."""


def new_session_id() -> str:
    """Unguessable (96 random bits); an id alone is no access: reading it needs the owner secret."""
    return secrets.token_urlsafe(12)


class SessionStore:
    """One SQLite file shared by all threads of the server (one connection behind a lock;
    WAL + busy timeout so a second process on the same index waits instead of failing)."""

    def __init__(self, index_dir: Path) -> None:
        self.path = Path(index_dir) / DB_NAME
        self._lock = threading.Lock()
        self._db = self._connect()
        self._closed = False
        self._db.executescript(_SCHEMA)
        self._migrate()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, check_same_thread=False, timeout=_BUSY_MS / 1000)
        db.execute(f"PRAGMA busy_timeout={_BUSY_MS}")
        use_wal(db, _BUSY_MS / 1000)
        db.execute("PRAGMA synchronous=NORMAL")
        return db

    def ensure_open(self) -> None:
        """Reconnect after :meth:`close` (an app whose lifespan runs more than once, as
        test clients do, closes the store at each shutdown and needs it at each startup)."""
        with self._lock:
            if self._closed:
                self._db, self._closed = self._connect(), False

    def _migrate(self) -> None:
        """Add the owner columns to a database from before owner secrets (in one immediate
        transaction, so two servers starting on one index do not both alter it). Old rows get
        no owner: no secret can match them, so they are unreachable over HTTP."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                cols = {r[1] for r in self._db.execute("PRAGMA table_info(sessions)")}
                added = "owner" not in cols
                if added:
                    self._db.execute("ALTER TABLE sessions ADD COLUMN owner TEXT")
                if "username" not in cols:
                    self._db.execute("ALTER TABLE sessions ADD COLUMN username TEXT NOT NULL DEFAULT ''")
                self._db.execute(
                    "CREATE INDEX IF NOT EXISTS sessions_owner ON sessions (owner, username, updated)"
                )
                orphans = self._db.execute("SELECT COUNT(*) FROM sessions WHERE owner IS NULL").fetchone()[0]
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        if added and orphans:
            log.warning(
                "%s: %d sessions from before owner secrets have no owner and cannot be reached over "
                "HTTP; delete them with: sqlite3 %s 'DELETE FROM sessions WHERE owner IS NULL'",
                self.path,
                orphans,
                self.path,
            )

    @staticmethod
    def _row(r: tuple[Any, ...]) -> SessionRow:
        return SessionRow(
            r[0], r[1], r[2], r[3], r[4], json.loads(r[5]), json.loads(r[6]), json.loads(r[7]), r[8], r[9]
        )

    def create(
        self, options: dict[str, Any], state: dict[str, Any], last: dict[str, Any], owner: Owner
    ) -> SessionRow:
        if owner.key is None:
            raise ValueError("a session needs an owner key")
        now = time.time()
        row = SessionRow(
            new_session_id(), now, now, 1, "open", options, state, last, owner.key, owner.username
        )
        with self._lock, self._db:
            self._db.execute(
                f"INSERT INTO sessions ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (
                    row.id,
                    now,
                    now,
                    1,
                    row.status,
                    _dumps(options),
                    _dumps(state),
                    _dumps(last),
                    owner.key,
                    owner.username,
                ),
            )
        return row

    def get(self, session_id: str, owner: Owner) -> SessionRow | None:
        """The session if ``owner`` owns it, else None (also when it does not exist)."""
        if owner.key is None:
            return None
        with self._lock:
            r = self._db.execute(
                f"SELECT {_COLUMNS} FROM sessions WHERE id=? AND owner=? AND username=?",
                (session_id, owner.key, owner.username),
            ).fetchone()
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
        return SessionRow(
            row.id,
            row.created,
            now,
            row.version + 1,
            status,
            row.options,
            state,
            last,
            row.owner,
            row.username,
        )

    def recent(self, owner: Owner, limit: int = 100, offset: int = 0) -> list[SessionRow]:
        """The owner's sessions, most recently updated first."""
        if owner.key is None:
            return []
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM sessions WHERE owner=? AND username=? "
                "ORDER BY updated DESC, id LIMIT ? OFFSET ?",
                (owner.key, owner.username, limit, offset),
            ).fetchall()
        return [self._row(r) for r in rows]

    def count(self, owner: Owner | None = None) -> int:
        """All sessions (``owner`` None: for limits and health) or the owner's."""
        with self._lock:
            if owner is None:
                return int(self._db.execute("SELECT COUNT(*) FROM sessions").fetchone()[0])
            if owner.key is None:
                return 0
            return int(
                self._db.execute(
                    "SELECT COUNT(*) FROM sessions WHERE owner=? AND username=?", (owner.key, owner.username)
                ).fetchone()[0]
            )

    def delete(self, session_id: str, owner: Owner) -> bool:
        if owner.key is None:
            return False
        with self._lock, self._db:
            cur = self._db.execute(
                "DELETE FROM sessions WHERE id=? AND owner=? AND username=?",
                (session_id, owner.key, owner.username),
            )
            return cur.rowcount == 1

    def close(self) -> None:
        with self._lock:
            self._db.close()
            self._closed = True


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
