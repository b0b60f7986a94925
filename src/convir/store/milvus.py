"""The Milvus vector store: one collection per index directory, kept in step with SQLite.

Collection schema: ``id`` (VARCHAR primary key = the item id in convir.sqlite), ``vec``
(FLOAT_VECTOR, inner product; vectors are L2-normalised so that is cosine) and ``meta`` (JSON:
the item's metadata, so ``--where`` filters run inside the engine).

**Keeping Milvus and SQLite in step.** SQLite is the source of truth; Milvus is brought to it
by :meth:`MilvusStore.sync` in the build step of every ``convir index`` run, before the build
is published (:func:`convir.gallery.ingest.build`). A journal table in convir.sqlite,
``vector_sync(id, ver, state)``, records what Milvus holds: a row is written *before* its
item is sent (state 0, "maybe in Milvus") and confirmed (state 1) after Milvus acknowledged
the upsert; a deleted item's row goes only after Milvus acknowledged the delete. So a run
killed at any point (or a Milvus server that goes down mid-ingest) leaves every id Milvus may
hold listed in the journal; the next run re-sends unconfirmed or changed items and deletes
journal ids SQLite no longer has. Nothing is in Milvus that SQLite does not know about, and
the build that readers use is published only once Milvus holds exactly SQLite's items.
A fresh journal facing a non-empty collection (``--rebuild``, a re-created index folder)
first lists the collection's ids, so stray ids are deleted too.

Readers search the live collection; hits whose id is not in the published build (a writer
is mid-sync) are dropped and the search widened, so results always map to build positions.
Exact vectors for re-scoring (hybrid fusion, IVF_PQ refinement, the conversation loop) are
read from SQLite by id (:class:`SqliteVectors`): the index folder holds no vector files.

Milvus Lite (``milvus:PATH.db``) is a library serving one process at a time: a running
``convir serve`` keeps its database open, so stop it before ``convir index`` (or use a server).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from convir.errors import ConvirError
from convir.store import MILVUS_INDEX_TYPES, StoreSpec, require_pymilvus

SYNC_TABLE = "vector_sync"
SYNC_TARGET = "vector_sync_target"  # settings key: which collection the journal describes
SYNC_BATCH = 1000
TOKEN_ENV = "MILVUS_TOKEN"
DB_ENV = "MILVUS_DB"
TIMEOUT_ENV = "CONVIR_MILVUS_TIMEOUT"
SEGMENT_ENV = "CONVIR_MILVUS_SEGMENT_MB"
SEGMENT_MB = 1024  # Milvus' dataCoord.segment.maxSize default since 2.4 (512 before)
MAX_LIMIT = 16384  # Milvus' topk limit
ID_MAX_LEN = 65535

_SCHEMA = (
    f"CREATE TABLE IF NOT EXISTS {SYNC_TABLE} (id TEXT PRIMARY KEY, ver TEXT NOT NULL, state INT NOT NULL)"
)
_VER = "i.hash || ':' || CAST(i.updated AS TEXT)"


class MilvusStoreError(ConvirError):
    """Milvus could not be reached or refused an operation (the message names the URI)."""


def segment_rows(dim: int) -> int:
    """Vectors in one sealed Milvus segment (its size limit over 4 bytes per dimension).

    The limit is the server's ``dataCoord.segment.maxSize``: 1,024 MB by default since Milvus 2.4,
    512 MB in 2.3; set CONVIR_MILVUS_SEGMENT_MB for a server that differs."""
    raw = os.environ.get(SEGMENT_ENV, "").strip()
    try:
        mb = float(raw) if raw else SEGMENT_MB
    except ValueError:
        raise MilvusStoreError(f"{SEGMENT_ENV}={raw!r} is not a number of megabytes") from None
    if mb <= 0:
        raise MilvusStoreError(f"{SEGMENT_ENV}={raw!r} must be positive")
    return max(1, int(mb * 2**20 // (4 * dim)))


def milvus_nlist(n_items: int, dim: int) -> int:
    """IVF lists for a Milvus index: 4 sqrt(n) with n the rows of one *segment*, not the collection.

    Milvus trains and builds an IVF index per segment (its performance FAQ states the rule with
    n = the rows a segment holds at its maximum size), so the collection-wide 4 sqrt(N) that faiss
    uses gives every segment far more lists than its rows support: at 1M x 384 that was 4,000
    lists per segment, whose k-means had not finished after 25 minutes on 2 cores (a 2.3
    server, 512 MB segments; per segment the rule gives 2,364)."""
    n = max(min(n_items, segment_rows(dim)), 1000)
    return max(16, min(int(4 * math.sqrt(n)), 65536))


def _quiet() -> None:
    for name in ("pymilvus", "milvus_lite", "grpc"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


class MilvusStore:
    """A connection to the collection of one index directory."""

    def __init__(self, spec: StoreSpec, root: Path, collection: str) -> None:
        self.spec = spec
        self.root = Path(root)
        self.collection = collection
        self.uri = str(spec.lite_path(self.root.expanduser().resolve())) if spec.is_lite else str(spec.uri)
        self._client: Any = None
        self._loaded = False

    @property
    def target(self) -> str:
        """Identity of the collection for the sync journal: the recorded URI (a Lite path
        inside the index stays relative, so a moved or copied index keeps its journal)."""
        return f"{self.spec.uri}#{self.collection}"

    @property
    def where(self) -> str:
        return f"the Milvus store at {self.uri} (collection {self.collection})"

    # connection ---------------------------------------------------------------------------
    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = self._connect()
        return self._client

    def _connect(self) -> Any:
        pymilvus = require_pymilvus(self.spec)
        _quiet()
        timeout = float(os.environ.get(TIMEOUT_ENV, "10"))
        if self.spec.is_lite:
            path = Path(self.uri)
            if not path.parent.is_dir():
                raise MilvusStoreError(
                    f"cannot open Milvus Lite database {path}: {path.parent} does not exist"
                )
            try:
                return pymilvus.MilvusClient(str(path), timeout=timeout)
            except Exception as exc:
                if _lite_locked(path):
                    raise MilvusStoreError(
                        f"the Milvus Lite database {path} is open in another process (a running `convir "
                        "serve` or `convir index`?): Milvus Lite serves one process at a time; stop that "
                        "process, or use a Milvus server (milvus:http://host:19530)"
                    ) from exc
                raise MilvusStoreError(f"cannot open Milvus Lite database {path}: {_reason(exc)}") from exc
        try:
            return pymilvus.MilvusClient(
                uri=self.uri,
                token=os.environ.get(TOKEN_ENV, ""),
                db_name=os.environ.get(DB_ENV, ""),
                timeout=timeout,
            )
        except Exception as exc:
            raise MilvusStoreError(
                f"cannot reach the Milvus store at {self.uri}: {_reason(exc)} (is the server up? "
                f"token from ${TOKEN_ENV}, database from ${DB_ENV}, timeout ${TIMEOUT_ENV}={timeout:g}s)"
            ) from exc

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """A Milvus call whose failure is one clear line naming the store."""
        try:
            return fn(*args, **kwargs)
        except ConvirError:
            raise
        except Exception as exc:
            raise MilvusStoreError(f"{self.where} failed to {what}: {_reason(exc)}") from exc

    def close(self) -> None:
        client, self._client = self._client, None
        self._loaded = False
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()
        if self.spec.is_lite:  # let other processes open the database now
            with contextlib.suppress(Exception):
                from milvus_lite.server_manager import server_manager_instance

                server_manager_instance.release_server(self.uri)

    # collection ---------------------------------------------------------------------------
    def exists(self) -> bool:
        return bool(self._call("list collections", self.client.has_collection, self.collection))

    def ensure_collection(self, dim: int, ann_kind: str, n_items: int, owned: bool) -> None:
        """Create the collection (or adapt its index to ``ann_kind``) and load it for search.

        ``owned``: this index created it, so a dimension change may drop and recreate it."""
        from pymilvus import DataType

        c = self.client
        if self.exists():
            have = self._dim()
            if have != dim:
                if not owned:
                    raise MilvusStoreError(
                        f"{self.where} holds {have}-dimensional vectors, the encoder gives {dim}: "
                        "name another collection with --store milvus:URI#NAME"
                    )
                self._call("drop the collection", c.drop_collection, self.collection)
        if not self.exists():
            schema = c.create_schema(auto_id=False, enable_dynamic_field=False)
            schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=ID_MAX_LEN)
            schema.add_field("vec", DataType.FLOAT_VECTOR, dim=dim)
            schema.add_field("meta", DataType.JSON)
            self._call(
                "create the collection",
                c.create_collection,
                self.collection,
                schema=schema,
                index_params=self._index_params(ann_kind, dim, n_items),
                consistency_level="Strong",
            )
        elif self.index_type() != MILVUS_INDEX_TYPES[ann_kind]:
            self._call("release the collection", c.release_collection, self.collection)
            self._call("drop the old index", c.drop_index, self.collection, "vec")
            self._call(
                "create the index",
                c.create_index,
                self.collection,
                self._index_params(ann_kind, dim, n_items),
            )
        self._call("load the collection", c.load_collection, self.collection)
        self._loaded = True

    def _dim(self) -> int | None:
        desc = self._call("describe the collection", self.client.describe_collection, self.collection)
        for f in desc.get("fields", []):
            if f.get("name") == "vec":
                return int((f.get("params") or {}).get("dim", 0))
        return None

    def ensure_loaded(self) -> None:
        """Load the collection for search and query unless it already is (idempotent, cheap;
        Milvus Lite releases every collection when the process that served it ends)."""
        if self._loaded:
            return
        state = self._call("read the load state", self.client.get_load_state, self.collection)
        if "Loaded" not in str(state.get("state") if isinstance(state, dict) else state):
            self._call("load the collection", self.client.load_collection, self.collection)
        self._loaded = True

    def index_type(self) -> str | None:
        with contextlib.suppress(Exception):
            return str(self.client.describe_index(self.collection, "vec").get("index_type"))
        return None

    def _index_params(self, ann_kind: str, dim: int, n_items: int) -> Any:
        """--ann -> Milvus index (same parameters as the faiss indexes, convir.index.vector)."""
        from convir.index.vector import AnnParams, ivfpq_layout

        p = AnnParams()
        ip = self.client.prepare_index_params()
        kind = MILVUS_INDEX_TYPES[ann_kind]
        params: dict[str, Any] = {}
        if kind == "HNSW":
            params = {"M": p.hnsw_m, "efConstruction": p.hnsw_ef_construction}
        elif kind == "IVF_PQ":
            m = ivfpq_layout(max(n_items, 1), dim)[1]  # the faiss index's sub-vectors
            params = {"nlist": milvus_nlist(n_items, dim), "m": m, "nbits": 8}
        ip.add_index("vec", index_type=kind, metric_type="IP", params=params)
        return ip

    def count(self) -> int:
        self.ensure_loaded()
        rows = self._call(
            "count its entities",
            self.client.query,
            self.collection,
            filter="",
            output_fields=["count(*)"],
            consistency_level="Strong",
        )
        return int(rows[0]["count(*)"]) if rows else 0

    def all_ids(self, batch: int = 10000) -> Iterator[str]:
        """Every id in the collection (paged by primary key, so it scales to any size)."""
        self.ensure_loaded()
        last: str | None = None
        while True:
            expr = "" if last is None else f"id > {_quote(last)}"
            rows = self._call(
                "list its ids",
                self.client.query,
                self.collection,
                filter=expr,
                output_fields=["id"],
                limit=batch,
                consistency_level="Strong",
            )
            if not rows:
                return
            ids = sorted(r["id"] for r in rows)
            yield from ids
            if len(rows) < batch:
                return
            last = ids[-1]

    # writing ------------------------------------------------------------------------------
    def sync(
        self,
        store: Any,
        ann_kind: str,
        full: bool = False,
        checkpoint: Callable[[str], None] | None = None,
    ) -> dict[str, int]:
        """Make the collection hold exactly the items of ``store`` (see the module docstring)."""
        db = store.db
        target = self.target
        with db:
            db.execute(_SCHEMA)
        owned = store.get("milvus_created") == target
        if store.get(SYNC_TARGET) != target or full:
            with db:  # the journal describes another collection: start it afresh
                db.execute(f"DELETE FROM {SYNC_TABLE}")
                db.execute("INSERT OR REPLACE INTO settings VALUES (?, ?)", (SYNC_TARGET, target))
        existed = self.exists()
        self.ensure_collection(int(store.dim), ann_kind, store.count(), owned)
        if not existed:  # a new collection holds nothing, whatever the journal says
            with db:
                db.execute(f"DELETE FROM {SYNC_TABLE}")
            store.set("milvus_created", target)
        journal = int(db.execute(f"SELECT COUNT(*) FROM {SYNC_TABLE}").fetchone()[0])
        if journal == 0 and existed:
            # a collection we have no journal for: every id it holds is "maybe ours"
            for chunk in _chunks(self.all_ids(), SYNC_BATCH):
                with db:
                    db.executemany(
                        f"INSERT OR IGNORE INTO {SYNC_TABLE} VALUES (?, '', 0)", [(i,) for i in chunk]
                    )
        pushed = self._push(store, checkpoint)
        deleted = self._delete_stale(store, checkpoint)
        if not full and self.count() != store.count():
            # the collection lost or gained entities behind the journal's back: reconcile by id
            return self.sync(store, ann_kind, full=True, checkpoint=checkpoint)
        return {"pushed": pushed, "deleted": deleted}

    def _push(self, store: Any, checkpoint: Callable[[str], None] | None) -> int:
        db = store.db
        todo = [
            r[0]
            for r in db.execute(
                f"SELECT i.id FROM items i LEFT JOIN {SYNC_TABLE} s ON s.id = i.id "
                f"WHERE s.id IS NULL OR s.state = 0 OR s.ver <> {_VER} ORDER BY i.id"
            )
        ]
        for chunk in _chunks(iter(todo), SYNC_BATCH):
            marks = ",".join("?" * len(chunk))
            rows = db.execute(
                f"SELECT i.id, i.vec, i.meta, {_VER} FROM items i WHERE i.id IN ({marks})", chunk
            ).fetchall()
            with db:  # write-ahead: these ids may be in Milvus from now on
                db.executemany(
                    f"INSERT OR REPLACE INTO {SYNC_TABLE} VALUES (?, ?, 0)", [(r[0], r[3]) for r in rows]
                )
            data = [
                {"id": r[0], "vec": np.frombuffer(r[1], dtype=np.float32).tolist(), "meta": _meta(r[2])}
                for r in rows
            ]
            self._call("store vectors", self.client.upsert, self.collection, data)
            if checkpoint:
                checkpoint("sync")
            with db:
                db.executemany(f"UPDATE {SYNC_TABLE} SET state = 1 WHERE id = ?", [(r[0],) for r in rows])
        return len(todo)

    def _delete_stale(self, store: Any, checkpoint: Callable[[str], None] | None) -> int:
        db = store.db
        stale = [
            r[0]
            for r in db.execute(
                f"SELECT s.id FROM {SYNC_TABLE} s LEFT JOIN items i ON i.id = s.id WHERE i.id IS NULL"
            )
        ]
        for chunk in _chunks(iter(stale), SYNC_BATCH):
            self._call("delete vectors", self.client.delete, self.collection, ids=list(chunk))
            if checkpoint:
                checkpoint("sync-delete")
            with db:
                db.executemany(f"DELETE FROM {SYNC_TABLE} WHERE id = ?", [(i,) for i in chunk])
        return len(stale)

    def out_of_step(self, store: Any) -> str | None:
        """Why the collection may not hold exactly SQLite's items (an interrupted sync), or None."""
        db = store.db
        if store.get(SYNC_TARGET) != self.target:
            return f"{self.where} was never brought in step with this index"
        if not db.execute(f"SELECT name FROM sqlite_master WHERE name = '{SYNC_TABLE}'").fetchone():
            return f"{self.where} has no sync journal"
        unsent = db.execute(
            f"SELECT COUNT(*) FROM items i LEFT JOIN {SYNC_TABLE} s ON s.id = i.id "
            f"WHERE s.id IS NULL OR s.state = 0 OR s.ver <> {_VER}"
        ).fetchone()[0]
        stale = db.execute(
            f"SELECT COUNT(*) FROM {SYNC_TABLE} s LEFT JOIN items i ON i.id = s.id WHERE i.id IS NULL"
        ).fetchone()[0]
        if unsent or stale:
            return (
                f"{self.where} is missing {unsent} item(s) and holds {stale} removed one(s) "
                "(an interrupted sync)"
            )
        if not self.exists():
            return f"{self.where} does not exist (dropped?)"
        have, want = self.count(), store.count()
        if have != want:
            return f"{self.where} holds {have} vectors, convir.sqlite {want} items"
        return None

    # searching ----------------------------------------------------------------------------
    def search(
        self, queries: np.ndarray, limit: int, ann_kind: str, expr: str | None = None
    ) -> list[list[tuple[str, float]]]:
        """(id, inner product) hits per query, best first."""
        from convir.index.vector import AnnParams

        # Milvus searches each segment's own graph / lists, so the effort is sized for one
        # full segment (128 / 32 at the usual dimensions), not for the collection
        dim = int(np.shape(queries)[-1])
        p, rows = AnnParams(), segment_rows(dim)
        params: dict[str, Any] = {}
        if ann_kind == "hnsw":
            params = {"ef": max(p.ef_search(rows), limit)}
        elif ann_kind == "ivfpq":
            params = {"nprobe": p.nprobe(milvus_nlist(rows, dim))}  # 32
        res = self._call(
            "search",
            self.client.search,
            self.collection,
            data=[np.asarray(q, dtype=np.float32).tolist() for q in queries],
            limit=int(min(limit, MAX_LIMIT)),
            filter=expr or "",
            output_fields=[],
            search_params={"metric_type": "IP", "params": params},
            anns_field="vec",
        )
        return [[(str(h["id"]), float(h["distance"])) for h in hits] for hits in res]


