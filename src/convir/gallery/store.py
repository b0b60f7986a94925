"""On-disk index directory.

Layout (everything below INDEX_DIR)::

    convir.sqlite        items (id, path, captions, meta, content hash, vector) + settings
                         (image paths relative to the ``gallery_root`` setting: see below)
    convir.lock          the writer lock (one ``convir index`` at a time; holder's pid inside)
    builds/<gen>/        derived, read-only search artifacts of one build generation
                         (files: :mod:`convir.index.build`)
    last_index_report.json   what the last run did

Generated captions (``convir index --captioner``, :mod:`convir.gallery.captioner`) live in
their own table ``generated`` (id, captioner spec, caption, the item content hash it was made
from), never mixed into the user's ``items.captions``; the table is created when missing, so
older indexes gain it without a schema bump and older convir versions just ignore it.

Every stored vector carries a CRC32 over its id and bytes (``vsum``, :func:`vec_checksum`),
written with the vector; ``convir check`` and every ``convir index`` run verify it, and a
build is never written from a vector that fails it (:meth:`Store.snapshot`).

SQLite is the source of truth and is updated one batch per transaction, so a killed
``convir index`` run loses at most the batch in flight and the next run resumes. Every
transaction that changes the item set also bumps ``items_version``; a build records the
version it was built from, and publishing it (pointing readers at ``builds/<gen>``) is one
transaction that checks that version is still current. A run therefore knows for certain
whether the published build matches the items: a run killed anywhere between changing the
items and publishing is redone by the next run.

Image paths are stored relative to the gallery root recorded in the ``gallery_root`` setting
(the gallery folder; for a manifest, the manifest's folder), so a gallery that moved is
re-pointed by changing one setting, not every row (``convir index NEW --out IX --replace``
re-points without re-encoding). A manifest may name images outside its folder: those are
stored absolute (their real path). Readers always get absolute paths (:meth:`Store.items`).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sqlite3
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from convir.errors import ConvirError, DiskFullError, IndexMismatchError, is_disk_full
from convir.sqlitedb import use_wal

DB_NAME = "convir.sqlite"
# 2: items_version / build_items_version (a build knows which item set it was built from)
# 3: image paths relative to the recorded gallery root (setting ``gallery_root``)
# 4: items.vsum, a checksum per stored vector (vec_checksum)
SCHEMA_VERSION = 4
GALLERY_ROOT = "gallery_root"
# encoder kinds whose vectors are L2-normalised (all built-in ones): a stored vector of another
# norm is damaged
UNIT_NORM_ENCODERS = ("caption", "open_clip", "hf", "blip")
UNIT_NORM_TOLERANCE = 1e-3
T = TypeVar("T")


class IndexCorruptError(ConvirError):
    """convir.sqlite cannot be read: damaged, truncated, or not a convir database."""


def source_from_builds(root: Path) -> str | None:
    """The gallery named in the newest build.json: the repair hint when SQLite is unreadable."""
    found: list[tuple[float, str]] = []
    for info in Path(root).glob("builds/*/build.json"):
        try:
            src = json.loads(info.read_text(encoding="utf-8")).get("source")
            if isinstance(src, str):
                found.append((info.stat().st_mtime, src))
        except (OSError, ValueError, AttributeError):
            continue
    return max(found)[1] if found else None


def corrupt_message(root: Path, exc: BaseException | str) -> str:
    return (
        f"{Path(root) / DB_NAME} is damaged or not a convir database (sqlite: {exc}). "
        f"`convir check {root}` lists the problems; "
        f"`{index_command(root, source_from_builds(root), rebuild=True)}` "
        "sets the damaged file aside and indexes the gallery again"
    )


class DamagedVectorsError(ConvirError):
    """Stored vectors whose checksum fails: ``convir index`` of the gallery re-encodes them."""


def damaged_message(root: Path, ids: list[str], source: str | None) -> str:
    shown = ", ".join(ids[:5]) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")
    return (
        f"{len(ids)} stored vector(s) in {Path(root) / DB_NAME} are damaged ({shown}); "
        f"`{index_command(root, source)}` re-encodes them from the gallery"
    )


def index_command(root: Path, source: str | None = None, rebuild: bool = False) -> str:
    """The ``convir index`` command that (re)builds ``root`` from its gallery, for messages."""
    import shlex

    gallery, fmt = "GALLERY", "auto"
    if source:
        with contextlib.suppress(ValueError, TypeError):
            gallery, fmt = json.loads(source)
    cmd = f"convir index {shlex.quote(str(gallery))} --out {shlex.quote(str(root))}"
    if fmt != "auto":
        cmd += f" --format {fmt}"
    return cmd + (" --rebuild" if rebuild else "")


def root_of_source(source: str | None) -> Path | None:
    """The gallery root for a ``source`` setting ``[path, format]``: the gallery folder, or the
    folder of a manifest (or of any gallery given as a file); None when nothing was indexed."""
    if not source:
        return None
    try:
        path, fmt = json.loads(source)
        path = Path(path)
    except (ValueError, TypeError):
        return None
    manifest = fmt == "manifest" or (fmt == "auto" and path.suffix == ".jsonl")
    return path.parent if manifest or path.is_file() else path


def stored_path(path: str | Path | None, root: Path | None) -> str | None:
    """How an image path is stored: relative (POSIX) to the gallery root when it lies under it,
    else absolute (the real path, so the server can tell a symlink swapped in later)."""
    if path is None:
        return None
    p = Path(path)
    if root is None or not p.is_absolute():
        return str(p)
    if p.is_relative_to(root):
        return p.relative_to(root).as_posix()
    real = Path(os.path.realpath(p))
    return real.relative_to(root).as_posix() if real.is_relative_to(root) else str(real)


def absolute_path(stored: str | None, root: Path | None) -> str | None:
    """The usable path of a stored one: the gallery root joined with a relative path."""
    if stored is None or root is None or Path(stored).is_absolute():
        return stored
    return str(root / stored)


def repoint_command(root: Path, source: str | None) -> str:
    """The command that re-points ``root`` at its gallery in a new place (for messages)."""
    import shlex

    gallery, fmt = "NEW_PLACE", "auto"
    with contextlib.suppress(ValueError, TypeError):
        path, fmt = json.loads(source or "")
        if Path(path).suffix == ".jsonl" or fmt == "manifest":
            gallery = f"NEW_PLACE/{Path(path).name}"
    cmd = f"convir index {shlex.quote(gallery)} --out {shlex.quote(str(root))} --replace"
    return cmd + (f" --format {fmt}" if fmt != "auto" else "")


def _guard(method: Callable[..., T]) -> Callable[..., T]:
    """sqlite3 errors from a damaged file become one clear IndexCorruptError; a full disk
    (SQLITE_FULL: the transaction was rolled back, the file is sound) a DiskFullError."""

    @functools.wraps(method)
    def wrapper(self: Store, *args: Any, **kwargs: Any) -> T:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.OperationalError as exc:
            if is_disk_full(exc, self.root):
                raise DiskFullError(self.root) from exc
            if "locked" in str(exc) or "busy" in str(exc):
                raise ConvirError(f"{self.root / DB_NAME} is busy ({exc}); try again") from exc
            if "unable to open" in str(exc) or "readonly" in str(exc):
                raise ConvirError(f"cannot open {self.root / DB_NAME}: {exc}") from exc
            raise IndexCorruptError(corrupt_message(self.root, exc)) from exc
        except sqlite3.DatabaseError as exc:
            raise IndexCorruptError(corrupt_message(self.root, exc)) from exc

    return wrapper


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
    updated REAL NOT NULL,
    vsum INTEGER
);
CREATE TABLE IF NOT EXISTS generated (
    id TEXT PRIMARY KEY,
    captioner TEXT NOT NULL,
    caption TEXT NOT NULL,
    hash TEXT NOT NULL
);
"""


