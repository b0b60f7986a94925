"""Build generations: the derived, read-only search files of one index directory.

Layout of one generation (``INDEX_DIR/builds/<gen>/``)::

    vectors.npy    (n, dim) float32, row i = item ids[i]
    ids.json       position -> item id (items in id order)
    ann.faiss      the ANN index (absent for 'flat', which searches vectors.npy)
    bm25/          bm25s index over the item documents + tokenizer.json (absent when the
                   gallery has no caption text)
    build.json     what was built: count, dim, encoder, ann, the items version it was built
                   from, the vector store, the BM25 tokenizer settings and parameters, and
                   the sha256 of every other file of the generation ("files")

Checksums: ``Build`` (every reader: search, serve, chat) hashes vectors.npy, ids.json and
ann.faiss once when it opens a generation, and the BM25 files when it loads them, and refuses
a generation whose files differ from build.json (BuildError). ``convir index`` and
``convir check`` hash every file. Cost: one sha256 pass, ~0.8 s per GB on a core with SHA
extensions (1.2 s for 1M x 384 float32, about what loading it takes), once per process.

With a vector store other than faiss (``--store milvus:...``, :mod:`convir.store`) the dense
vectors live in the store: the generation has no vectors.npy or ann.faiss, ``build.json``
names the store, and exact vectors are read from convir.sqlite.

A generation is written into a temporary folder, its files fsync'ed, and renamed into place
before SQLite points at it (:meth:`convir.gallery.store.Store.publish_build`), so readers
always see a complete build. A reader pins the generation it serves with a shared ``flock``
on its ``build.json``; a writer removes old generations only when no reader pins them, so a
running server keeps serving the last good build while ``convir index`` publishes a new one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from convir.atomic import atomic_dir
from convir.errors import ConvirError

try:  # POSIX; without it (Windows) builds are simply not pinned
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

BUILDS_DIR = "builds"
VECTORS_FILE = "vectors.npy"
IDS_FILE = "ids.json"
ANN_FILE = "ann.faiss"
BM25_DIR = "bm25"
INFO_FILE = "build.json"
# 3: build.json records the sha256 of every file ("files")
BUILD_FORMAT = 3
MMAP_ABOVE_BYTES = 2 * 1024**3

Checkpoint = Callable[[str], None]


class BuildError(ConvirError):
    """A published build whose files are missing or damaged."""


def write_build(
    target: Path,
    ids: Sequence[str],
    vectors: np.ndarray,
    documents: Sequence[str],
    *,
    ann_kind: str,
    encoder: str | None,
    items_version: int,
    source: str | None = None,
    checkpoint: Checkpoint | None = None,
    store: dict[str, Any] | None = None,
    dim: int | None = None,
) -> dict[str, Any]:
    """Write one complete generation into ``target`` (atomically) and return its build.json.

    ``store`` (kind, uri, collection) names the vector store already holding the vectors;
    None or kind faiss writes them here (vectors.npy, ann.faiss)."""
    from convir.index.bm25 import BM25Index
    from convir.index.vector import build_ann, save_ann

    matrix = np.ascontiguousarray(vectors, dtype=np.float32)
    if matrix.ndim != 2 or matrix.shape[0] != len(ids) or len(ids) != len(documents):
        raise ValueError(f"{len(ids)} ids, {len(documents)} documents, vectors {matrix.shape}")
    local = not store or store.get("kind", "faiss") == "faiss"
    dim = int(matrix.shape[1]) if local or dim is None else int(dim)
    with atomic_dir(target) as tmp:
        if local:
            np.save(tmp / VECTORS_FILE, matrix)
        (tmp / IDS_FILE).write_text(json.dumps(list(ids), ensure_ascii=False), encoding="utf-8")
        if checkpoint:
            checkpoint("build")
        if local and ann_kind != "flat":
            save_ann(build_ann(matrix, ann_kind), tmp / ANN_FILE)
        bm25 = BM25Index.build(list(documents))
        bm25_info = None
        if not bm25.empty:
            bm25.save(tmp / BM25_DIR)
            bm25_info = {"tokenizer": bm25.settings.to_dict(), "params": bm25.params}  # type: ignore[union-attr]
        files = {f.relative_to(tmp).as_posix(): file_sha256(f) for f in sorted(tmp.rglob("*")) if f.is_file()}
        info = {
            "format": BUILD_FORMAT,
            "generation": Path(target).name,
            "count": len(ids),
            "dim": dim,
            "encoder": encoder,
            "ann": ann_kind,
            "items_version": int(items_version),
            "source": source,  # the gallery, so a repair command can be named without SQLite
            "store": store if not local else {"kind": "faiss"},
            "bm25": bm25_info,
            "created": time.time(),
            "files": files,
        }
        (tmp / INFO_FILE).write_text(json.dumps(info, indent=2), encoding="utf-8")
        _fsync_tree(tmp)
    _fsync_dir(Path(target).parent)
    return info


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in 8 MiB blocks (never the whole file in memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(8 << 20):
            digest.update(block)
    return digest.hexdigest()


def verify_checksums(path: Path, info: dict[str, Any], only: Sequence[str] | None = None) -> list[str]:
    """Problems of the files of a generation against the sha256s in its build.json (all of
    them, or those named in ``only``: a file name or a folder); [] for a build written before
    checksums existed (``has_checksums``)."""
    files = info.get("files")
    if not isinstance(files, dict):
        return []
    problems: list[str] = []
    for rel, want in sorted(files.items()):
        if only is not None and not any(rel == n or rel.startswith(f"{n}/") for n in only):
            continue
        file = Path(path) / rel
        try:
            if file_sha256(file) != want:
                problems.append(damaged_file_message(file))
        except FileNotFoundError:
            problems.append(f"{file} is missing")
        except OSError as exc:
            problems.append(f"{file} is unreadable ({exc})")
    return problems


def damaged_file_message(file: Path) -> str:
    return f"{file} is damaged (its sha256 differs from the one recorded in build.json)"


def has_checksums(info: dict[str, Any]) -> bool:
    """Whether build.json records its files' checksums (builds of format 3 and later)."""
    return isinstance(info.get("files"), dict)


