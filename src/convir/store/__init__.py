"""Vector store backends: where the dense vectors of an index directory are searched.

``convir index GALLERY --out IX --store SPEC`` picks one; the choice is recorded in
``IX/convir.sqlite`` so ``search``, ``chat``, ``serve`` and ``eval`` open the index unchanged.
SQLite stays the source of truth for items (ids, captions, metadata, vectors) and BM25 stays
beside the index in every case; only dense ranking moves:

* ``faiss`` (default): faiss files inside the index directory (:mod:`convir.index.build`).
* ``milvus:URI``: a Milvus collection - a server or cluster (``milvus:http://host:19530``,
  token from ``MILVUS_TOKEN``) or Milvus Lite, a local database folder
  (``milvus:./gallery.db``). ``milvus:URI#NAME`` names the collection. See
  :mod:`convir.store.milvus`.

The kinds live in :data:`STORE_KINDS`, the one place to move them into a component registry.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from convir.errors import ConvirError

STORE_KINDS: dict[str, str] = {
    "faiss": "faiss files inside the index directory (default; one machine)",
    "milvus": "Milvus: milvus:http://host:19530 (server/cluster, token from MILVUS_TOKEN) or "
    "milvus:./gallery.db (Milvus Lite); milvus:URI#COLLECTION names the collection",
}
DEFAULT_STORE = "faiss"
log = logging.getLogger("convir.store")
STORE_SETTING = "store"  # convir.sqlite settings key: the recorded store (JSON)
# --ann kind -> Milvus index type; lsh has no Milvus counterpart
MILVUS_INDEX_TYPES = {"flat": "FLAT", "hnsw": "HNSW", "ivfpq": "IVF_PQ"}


@dataclass(frozen=True)
class StoreSpec:
    """A parsed ``--store``. For Milvus Lite ``uri`` is the database folder: absolute, or
    relative to the index directory when the folder lies inside it (so the index can move)."""

    kind: str
    uri: str | None = None
    collection: str | None = None

    @property
    def is_lite(self) -> bool:
        return self.kind == "milvus" and not str(self.uri).startswith(("http://", "https://", "tcp://"))

    def lite_path(self, root: Path) -> Path:
        path = Path(str(self.uri))
        return path if path.is_absolute() else Path(root) / path

    def display(self, root: Path | None = None) -> str:
        """The spec as a user writes it (Lite paths resolved against ``root``)."""
        if self.kind == "faiss":
            return "faiss"
        uri = str(self.lite_path(root)) if self.is_lite and root is not None else str(self.uri)
        return f"milvus:{uri}#{self.collection}" if self.collection else f"milvus:{uri}"

    def to_json(self) -> str:
        return json.dumps({"kind": self.kind, "uri": self.uri, "collection": self.collection})

    @classmethod
    def from_json(cls, text: str | None) -> StoreSpec:
        if not text:
            return cls(DEFAULT_STORE)
        d = json.loads(text)
        return cls(d["kind"], d.get("uri"), d.get("collection"))


def parse_store(text: str, root: Path) -> StoreSpec:
    """``faiss`` | ``milvus:URI[#COLLECTION]`` -> StoreSpec, checked before anything loads.

    A Milvus Lite path is taken relative to the working directory, as typed, and recorded
    relative to the index directory ``root`` when it lies inside it."""
    from convir.specs import parse_spec

    spec = parse_spec(text, STORE_KINDS)
    if spec.kind == "faiss":
        if spec.rest:
            raise ConvirError(f"--store faiss takes no value (got {text!r}); the files live in --out")
        return StoreSpec("faiss")
    uri, _, collection = spec.rest.partition("#")
    uri, collection = uri.strip(), collection.strip() or None
    if not uri:
        raise ConvirError(
            "--store milvus needs a URI: milvus:http://host:19530 (a Milvus server) or "
            "milvus:./gallery.db (Milvus Lite, a local database)"
        )
    if collection is not None and not _valid_collection(collection):
        raise ConvirError(
            f"Milvus collection name {collection!r}: use letters, digits and _, starting with a letter or _"
        )
    if uri.startswith(("http://", "https://", "tcp://")):
        return StoreSpec("milvus", uri.rstrip("/"), collection)
    if "://" in uri:
        raise ConvirError(f"--store milvus:{uri}: a server URI starts with http:// or https://")
    if not uri.endswith(".db"):
        raise ConvirError(
            f"--store milvus:{uri}: a Milvus Lite database path ends in .db (e.g. milvus:IX/milvus.db); "
            "a server URI starts with http://"
        )
    path = Path(uri).expanduser().resolve()
    if path.exists() and not path.is_dir():
        raise ConvirError(
            f"--store milvus:{uri}: {path} is a file; Milvus Lite keeps its database in a folder"
        )
    root = Path(root).expanduser().resolve()
    recorded = str(path.relative_to(root)) if path.is_relative_to(root) else str(path)
    return StoreSpec("milvus", recorded, collection)


def _valid_collection(name: str) -> bool:
    return (
        bool(name)
        and len(name) <= 255
        and (name[0].isalpha() or name[0] == "_")
        and all(c.isalnum() or c == "_" for c in name)
        and name.isascii()
    )


def default_collection(root: Path) -> str:
    """A stable collection name per index directory (recorded, so moving the folder keeps it)."""
    digest = hashlib.sha1(str(Path(root).expanduser().resolve()).encode()).hexdigest()[:12]
    return f"convir_{digest}"


def check_ann_for_store(spec: StoreSpec, ann_kind: str) -> None:
    """The --ann kinds a store can serve; a clear error before anything is encoded."""
    if spec.kind != "milvus":
        return
    if ann_kind not in MILVUS_INDEX_TYPES:
        raise ConvirError(
            f"--ann {ann_kind} is faiss-only; with a Milvus store use one of: "
            + ", ".join(f"{k} ({v})" for k, v in MILVUS_INDEX_TYPES.items())
        )
    if spec.is_lite and ann_kind == "ivfpq":
        raise ConvirError(
            "Milvus Lite has no IVF_PQ index (it offers FLAT, HNSW, IVF_FLAT, IVF_SQ8): use --ann hnsw "
            "or flat with a milvus:PATH store, or a Milvus server for ivfpq"
        )
    if not spec.is_lite and ann_kind == "ivfpq":
        from convir.store.milvus import segment_rows

        segment_rows(1)  # a bad CONVIR_MILVUS_SEGMENT_MB is reported now, not after encoding
    if spec.is_lite and ann_kind != "flat":
        # measured (docs/benchmarks.md, Scale): Lite with HNSW answered in 1.4 s at 1M items
        # with recall 1.0, a Milvus server with the same HNSW in milliseconds
        log.warning(
            "Milvus Lite accepts --ann %s but does not search like an ANN index (its documentation: "
            "it uses FLAT whatever the index type; measured: 1.4 s per query at 1M items): fine for "
            "development, use a Milvus server (milvus:http://...) for approximate search at scale",
            ann_kind,
        )


def require_pymilvus(spec: StoreSpec) -> Any:
    """pymilvus (and milvus-lite for a local database), or a one-line install hint."""
    try:
        import pymilvus
    except ImportError as exc:
        raise ConvirError(f"the milvus store needs pymilvus: pip install 'convir[scale]' ({exc})") from exc
    if spec.is_lite:
        try:
            import milvus_lite  # noqa: F401
        except ImportError as exc:
            raise ConvirError(
                f"a local milvus:PATH store needs Milvus Lite: pip install 'convir[scale]' ({exc})"
            ) from exc
    return pymilvus


def recorded_store(sqlite_store: Any) -> StoreSpec:
    """The store an index directory was built with (faiss for indexes older than stores)."""
    return StoreSpec.from_json(sqlite_store.get(STORE_SETTING))


def store_from_builds(root: Path) -> StoreSpec | None:
    """The store named by the newest build.json (when convir.sqlite was set aside by --rebuild)."""
    found: list[tuple[float, dict[str, Any]]] = []
    for info in Path(root).glob("builds/*/build.json"):
        try:
            store = json.loads(info.read_text(encoding="utf-8")).get("store")
            if isinstance(store, dict) and store.get("kind"):
                found.append((info.stat().st_mtime, store))
        except (OSError, ValueError, AttributeError):
            continue
    if not found:
        return None
    d = max(found, key=lambda x: x[0])[1]
    return StoreSpec(d["kind"], d.get("uri"), d.get("collection"))


def build_store_info(sqlite_store: Any, spec: StoreSpec) -> dict[str, Any] | None:
    """What build.json records about the store (None: faiss, vectors in the build)."""
    if spec.kind == "faiss":
        return None
    from convir.store.milvus import open_milvus

    return {"kind": spec.kind, "uri": spec.uri, "collection": open_milvus(sqlite_store, spec).collection}


def open_build_ann(build: Any, sqlite_store: Any) -> tuple[Any, Any]:
    """(ann, vectors) of an opened store build, for :class:`convir.index.ranker.Ranker`."""
    from convir.store.milvus import MilvusAnn, MilvusStore, SqliteVectors

    info = build.info["store"]
    spec = StoreSpec(info["kind"], info.get("uri"), info.get("collection"))
    if spec.kind != "milvus":  # pragma: no cover - a newer convir's store
        raise ConvirError(f"index {build.path.parent.parent} uses vector store {spec.kind!r}: upgrade convir")
    milvus = MilvusStore(spec, sqlite_store.root, info["collection"])
    if not milvus.exists():
        raise ConvirError(
            f"{milvus.where} does not exist (dropped?): re-run `convir index` on this index to refill it"
        )
    milvus.ensure_loaded()
    vectors = SqliteVectors(sqlite_store, build.ids, int(build.info["dim"]))
    return MilvusAnn(milvus, build.ids, vectors, build.info["ann"]), vectors


def sync_store(
    sqlite_store: Any, spec: StoreSpec, ann_kind: str, full: bool, checkpoint: Any = None
) -> dict[str, int] | None:
    """Bring the vector store to SQLite's items before a build is published (faiss: nothing)."""
    if spec.kind == "faiss":
        return None
    from convir.store.milvus import open_milvus

    milvus = open_milvus(sqlite_store, spec)
    try:
        if sqlite_store.get("milvus_collection") != milvus.collection:
            sqlite_store.set("milvus_collection", milvus.collection)
        return milvus.sync(sqlite_store, ann_kind, full=full, checkpoint=checkpoint)
    finally:
        milvus.close()


def store_out_of_step(sqlite_store: Any, spec: StoreSpec) -> str | None:
    """Why the vector store may not hold exactly SQLite's items, or None (faiss: never)."""
    if spec.kind == "faiss":
        return None
    from convir.store.milvus import open_milvus

    milvus = open_milvus(sqlite_store, spec)
    try:
        return milvus.out_of_step(sqlite_store)
    finally:
        milvus.close()


def check_reachable(sqlite_store: Any, spec: StoreSpec) -> None:
    """Connect once (a clear error naming the URI) before any model loads or item is encoded."""
    if spec.kind == "faiss":
        return
    from convir.store.milvus import open_milvus

    milvus = open_milvus(sqlite_store, spec)
    try:
        milvus.exists()
    finally:
        milvus.close()


CHECK_IDS_UP_TO = 2_000_000  # `convir check` compares every id up to this many items, else counts


def check_store(sqlite_store: Any, info: dict[str, Any]) -> tuple[str, list[str]]:
    """(ok line, problems) of the vector store behind a published build (``convir check``)."""
    from convir.store.milvus import MilvusStore

    d = info["store"]
    spec = StoreSpec(d["kind"], d.get("uri"), d.get("collection"))
    milvus = MilvusStore(spec, sqlite_store.root, d["collection"])
    try:
        if not milvus.exists():
            return "", [f"{milvus.where} does not exist (dropped?)"]
        problems: list[str] = []
        why = milvus.out_of_step(sqlite_store)
        if why:
            problems.append(why)
        n = sqlite_store.count()
        if not problems and n <= CHECK_IDS_UP_TO:
            have, want = set(milvus.all_ids()), set(sqlite_store.ids())
            if have != want:
                problems.append(
                    f"{milvus.where} and convir.sqlite disagree: {len(want - have)} items missing from "
                    f"Milvus, {len(have - want)} ids in Milvus that convir.sqlite does not have"
                )
        index = milvus.index_type()
        return f"vector store: {milvus.where}, {n} vectors, index {index}", problems
    finally:
        milvus.close()