def vec_checksum(item_id: str, blob: bytes) -> int:
    """CRC32 over an item's id and its vector bytes: catches flipped bits and vectors moved to
    another row (cheap enough to verify every row on every ``convir index`` run)."""
    return zlib.crc32(blob, zlib.crc32(item_id.encode("utf-8")))


def vector_problems(blobs: list[bytes], dim: int | None, unit: bool) -> list[str | None]:
    """Per vector blob, what is implausible about it (wrong size, NaN/inf, not unit norm when
    the encoder normalises; an all-zero vector is a caption-less item), or None."""
    out: list[str | None] = [None] * len(blobs)
    size = 4 * dim if dim else (len(blobs[0]) if blobs else 0)
    rows = [i for i, b in enumerate(blobs) if len(b) == size]
    for i, b in enumerate(blobs):
        if len(b) != size:
            out[i] = f"vector of {len(b)} bytes, expected {size}"
    if not rows or not size:
        return out
    matrix = np.frombuffer(b"".join(blobs[i] for i in rows), dtype=np.float32).reshape(len(rows), -1)
    with np.errstate(over="ignore", invalid="ignore"):
        finite = np.isfinite(matrix).all(axis=1)
        norms = np.linalg.norm(matrix.astype(np.float64), axis=1)
    for j, i in enumerate(rows):
        if not finite[j]:
            out[i] = "vector has NaN or infinite values"
        elif unit and norms[j] != 0 and abs(norms[j] - 1) > UNIT_NORM_TOLERANCE:
            out[i] = f"vector norm {norms[j]:.4g}, the encoder writes unit vectors"
    return out


