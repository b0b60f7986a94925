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

Owner secrets are minted by the server only: table ``owners`` records the SHA-256 of each secret
it handed out with a session (and the token's user), and a secret a client sends when it creates
a session is kept only if it is listed there for that user (a planted cookie owns nothing).
Creation is bounded per owner, per user and in total (:class:`Quota`, checked in the insert's
transaction), and sessions idle longer than the expiry are deleted.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from convir.errors import ConvirError
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
CREATE TABLE IF NOT EXISTS owners (
    key TEXT PRIMARY KEY,
    username TEXT NOT NULL,
    created REAL NOT NULL
);
"""
RESET_HINT = "stop the server and set it aside with: convir serve {index} --reset-sessions"
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


@dataclass(frozen=True)
class Quota:
    """Limits on new sessions (0 = no limit): in total, per owner secret, per token user (only
    with per-user tokens: without them every client is user "" and ``total`` covers it), and
    the idle time in seconds after which a session is deleted."""

    total: int = 10_000
    per_owner: int = 500
    per_user: int = 2_000
    idle_s: float = 30 * 86400


class QuotaExceeded(Exception):
    """A limit of :class:`Quota` is reached; ``str()`` says which, for the 429."""


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
        self._closed = False
        self._expired_at = 0.0
        try:
            self._db = self._connect()
            self._db.executescript(_SCHEMA)
            self._migrate()
            self._db.execute("SELECT COUNT(*) FROM owners").fetchone()
        except sqlite3.OperationalError as exc:  # locked, unreadable folder, disk I/O
            raise ConvirError(f"cannot open the sessions database {self.path}: {exc}") from exc
        except sqlite3.DatabaseError as exc:  # not a database, malformed image
            hint = RESET_HINT.format(index=self.path.parent)
            raise ConvirError(f"the sessions database {self.path} is damaged ({exc}): {hint}") from exc

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
                self._db.execute("CREATE INDEX IF NOT EXISTS sessions_username ON sessions (username)")
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

    def minted(self, owner: Owner) -> bool:
        """Whether this server handed out ``owner``'s secret to that user (with a session)."""
        if owner.key is None:
            return False
        with self._lock:
            r = self._db.execute(
                "SELECT 1 FROM owners WHERE key=? AND username=?", (owner.key, owner.username)
            ).fetchone()
        return r is not None

    def _over_quota(self, owner: Owner, quota: Quota) -> str | None:
        """Which limit a new session of ``owner`` would pass, as a sentence; None if none.
        Called with the lock held."""

        def count(where: str, *args: Any) -> int:
            return int(self._db.execute(f"SELECT COUNT(*) FROM sessions {where}", args).fetchone()[0])

        if quota.per_owner and count("WHERE owner=? AND username=?", owner.key, owner.username) >= (
            quota.per_owner
        ):
            return (
                f"this owner secret already has {quota.per_owner} sessions (the per-owner limit): "
                "delete some first"
            )
        if quota.per_user and owner.username and count("WHERE username=?", owner.username) >= quota.per_user:
            return (
                f"user {owner.username!r} already has {quota.per_user} sessions (the per-user limit): "
                "delete some first"
            )
        if quota.total and count("") >= quota.total:
            return (
                f"the server holds {quota.total} sessions (its total limit, --max-sessions): "
                "try again later, or delete some of yours"
            )
        return None

    def check_quota(self, owner: Owner, quota: Quota) -> None:
        """:class:`QuotaExceeded` if a new session of ``owner`` would pass a limit (a cheap
        check before a turn is computed; :meth:`create` checks again when it inserts)."""
        with self._lock:
            over = self._over_quota(owner, quota)
        if over:
            raise QuotaExceeded(over)

    def expire(self, idle_s: float, every_s: float = 0.0) -> int:
        """Delete sessions not updated for ``idle_s`` seconds (0: never), and the recorded
        secrets that no longer own a session and were minted before that; at most once per
        ``every_s``. Returns how many sessions went."""
        now = time.time()
        if not idle_s or now - self._expired_at < every_s:
            return 0
        self._expired_at = now
        cutoff = now - idle_s
        with self._lock, self._db:
            n = self._db.execute("DELETE FROM sessions WHERE updated < ?", (cutoff,)).rowcount
            self._db.execute(
                "DELETE FROM owners WHERE created < ? AND NOT EXISTS "
                "(SELECT 1 FROM sessions s WHERE s.owner = owners.key AND s.username = owners.username)",
                (cutoff,),
            )
        if n:
            log.info("deleted %d sessions idle for over %.0f days", n, idle_s / 86400)
        return n

    def create(
        self,
        options: dict[str, Any],
        state: dict[str, Any],
        last: dict[str, Any],
        owner: Owner,
        quota: Quota | None = None,
    ) -> SessionRow:
        """Insert a session of ``owner`` and record its secret as minted; with ``quota``, the
        limits are checked in the same (immediate) transaction, so concurrent creations, also
        from a second server process, cannot pass them (:class:`QuotaExceeded`)."""
        if owner.key is None:
            raise ValueError("a session needs an owner key")
        now = time.time()
        row = SessionRow(
            new_session_id(), now, now, 1, "open", options, state, last, owner.key, owner.username
        )
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            over = self._over_quota(owner, quota) if quota else None
            if over:
                raise QuotaExceeded(over)  # the context manager rolls back
            self._db.execute(
                "INSERT OR IGNORE INTO owners (key, username, created) VALUES (?,?,?)",
                (owner.key, owner.username, now),
            )
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


def reset_sessions(index_dir: Path) -> Path | None:
    """Set ``INDEX_DIR/sessions.sqlite`` aside (a damaged one, say) so the next start makes an
    empty one: each file (-wal and -shm first, so a new database never meets an old log) is
    renamed, atomically, to ``sessions.sqlite.aside-TIMESTAMP[-wal|-shm]``; nothing is deleted.
    Returns the new path of the database, or None when there was none."""
    path = Path(index_dir) / DB_NAME
    stamp = time.strftime("%Y%m%dT%H%M%S")
    aside = path.with_name(f"{DB_NAME}.aside-{stamp}")
    n = 1
    while aside.exists():
        n += 1
        aside = path.with_name(f"{DB_NAME}.aside-{stamp}-{n}")
    for suffix in ("-wal", "-shm", ""):
        src = path.with_name(DB_NAME + suffix)
        if src.exists():
            os.replace(src, aside.with_name(aside.name + suffix))
    return aside if aside.exists() else None


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