def _fsync_tree(folder: Path) -> None:
    """Flush every file of a build before it is renamed into place (power-loss safety)."""
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def read_info(path: Path) -> dict[str, Any]:
    """build.json of a generation; BuildError when it is missing or unreadable."""
    info_file = Path(path) / INFO_FILE
    try:
        info = json.loads(info_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BuildError(f"{info_file} is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BuildError(f"{info_file} is unreadable ({type(exc).__name__}: {exc})") from exc
    if not isinstance(info, dict) or "count" not in info or "ann" not in info:
        raise BuildError(f"{info_file} is not a convir build description")
    return info


def store_kind(info: dict[str, Any]) -> str:
    """The vector store of a build ("faiss" for builds before stores existed)."""
    store = info.get("store")
    return str(store.get("kind", "faiss")) if isinstance(store, dict) else "faiss"


def has_bm25(path: Path, info: dict[str, Any]) -> bool:
    """Builds before format 2 always had a BM25 folder; newer ones say so in build.json."""
    if "bm25" in info:
        return info["bm25"] is not None
    return (Path(path) / BM25_DIR).is_dir()


def verify_build(
    path: Path,
    expected_ids: Sequence[str] | None = None,
    expected_count: int | None = None,
    expected_dim: int | None = None,
    full: bool = False,
    checksums: bool = False,
) -> list[str]:
    """Problems of the generation at ``path`` (empty list = sound).

    The quick form (``full=False``) checks that every file is present and that the vector
    matrix header and the id list agree; ``checksums`` also hashes every file against
    build.json; ``full`` does both and loads the ANN and BM25 indexes."""
    path = Path(path)
    try:
        info = read_info(path)
    except BuildError as exc:
        return [str(exc)]
    problems: list[str] = []
    count = int(info["count"])
    vec_file = path / VECTORS_FILE
    local = store_kind(info) == "faiss"
    if not local and expected_dim is not None and info.get("dim") != expected_dim:
        problems.append(f"build.json says dimension {info.get('dim')}, the encoder has {expected_dim}")
    try:
        if not local:
            raise _InStore
        vecs = np.load(vec_file, mmap_mode="r")
        if vecs.ndim != 2 or vecs.shape[0] != count or vecs.dtype != np.float32:
            problems.append(f"{vec_file} has shape {vecs.shape} {vecs.dtype}, build.json says {count} rows")
        elif expected_dim is not None and vecs.shape[1] != expected_dim:
            problems.append(f"{vec_file} has dimension {vecs.shape[1]}, the encoder has {expected_dim}")
        elif full and not np.all(np.isfinite(vecs)):
            problems.append(f"{vec_file} contains NaN or infinite values")
    except _InStore:
        pass
    except FileNotFoundError:
        problems.append(f"{vec_file} is missing")
    except (OSError, ValueError, EOFError) as exc:
        problems.append(f"{vec_file} is unreadable ({type(exc).__name__}: {exc})")
    ids_file = path / IDS_FILE
    try:
        ids = json.loads(ids_file.read_text(encoding="utf-8"))
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            problems.append(f"{ids_file} is not a list of item ids")
        elif len(ids) != count or len(set(ids)) != len(ids):
            distinct = len(set(ids))
            problems.append(f"{ids_file} has {len(ids)} ids ({distinct} distinct), build.json says {count}")
        elif (order := _order_problem(ids)) is not None:
            problems.append(f"{ids_file} order differs from the build's vectors ({order})")
        elif expected_ids is not None and list(ids) != list(expected_ids):
            have, want = set(ids), set(expected_ids)
            problems.append(
                f"{ids_file} does not match the items in convir.sqlite: {len(want - have)} items missing "
                f"from the build, {len(have - want)} removed items still in it"
            )
    except FileNotFoundError:
        problems.append(f"{ids_file} is missing")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        problems.append(f"{ids_file} is unreadable ({type(exc).__name__}: {exc})")
    if expected_count is not None and count != expected_count:
        problems.append(f"the build has {count} items, convir.sqlite has {expected_count}")
    ann_file = path / ANN_FILE
    if info["ann"] != "flat" and local:
        if not ann_file.is_file():
            problems.append(f"{ann_file} is missing (ann {info['ann']})")
        elif full:
            try:
                from convir.index.vector import _faiss

                if _faiss().read_index(str(ann_file)).ntotal != count:
                    problems.append(f"{ann_file} does not hold {count} vectors")
            except RuntimeError as exc:
                problems.append(f"{ann_file} is unreadable ({exc})")
    if has_bm25(path, info):
        bm_dir = path / BM25_DIR
        if not (bm_dir / "params.index.json").is_file() or not (bm_dir / "vocab.index.json").is_file():
            problems.append(f"{bm_dir} is missing or incomplete")
        elif full and (damaged := verify_checksums(path, info, only=[BM25_DIR])):
            problems += damaged  # never load a damaged file: its JSON may parse into nonsense
        elif full:
            try:
                size = load_bm25(path, verify=False).size
                if size != count:
                    problems.append(f"{bm_dir} indexes {size} documents, the build has {count} items")
            except BuildError as exc:
                problems.append(str(exc))
    if full or checksums:
        problems += verify_checksums(path, info)
    return list(dict.fromkeys(problems))  # a missing file may be reported twice


def _order_problem(ids: list[str]) -> str | None:
    """Row i of a build is the i-th item in id order; ids out of that order point at other
    items' vectors. None when in order, else how many ids are out of place."""
    want = sorted(ids)
    if ids == want:
        return None
    wrong = [n for n, (have, exp) in enumerate(zip(ids, want, strict=True)) if have != exp]
    return f"{len(wrong)} ids out of place, e.g. {ids[wrong[0]]!r} at position {wrong[0]}"


class _InStore(Exception):
    """Control flow: the vectors of this build live in a vector store, not in vectors.npy."""


def load_bm25(path: Path, verify: bool = True) -> Any:
    """The BM25 index of the generation at ``path`` (an empty one for caption-less galleries);
    ``verify``: BuildError when its files fail their checksums."""
    from convir.index.bm25 import BM25Index, EmptyBM25

    path = Path(path)
    info = read_info(path)
    if not has_bm25(path, info):
        return EmptyBM25(int(info["count"]))
    if verify and (problems := verify_checksums(path, info, only=[BM25_DIR])):
        raise BuildError("; ".join(problems))
    try:
        return BM25Index.load(path / BM25_DIR)
    except ConvirError:
        raise
    except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError) as exc:  # TypeError: a
        # damaged params file whose JSON still parses, with a garbled key
        raise BuildError(f"{path / BM25_DIR} is missing or damaged ({type(exc).__name__}: {exc})") from exc


class Build:
    """One opened generation: ids, vectors (in RAM, memory-mapped when huge), the ANN index
    and a loader for BM25 (loaded on the first BM25/hybrid query). Raises BuildError."""

    def __init__(self, path: Path, pin: bool = True) -> None:
        from convir.index.vector import AnnIndex

        self.path = Path(path)
        self._pin_fd: int | None = self._pin() if pin else None
        try:
            self.info = read_info(self.path)
            problems = verify_build(self.path) or verify_checksums(
                self.path, self.info, only=[VECTORS_FILE, IDS_FILE, ANN_FILE]
            )
            if problems:
                raise BuildError("; ".join(problems))
            self.ids: list[str] = json.loads((self.path / IDS_FILE).read_text(encoding="utf-8"))
            self.store_kind = store_kind(self.info)
            if self.store_kind != "faiss":  # the reader attaches the store (convir.store.open_build_ann)
                self.vectors: Any = None
                self.ann: Any = None
                return
            vec_file = self.path / VECTORS_FILE
            # in RAM when it fits comfortably (a memory map makes every exact search ~6x slower);
            # memory-mapped beyond that so huge galleries still open
            big = vec_file.stat().st_size > MMAP_ABOVE_BYTES
            self.vectors = np.load(vec_file, mmap_mode="r" if big else None)
            ann_file = self.path / ANN_FILE
            try:
                ann_path = ann_file if ann_file.exists() else None
                self.ann = AnnIndex.load(self.vectors, self.info["ann"], ann_path)
            except RuntimeError as exc:  # faiss: truncated or foreign file
                raise BuildError(f"{ann_file} is unreadable ({exc})") from exc
        except BaseException:
            self.close()
            raise

    @property
    def has_bm25(self) -> bool:
        return has_bm25(self.path, self.info)

    def load_bm25(self) -> Any:
        return load_bm25(self.path)

    def _pin(self) -> int | None:
        """Shared lock on build.json: the writer does not delete a generation a reader serves."""
        if fcntl is None:
            return None
        try:
            fd = os.open(self.path / INFO_FILE, os.O_RDONLY)
        except OSError:
            return None  # reported by read_info
        fcntl.flock(fd, fcntl.LOCK_SH)
        return fd

    def close(self) -> None:
        fd, self._pin_fd = getattr(self, "_pin_fd", None), None
        if fd is not None:
            # TypeError: at interpreter shutdown os may already be torn down
            with contextlib.suppress(OSError, TypeError):
                os.close(fd)  # releases the shared lock

    def __del__(self) -> None:
        self.close()


def remove_unused_builds(builds_dir: Path, keep: str) -> list[str]:
    """Delete every generation but ``keep`` that no reader pins, and any half-written folder.

    Only the index writer (holding the index lock) calls this, so a folder without build.json
    is debris of a killed run, never a build in progress."""
    removed: list[str] = []
    if not Path(builds_dir).is_dir():
        return removed
    for entry in sorted(Path(builds_dir).iterdir()):
        if entry.name == keep:
            continue
        if not entry.is_dir():
            entry.unlink(missing_ok=True)
            removed.append(entry.name)
            continue
        info = entry / INFO_FILE
        fd = None
        if fcntl is not None and info.is_file():
            fd = os.open(info, os.O_RDONLY)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue  # a reader still serves it; a later run removes it
        try:
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry.name)
        finally:
            if fd is not None:
                os.close(fd)
    return removed
