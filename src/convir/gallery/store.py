"""On-disk index directory.

Layout (everything below INDEX_DIR)::

    convir.sqlite        items (id, path, captions, meta, content hash, vector) + settings
    builds/<gen>/        derived, read-only search artifacts of one build generation:
        vectors.npy      (n, dim) float32, row i = item ids[i]
        ids.json         position -> item id
        ann.faiss        the ANN index (absent for 'flat', which searches vectors.npy)
        bm25/            bm25s index over the captions
        build.json       what was built and with which parameters

SQLite is the source of truth and is updated one batch per transaction, so a killed
``convir index`` run loses at most the batch in flight and the next run resumes. Each
build generation is written into a temporary folder and renamed into place before the
settings row points at it, so readers always see a complete build.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from convir.errors import ConvirError, IndexMismatchError

DB_NAME = "convir.sqlite"
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    id TEXT PRIMARY KEY,
    path TEXT,
    captions TEXT NOT NULL,
    meta TEXT NOT NULL,
    hash TEXT NOT NULL,
    stat TEXT,
    vec_source TEXT NOT NULL,
    vec BLOB NOT NULL,
    updated REAL NOT NULL
);
"""


@dataclass
class StoredItem:
    id: str
    path: str | None
    captions: list[str]
    meta: dict[str, Any] = field(default_factory=dict)
    vec_source: str = "captions"


class Store:
    """SQLite metadata + vectors of one index directory."""

    def __init__(self, root: Path, create: bool = False) -> None:
        self.root = Path(root)
        db = self.root / DB_NAME
        if not db.exists():
            if not create:
                if self.root.exists() and any(self.root.iterdir()):
                    raise ConvirError(f"{self.root} is not a convir index (no {DB_NAME} inside)")
                raise ConvirError(
                    f"no index at {self.root}: build one with `convir index GALLERY --out {self.root}`"
                )
            self.root.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(db, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(_SCHEMA)
        version = self.get("schema_version")
        if version is None:
            self.set("schema_version", str(SCHEMA_VERSION))
        elif int(version) > SCHEMA_VERSION:
            raise ConvirError(f"{self.root} was written by a newer convir (schema {version}); upgrade convir")

    # settings -------------------------------------------------------------------------------
    def get(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM settings WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    def set(self, key: str, value: str) -> None:
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO settings VALUES (?, ?)", (key, value))

    @property
    def encoder_spec(self) -> str | None:
        return self.get("encoder")

    @property
    def dim(self) -> int | None:
        d = self.get("dim")
        return int(d) if d else None

    def bind_encoder(self, spec: str, dim: int) -> None:
        """Record the encoder on first use; refuse a different one afterwards."""
        have, have_dim = self.encoder_spec, self.dim
        if have is None:
            with self.db:
                self.db.execute("INSERT OR REPLACE INTO settings VALUES ('encoder', ?)", (spec,))
                self.db.execute("INSERT OR REPLACE INTO settings VALUES ('dim', ?)", (str(dim),))
            return
        if have != spec or have_dim != dim:
            raise IndexMismatchError(
                f"index {self.root} was built with encoder {have!r} (dim {have_dim}); "
                f"{spec!r} (dim {dim}) cannot be mixed into it. Use --encoder {have} "
                "or build a new index with another --out folder."
            )

    # items ----------------------------------------------------------------------------------
    def fingerprints(self) -> dict[str, tuple[str, str | None]]:
        """id -> (content hash, stat string) for change detection."""
        return {r[0]: (r[1], r[2]) for r in self.db.execute("SELECT id, hash, stat FROM items")}

    def upsert(self, rows: Iterable[tuple[StoredItem, str, str | None, np.ndarray]]) -> None:
        """Write one batch (item, hash, stat, vector) in a single transaction."""
        now = time.time()
        with self.db:
            self.db.executemany(
                "INSERT OR REPLACE INTO items VALUES (?,?,?,?,?,?,?,?,?)",
                [
                    (
                        it.id,
                        it.path,
                        json.dumps(it.captions, ensure_ascii=False),
                        json.dumps(it.meta, ensure_ascii=False),
                        h,
                        st,
                        it.vec_source,
                        np.asarray(v, dtype=np.float32).tobytes(),
                        now,
                    )
                    for it, h, st, v in rows
                ],
            )

    def update_stat(self, updates: list[tuple[str, str]]) -> None:
        with self.db:
            self.db.executemany("UPDATE items SET stat=? WHERE id=?", [(s, i) for i, s in updates])

    def delete(self, ids: Iterable[str]) -> int:
        ids = list(ids)
        with self.db:
            self.db.executemany("DELETE FROM items WHERE id=?", [(i,) for i in ids])
        return len(ids)

    def count(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM items").fetchone()[0])

    def iter_vectors(self) -> Iterator[tuple[str, np.ndarray, list[str]]]:
        """(id, vector, captions) in id order: the order of every build."""
        for i, blob, caps in self.db.execute("SELECT id, vec, captions FROM items ORDER BY id"):
            yield i, np.frombuffer(blob, dtype=np.float32), json.loads(caps)

    def items(self, ids: list[str]) -> dict[str, StoredItem]:
        out: dict[str, StoredItem] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            q = f"SELECT id, path, captions, meta, vec_source FROM items WHERE id IN ({marks})"
            for i, p, c, m, s in self.db.execute(q, chunk):
                out[i] = StoredItem(i, p, json.loads(c), json.loads(m), s)
        return out

    # builds ---------------------------------------------------------------------------------
    @property
    def builds_dir(self) -> Path:
        return self.root / "builds"

    def current_build(self) -> Path | None:
        gen = self.get("build")
        if gen is None:
            return None
        path = self.builds_dir / gen
        return path if (path / "build.json").exists() else None

    def next_generation(self) -> str:
        return str(int(self.get("build_counter") or 0) + 1)

    def publish_build(self, gen: str) -> None:
        """Point readers at builds/<gen> (already complete on disk), then drop older builds."""
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO settings VALUES ('build', ?)", (gen,))
            self.db.execute("INSERT OR REPLACE INTO settings VALUES ('build_counter', ?)", (gen,))
            self.db.execute("INSERT OR REPLACE INTO settings VALUES ('dirty', '0')")
        for old in self.builds_dir.iterdir():
            if old.name != gen:
                shutil.rmtree(old, ignore_errors=True)

    def close(self) -> None:
        self.db.close()
