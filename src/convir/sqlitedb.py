"""SQLite settings shared by every database convir writes (sessions, LLM cache, index metadata)."""

from __future__ import annotations

import sqlite3
import time


def use_wal(db: sqlite3.Connection, timeout_s: float = 30.0) -> None:
    """Switch ``db`` to WAL, retrying while another connection holds the lock.

    SQLite answers a journal-mode change with "database is locked" at once, without calling the
    busy handler, when a second process or thread switches the same rollback-journal file (a new
    database, or one from before WAL) at the same moment; two servers or workers starting
    together would otherwise fail now and then."""
    deadline = time.monotonic() + timeout_s
    delay = 0.005
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if ("locked" not in str(e) and "busy" not in str(e)) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.2)
