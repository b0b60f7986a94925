"""convir.sqlitedb: the WAL switch waits out a concurrent switch instead of failing."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from conftest import run_together
from convir.sqlitedb import use_wal


def test_connections_opening_a_new_database_together_all_get_wal(tmp_path: Path) -> None:
    # without the retry, a few rounds in a hundred raise "database is locked" (no busy handler)
    for i in range(150):
        path = tmp_path / f"{i}.sqlite"

        def open_it(path: Path = path) -> str:
            db = sqlite3.connect(path, timeout=30)
            try:
                use_wal(db)
                return db.execute("PRAGMA journal_mode").fetchone()[0]
            finally:
                db.close()

        modes, errors = run_together(open_it, 4)
        assert errors == [] and modes == ["wal"] * 4


def test_other_errors_are_not_retried(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "x.sqlite")
    db.close()
    with pytest.raises(sqlite3.ProgrammingError):  # a closed connection: raised at once
        use_wal(db)