def _quote(s: str) -> str:
    import json

    return json.dumps(s, ensure_ascii=False)


def _meta(text: str) -> dict[str, Any]:
    import json

    try:
        meta = json.loads(text)
    except ValueError:
        return {}
    return meta if isinstance(meta, dict) else {}


def _chunks(it: Iterator[str], n: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for x in it:
        chunk.append(x)
        if len(chunk) >= n:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _reason(exc: BaseException) -> str:
    msg = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return " ".join(str(msg).split())[:300]


def _lite_locked(path: Path) -> bool:
    """Whether another process holds Milvus Lite's lock on ``path`` (its LOCK file)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover
        return False
    lock = path / "LOCK"
    if not lock.exists():
        return False
    fd = os.open(lock, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def open_milvus(store: Any, spec: StoreSpec) -> MilvusStore:
    """The MilvusStore recorded for an index (the collection name is recorded on first use)."""
    from convir.store import default_collection

    name = spec.collection or store.get("milvus_collection") or default_collection(store.root)
    return MilvusStore(spec, store.root, name)


class SqliteVectors:
    """The exact item vectors of a build read from convir.sqlite by position, on demand.

    Looks like the (n, dim) float32 matrix the faiss builds keep in vectors.npy to the code
    that re-scores a few candidates (``vectors[positions]``); ``np.asarray`` reads them all
    (evaluation over a whole gallery). Items removed since the build read as zero vectors."""

    dtype = np.dtype(np.float32)
    ndim = 2

    def __init__(self, store: Any, ids: Sequence[str], dim: int) -> None:
        self._store = store
        self._ids = ids
        self.shape = (len(ids), int(dim))
        self._all: np.ndarray | None = None

    def __len__(self) -> int:
        return self.shape[0]

    def _read(self, positions: np.ndarray) -> np.ndarray:
        out = np.zeros((len(positions), self.shape[1]), dtype=np.float32)
        if self._all is not None:
            return self._all[positions]
        ids = [self._ids[int(p)] for p in positions]
        found = self._store.vectors(ids)
        for row, item_id in enumerate(ids):
            v = found.get(item_id)
            if v is not None and v.shape[0] == self.shape[1]:
                out[row] = v
        return out

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            return self._read(np.asarray([int(key)]))[0]
        positions = np.arange(self.shape[0])[key]
        return self._read(np.atleast_1d(positions))

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        if self._all is None:
            self._all = self._read(np.arange(self.shape[0]))
        return self._all if dtype is None else self._all.astype(dtype)

    @property
    def T(self) -> np.ndarray:
        return np.asarray(self).T


class MilvusAnn:
    """Dense search of one build through its Milvus collection; same interface as
    :class:`convir.index.vector.AnnIndex` (positions into the build, exact cosines)."""

    def __init__(self, milvus: MilvusStore, ids: list[str], vectors: SqliteVectors, kind: str) -> None:
        from convir.index.vector import AnnParams

        self.milvus = milvus
        self.ids = ids
        self.position = {item_id: i for i, item_id in enumerate(ids)}
        self.vectors = vectors
        self.kind = kind
        self.params = AnnParams()

    def __len__(self) -> int:
        return len(self.ids)

    def search(self, queries: np.ndarray, k: int, flt: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """(scores, positions) of shape (m, min(k, n)), best first; -1 pads short rows."""
        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        k = min(k, len(self))
        if k <= 0:
            return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
        expr = flt.where.milvus() if flt is not None else None
        refine = self.kind == "ivfpq"
        want = self.params.candidates(k, len(self)) if refine else k
        out_s = np.full((len(q), k), -np.inf, np.float32)
        out_p = np.full((len(q), k), -1, np.int64)
        for row in range(len(q)):
            limit = want + 8
            while True:
                hits = self.milvus.search(q[row : row + 1], limit, self.kind, expr)[0]
                pos = [(self.position[i], s) for i, s in hits if i in self.position]
                if len(pos) >= want or len(hits) < limit or limit >= MAX_LIMIT:
                    break
                limit = min(limit * 4, MAX_LIMIT)  # a writer is mid-sync: ids not in this build
            if not pos:
                continue
            p = np.asarray([x[0] for x in pos], np.int64)
            s = np.asarray([x[1] for x in pos], np.float32)
            if refine:  # PQ distances are approximate: re-score exactly, as the faiss ivfpq does
                s = np.asarray(self.vectors[p], dtype=np.float32) @ q[row]
            order = np.lexsort((p, -s))[:k]
            out_s[row, : len(order)], out_p[row, : len(order)] = s[order], p[order]
        return out_s, out_p