@dataclass
class StoredItem:
    id: str
    path: str | None
    captions: list[str]
    meta: dict[str, Any] = field(default_factory=dict)
    vec_source: str = "captions"


class Store:
    """SQLite metadata + vectors of one index directory."""

    @_guard
    def __init__(self, root: Path, create: bool = False) -> None:
        self.root = Path(root)
        self.db: sqlite3.Connection | None = None
        db = self.root / DB_NAME
        if not db.exists():
            if not create:
                if self.root.exists() and any(self.root.iterdir()):
                    raise ConvirError(f"{self.root} is not a convir index (no {DB_NAME} inside)")
                raise ConvirError(
                    f"no index at {self.root}: build one with `convir index GALLERY --out {self.root}`"
                )
            self.root.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(db, check_same_thread=False, timeout=30)
        try:
            use_wal(self.db)
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(_SCHEMA)
            version = self.get("schema_version")
            if version is None:
                self.set("schema_version", str(SCHEMA_VERSION))
            elif not version.isdigit():
                raise IndexCorruptError(corrupt_message(self.root, f"schema_version {version!r}"))
            elif int(version) > SCHEMA_VERSION:
                raise ConvirError(
                    f"{self.root} was written by a newer convir (schema {version}); upgrade convir"
                )
            self.has_checksums = "vsum" in {r[1] for r in self.db.execute("PRAGMA table_info(items)")}
        except BaseException:
            self.close()
            raise

    def upgrade(self) -> None:
        """Writers only: record the current schema (older indexes gain items_version = 0 and,
        having no build_items_version, get their build redone once by the next run)."""
        self._upgrade_gallery_root()
        self._add_vector_checksums()
        if self.get("schema_version") != str(SCHEMA_VERSION):
            self.set("schema_version", str(SCHEMA_VERSION))

    @_guard
    def _upgrade_gallery_root(self) -> None:
        """Schema 3: record the gallery root and store the paths under it relative to it (one
        transaction; paths outside it stay absolute), so a moved gallery can be re-pointed."""
        if self.get(GALLERY_ROOT) is not None:
            return
        root = root_of_source(self.get("source"))
        if root is None:
            return  # nothing indexed yet: the first run records the root
        with self.db:
            rows = self.db.execute("SELECT id, path FROM items WHERE path IS NOT NULL").fetchall()
            updates = [(new, i) for i, p in rows if (new := stored_path(p, root)) != p]
            self.db.executemany("UPDATE items SET path=? WHERE id=?", updates)
            self.db.execute("INSERT OR REPLACE INTO settings VALUES (?, ?)", (GALLERY_ROOT, str(root)))

    @_guard
    def _add_vector_checksums(self) -> None:
        """Schema 4: checksum every stored vector, in one transaction. The rows are checksummed
        as they are now, so a vector damaged before this upgrade is blessed, unless it fails the
        plausibility checks (:func:`vector_problems`): such a row gets no checksum and counts as
        damaged (re-encoded by the run doing this upgrade)."""
        if self.has_checksums:
            return
        dim, unit = self.dim, self.unit_vectors
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute("ALTER TABLE items ADD COLUMN vsum INTEGER")
            rows = self.db.execute("SELECT id, vec FROM items")
            sums: list[tuple[int, str]] = []  # written after the read: no update under a live cursor
            while chunk := rows.fetchmany(10_000):
                problems = vector_problems([b for _, b in chunk], dim, unit)
                sums += [
                    (vec_checksum(i, b), i) for (i, b), why in zip(chunk, problems, strict=True) if not why
                ]
            self.db.executemany("UPDATE items SET vsum=? WHERE id=?", sums)
        self.has_checksums = True

    # settings -------------------------------------------------------------------------------
    @_guard
    def get(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM settings WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    @_guard
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

    @property
    def gallery_root(self) -> Path | None:
        """The folder item paths are relative to (an index not yet upgraded: its source's)."""
        root = self.get(GALLERY_ROOT)
        return Path(root) if root else root_of_source(self.get("source"))

    @_guard
    def set_gallery_root(self, root: Path, paths: Iterable[tuple[str, str | None]] = ()) -> None:
        """Point the index at ``root`` and set the image paths of some items (id, absolute path)
        in one transaction: a moved gallery is re-pointed with no item re-encoded. Paths are
        not part of a build, so the items version is unchanged."""
        root = Path(root)
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO settings VALUES (?, ?)", (GALLERY_ROOT, str(root)))
            self.db.executemany(
                "UPDATE items SET path=? WHERE id=?", [(stored_path(p, root), i) for i, p in paths]
            )

    @property
    def unit_vectors(self) -> bool:
        """Whether the index's encoder writes L2-normalised vectors (every built-in one does)."""
        spec = self.encoder_spec
        return bool(spec) and spec.split(":", 1)[0] in UNIT_NORM_ENCODERS

    @_guard
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
    @_guard
    def fingerprints(self) -> dict[str, tuple[str, str | None]]:
        """id -> (content hash, stat string) for change detection."""
        return {r[0]: (r[1], r[2]) for r in self.db.execute("SELECT id, hash, stat FROM items")}

    @_guard
    def image_paths(self) -> dict[str, str | None]:
        """id -> absolute image path (None: a caption-only item) of every item."""
        root = self.gallery_root
        return {i: absolute_path(p, root) for i, p in self.db.execute("SELECT id, path FROM items")}

    @_guard
    def upsert(self, rows: Iterable[tuple[StoredItem, str, str | None, np.ndarray]]) -> None:
        """Write one batch (item, hash, stat, vector) in a single transaction (bumps the items version)."""
        now = time.time()
        rows = list(rows)
        if not rows:
            return
        root = self.gallery_root if self.get(GALLERY_ROOT) else None
        with self.db:
            self._bump_version()
            self.db.executemany(
                "INSERT OR REPLACE INTO items (id, path, captions, meta, hash, stat, vec_source, vec, "
                "updated, vsum) VALUES (?,?,?,?,?,?,?,?,?,?)",
                [
                    (
                        it.id,
                        stored_path(it.path, root),
                        json.dumps(it.captions, ensure_ascii=False),
                        json.dumps(it.meta, ensure_ascii=False),
                        h,
                        st,
                        it.vec_source,
                        blob := np.asarray(v, dtype=np.float32).tobytes(),
                        now,
                        vec_checksum(it.id, blob),
                    )
                    for it, h, st, v in rows
                ],
            )

    @_guard
    def update_stat(self, updates: list[tuple[str, str]]) -> None:
        with self.db:
            self.db.executemany("UPDATE items SET stat=? WHERE id=?", [(s, i) for i, s in updates])

    @_guard
    def metas(self) -> dict[str, dict[str, Any]]:
        """id -> meta of every item (filling in photo metadata for an older index)."""
        return {i: json.loads(m) for i, m in self.db.execute("SELECT id, meta FROM items")}

    @_guard
    def update_meta(self, updates: list[tuple[str, dict[str, Any]]]) -> None:
        """New meta for unchanged items, vectors kept (bumps the items version: filters change)."""
        with self.db:
            self._bump_version()
            self.db.executemany(
                "UPDATE items SET meta=? WHERE id=?",
                [(json.dumps(m, ensure_ascii=False), i) for i, m in updates],
            )

    @_guard
    def delete(self, ids: Iterable[str]) -> int:
        ids = list(ids)
        if not ids:
            return 0
        with self.db:
            self._bump_version()
            self.db.executemany("DELETE FROM items WHERE id=?", [(i,) for i in ids])
            self.db.executemany("DELETE FROM generated WHERE id=?", [(i,) for i in ids])
        return len(ids)

    # generated captions ------------------------------------------------------------------------
    @_guard
    def generated_state(self) -> dict[str, tuple[str, str]]:
        """id -> (captioner spec, content hash) of every generated caption (what is up to date)."""
        return {r[0]: (r[1], r[2]) for r in self.db.execute("SELECT id, captioner, hash FROM generated")}

    @_guard
    def put_generated(self, rows: Iterable[tuple[str, str, str, str]]) -> None:
        """Store one batch of (id, captioner spec, caption, content hash) in one transaction; it
        bumps the items version, since BM25 documents are built from the captions."""
        rows = list(rows)
        if not rows:
            return
        with self.db:
            self._bump_version()
            self.db.executemany("INSERT OR REPLACE INTO generated VALUES (?,?,?,?)", rows)

    @_guard
    def generated(self, ids: list[str] | None = None) -> dict[str, tuple[str, str]]:
        """id -> (caption, captioner spec) for ``ids`` (all when None)."""
        if ids is None:
            return {i: (c, s) for i, s, c in self.db.execute("SELECT id, captioner, caption FROM generated")}
        out: dict[str, tuple[str, str]] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            q = f"SELECT id, captioner, caption FROM generated WHERE id IN ({','.join('?' * len(chunk))})"
            out.update({i: (c, s) for i, s, c in self.db.execute(q, chunk)})
        return out

    @_guard
    def _bump_version(self) -> None:
        """Inside the caller's transaction: the item set changed."""
        self.db.execute(
            "INSERT INTO settings VALUES ('items_version', '1') "
            "ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + 1"
        )

    @property
    def items_version(self) -> int:
        return int(self.get("items_version") or 0)

    def count(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM items").fetchone()[0])

    @_guard
    def snapshot(self, with_vectors: bool = True) -> tuple[int, list[str], np.ndarray, list[list[str]]]:
        """(items version, ids, vectors, captions) in id order (the order of every build),
        read in one transaction so the version names exactly this item set. Without
        ``with_vectors`` the matrix has no columns (a vector store holds the vectors). A vector
        whose checksum fails is never copied into a build: DamagedVectorsError."""
        with self.db:
            self.db.execute("BEGIN")  # a read transaction: one consistent view
            version = int(
                (self.db.execute("SELECT value FROM settings WHERE key='items_version'").fetchone() or [0])[0]
            )
            ids: list[str] = []
            vecs: list[np.ndarray] = []
            caps: list[list[str]] = []
            damaged: list[str] = []
            vsum = "vsum" if self.has_checksums else "NULL"
            query = f"SELECT id, vec, captions, {vsum} FROM items ORDER BY id"
            if not with_vectors:
                query = "SELECT id, NULL, captions, NULL FROM items ORDER BY id"
            for i, blob, c, crc in self.db.execute(query):
                ids.append(i)
                if with_vectors:
                    if self.has_checksums and crc != vec_checksum(i, blob):
                        damaged.append(i)
                    vecs.append(np.frombuffer(blob, dtype=np.float32))
                caps.append(json.loads(c))
        if damaged:
            raise DamagedVectorsError(damaged_message(self.root, damaged, self.get("source")))
        if not with_vectors:
            return version, ids, np.zeros((len(ids), 0), np.float32), caps
        dim = self.dim or (len(vecs[0]) if vecs else 0)
        matrix = np.vstack(vecs).astype(np.float32) if vecs else np.zeros((0, dim), np.float32)
        return version, ids, matrix, caps

    @_guard
    def ids(self) -> list[str]:
        """All item ids in build order."""
        return [r[0] for r in self.db.execute("SELECT id FROM items ORDER BY id")]

    @_guard
    def iter_rows(self) -> Iterator[tuple[str, bytes, str, str]]:
        """(id, vector blob, captions json, meta json) of every item (``convir check``)."""
        yield from self.db.execute("SELECT id, vec, captions, meta FROM items ORDER BY id")

    @_guard
    def damaged_vectors(self, thorough: bool = False) -> dict[str, str]:
        """id -> why its stored vector is damaged: checksum mismatch or none recorded, wrong
        size; ``thorough`` (``convir check``) also NaN/inf and norm (:func:`vector_problems`),
        which is what catches damage from before checksums were recorded."""
        out: dict[str, str] = {}
        vsum = "vsum" if self.has_checksums else "NULL"
        size = 4 * self.dim if self.dim else None
        unit = self.unit_vectors
        rows = self.db.execute(f"SELECT id, vec, {vsum} FROM items ORDER BY id")
        while chunk := rows.fetchmany(10_000):
            problems = vector_problems([b for _, b, _ in chunk], self.dim, unit) if thorough else None
            for n, (item_id, blob, crc) in enumerate(chunk):
                implausible = problems[n] if problems else None
                if size is not None and len(blob) != size:
                    out[item_id] = f"vector of {len(blob)} bytes, expected {size}"
                elif self.has_checksums and crc is not None and crc != vec_checksum(item_id, blob):
                    out[item_id] = "vector checksum mismatch" + (f" ({implausible})" if implausible else "")
                elif implausible:
                    out[item_id] = implausible
                elif self.has_checksums and crc is None:
                    out[item_id] = (
                        "no vector checksum (the vector failed the checks when checksums were added)"
                    )
        return out

    @_guard
    def integrity_check(self) -> list[str]:
        """SQLite's own PRAGMA integrity_check; [] when the database is sound."""
        rows = [r[0] for r in self.db.execute("PRAGMA integrity_check")]
        return [] if rows == ["ok"] else rows

    @_guard
    def items(self, ids: list[str]) -> dict[str, StoredItem]:
        """The stored items of ``ids`` (those that exist), image paths made absolute."""
        out: dict[str, StoredItem] = {}
        root = self.gallery_root
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            q = f"SELECT id, path, captions, meta, vec_source FROM items WHERE id IN ({marks})"
            for i, p, c, m, s in self.db.execute(q, chunk):
                out[i] = StoredItem(i, absolute_path(p, root), json.loads(c), json.loads(m), s)
        return out

    @_guard
    def vectors(self, ids: list[str]) -> dict[str, np.ndarray]:
        """id -> stored vector (vector stores re-score candidates from here, see convir.store)."""
        out: dict[str, np.ndarray] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for i, blob in self.db.execute(f"SELECT id, vec FROM items WHERE id IN ({marks})", chunk):
                out[i] = np.frombuffer(blob, dtype=np.float32)
        return out

    @_guard
    def ids_where(self, clause: str, params: list[Any]) -> list[str]:
        """Ids of items whose metadata satisfies a compiled filter (convir.store.filters)."""
        return [r[0] for r in self.db.execute(f"SELECT id FROM items WHERE {clause}", params)]

    # builds ---------------------------------------------------------------------------------
    @property
    def builds_dir(self) -> Path:
        from convir.index.build import BUILDS_DIR

        return self.root / BUILDS_DIR

    @property
    def published(self) -> str | None:
        """Generation readers are pointed at (its files may have been damaged since)."""
        return self.get("build")

    def current_build(self) -> Path | None:
        """Folder of the published build, or None if none was ever published."""
        gen = self.published
        return None if gen is None else self.builds_dir / gen

    @property
    def build_items_version(self) -> int | None:
        """Items version the published build was made from (None: unknown, older index)."""
        v = self.get("build_items_version")
        return int(v) if v is not None and v.isdigit() else None

    @_guard
    def reserve_generation(self) -> str:
        """A fresh generation name, never reused (a killed build's folder is just debris)."""
        with self.db:
            self.db.execute(
                "INSERT INTO settings VALUES ('build_counter', '1') "
                "ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + 1"
            )
            return str(self.db.execute("SELECT value FROM settings WHERE key='build_counter'").fetchone()[0])

    @_guard
    def publish_build(self, gen: str, items_version: int, ann: str) -> None:
        """Point readers at builds/<gen> (already complete on disk), in one transaction that
        also records the item set it was built from; refuses if the items changed since."""
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            row = self.db.execute("SELECT value FROM settings WHERE key='items_version'").fetchone()
            now = int(row[0]) if row else 0
            if now != items_version:
                raise ConvirError(
                    f"the items of {self.root} changed while building (version {items_version} -> {now}); "
                    "re-run the command"
                )
            self.db.executemany(
                "INSERT OR REPLACE INTO settings VALUES (?, ?)",
                [("build", gen), ("build_items_version", str(items_version)), ("ann", ann)],
            )

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None
