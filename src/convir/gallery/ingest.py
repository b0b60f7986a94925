"""Turn a gallery into an index directory, incrementally, resumably and one writer at a time.

Each run: check every option, read the source, take the index lock (:mod:`convir.gallery.lock`),
fingerprint every item (image bytes + captions), encode only new or changed items in
batches (one SQLite transaction per batch, so a killed run resumes where it stopped), drop
items that left the gallery, then publish a fresh build of the search files whenever the
published one was not built from exactly the current items (:mod:`convir.gallery.store`
explains the items version). Bad items are skipped and reported, never fatal; a run that
fails before storing anything leaves no index folder behind.

Item vectors and BM25 documents follow :mod:`convir.gallery.items`. With ``--captioner`` every
photo also gets a generated caption, stored apart from the user's (:mod:`convir.gallery.captioner`).

With ``--store milvus:...`` the build step first brings the Milvus collection to SQLite's
items (:mod:`convir.store.milvus`); with ``--ray`` batches are encoded by Ray workers while
this process, the one writer, stores them (:mod:`convir.gallery.distributed`).

Test hook: with ``CONVIR_TEST_KILL_AT=STAGE`` the process SIGKILLs itself at that point of
the run (``encode``: after the first batch is saved; ``remove``: after removed items are
deleted; ``caption``: after the first batch of generated captions is saved;
``sync``: after the first batch is sent to the vector store, before it is
confirmed; ``sync-delete``: after the first delete is sent; ``build``: half-way through
writing a build; ``publish``: build complete on disk, not yet published; ``cleanup``:
published, old builds not yet removed), so tests can check that a run killed at any stage
is finished by the next one. ``CONVIR_TEST_PAUSE_AT=STAGE:FILE`` instead creates FILE at that
point and waits (up to a minute) for a signal, so a test can send SIGINT at a known moment.

Size limits: an image file over ``max_file_size`` (``--max-file-size``, default 200 MB) is
skipped from its ``stat``, before any byte is read; digests stream the file in 1 MiB blocks;
caption sidecars and manifest lines have their own caps (:mod:`convir.gallery.sources`). A
full disk stops the run with :class:`convir.errors.DiskFullError` (SQLite rolls back its
batch, a half-written build folder is removed, the published build stays); Ctrl-C raises
:class:`IndexInterrupted`, which says how many items this run stored.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from convir.atomic import write_json
from convir.encoders.pipeline import EncodeSettings
from convir.errors import ConvirError, DiskFullError, is_disk_full
from convir.gallery import photometa
from convir.gallery.captioner import CAPTIONER_SETTING, caption_items
from convir.gallery.items import MAX_CAPTION_CHARS, cap_captions, item_documents, item_vectors
from convir.gallery.lock import LOCK_NAME, IndexLock
from convir.gallery.sources import FORMATS, SourceItem, format_size, open_source
from convir.gallery.store import (
    DB_NAME,
    GALLERY_ROOT,
    IndexCorruptError,
    Store,
    StoredItem,
    absolute_path,
    root_of_source,
    stored_path,
)

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

REPORT_NAME = "last_index_report.json"
KILL_ENV = "CONVIR_TEST_KILL_AT"
KILL_STAGES = ("encode", "remove", "build", "publish", "cleanup")
CAPTION_KILL_STAGES = ("caption",)  # reached only with --captioner (tests/gallery/test_captioner.py)
STORE_KILL_STAGES = ("sync", "sync-delete")  # reached only with a vector store such as Milvus
PAUSE_ENV = "CONVIR_TEST_PAUSE_AT"
DEFAULT_MAX_FILE_SIZE = 200 * 1024**2
DIGEST_BLOCK = 1024**2
_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


class IndexInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run: every batch stored so far is kept (``kept`` of them this run)."""

    def __init__(self, kept: int) -> None:
        super().__init__(f"{kept} items encoded and kept")
        self.kept = kept


def parse_size(value: int | str | None) -> int:
    """Bytes from ``--max-file-size``: a number of bytes or one with a unit (200MB, 1.5G, 512k;
    binary units, as ``ls -lh`` shows them); None is the default."""
    import re

    if value is None:
        return DEFAULT_MAX_FILE_SIZE
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise ConvirError(f"--max-file-size must be positive, not {value}")
        return value
    found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", str(value), re.IGNORECASE)
    if not found or float(found.group(1)) * _SIZE_UNITS[found.group(2).lower()] < 1:
        raise ConvirError(
            f"--max-file-size must be a size such as 200MB, 1.5G or 500000 (bytes), not {value!r}"
        )
    return int(float(found.group(1)) * _SIZE_UNITS[found.group(2).lower()])


@dataclass
class IngestReport:
    index_dir: str
    encoder: str
    ann: str
    store: str = "faiss"
    seen: int = 0
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    repointed: int = 0  # unchanged items whose image path changed (a moved gallery): not re-encoded
    failed: list[tuple[str, str]] = field(default_factory=list)
    ignored: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[tuple[str, str]] = field(default_factory=list)
    total: int = 0
    rebuilt: bool = False
    rebuild_reason: str | None = None
    bm25: bool = True
    seconds: float = 0.0
    encode_seconds: float = 0.0
    synced: dict[str, int] | None = None  # vector store: items sent, ids deleted
    workers: int = 0  # Ray encoder workers (0: encoded in this process)
    captioner: str | None = None  # the spec that generates captions (--captioner), if any
    captioned: int = 0  # items given a (new) generated caption by this run
    caption_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


ProgressFn = Callable[[int], None]


def checkpoint(stage: str) -> None:
    """The kill test hook (see the module docstring); a no-op unless the variable names ``stage``."""
    if os.environ.get(KILL_ENV) == stage:
        os.kill(os.getpid(), signal.SIGKILL)
    pause = os.environ.get(PAUSE_ENV, "")
    if pause.startswith(f"{stage}:"):
        Path(pause.split(":", 1)[1]).touch()
        time.sleep(60)  # a signal handler that raises (Ctrl-C) ends the wait


def validate_options(
    out: Path,
    encoder_spec: str | None,
    ann: str | None,
    fmt: str,
    batch_size: int,
    long_text: str,
    max_pixels: int | None,
    store: str | None = None,
    ray: str | None = None,
    ray_workers: int | None = None,
    max_file_size: int | str | None = None,
    captioner: str | None = None,
) -> None:
    """Every option of a run, checked before the gallery is read or a model loaded."""
    from convir.encoders.base import LONG_TEXT_POLICIES
    from convir.index.vector import ANN_KINDS
    from convir.specs import REGISTRY

    if ann is not None and ann not in ANN_KINDS:
        raise ConvirError(f"unknown --ann {ann!r}; choose one of: {', '.join(ANN_KINDS)}")
    if fmt not in FORMATS:
        raise ConvirError(f"unknown --format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    if long_text not in LONG_TEXT_POLICIES:
        raise ConvirError(
            f"unknown --long-text {long_text!r}; choose one of: {', '.join(LONG_TEXT_POLICIES)}"
        )
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConvirError(f"--batch-size must be a positive integer, not {batch_size!r}")
    if max_pixels is not None and (not isinstance(max_pixels, int) or max_pixels < 1):
        raise ConvirError(f"--max-pixels must be a positive integer, not {max_pixels!r}")
    parse_size(max_file_size)
    if encoder_spec is not None:
        REGISTRY.parse("encoder", encoder_spec)
    if captioner is not None:
        REGISTRY.parse("captioner", captioner)
    out = Path(out)
    if store is not None:
        from convir.store import check_ann_for_store, parse_store, require_pymilvus

        spec = parse_store(store, out)
        if ann is not None:
            check_ann_for_store(spec, ann)
        if spec.kind == "milvus":
            require_pymilvus(spec)
    if ray is not None or ray_workers is not None:
        from convir.gallery.distributed import validate_ray

        validate_ray(ray, ray_workers)
    if out.exists() and not out.is_dir():
        raise ConvirError(f"--out {out} is a file; give a folder for the index (new or existing)")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ConvirError(f"--out {out}: {parent} is a file, not a folder")
            break


def _image_digest(path: Path, previous: str | None) -> tuple[str, str]:
    """(digest, stat string); reuse the stored digest when size and mtime are unchanged.

    The file is hashed in DIGEST_BLOCK pieces: memory stays flat whatever its size."""
    st = path.stat()
    key = f"{st.st_size}:{st.st_mtime_ns}"
    if previous and previous.rsplit(":", 1)[0] == key:
        return previous.rsplit(":", 1)[1], previous
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(DIGEST_BLOCK):
            h.update(block)
    return h.hexdigest()[:32], f"{key}:{h.hexdigest()[:32]}"


def _skip_oversized(items: list[SourceItem], limit: int) -> None:
    """Mark images over ``limit`` bytes as failed, judged from ``stat`` alone: a 40 GB file
    (sparse or not) is never read, hashed or handed to an image decoder."""
    for it in items:
        if it.error or it.image is None:
            continue
        try:
            size = it.image.stat().st_size
        except (OSError, ValueError):
            continue  # a missing or unreadable file is reported by the fingerprint step
        if size > limit:
            over = f"over the limit of {format_size(limit)} (--max-file-size)"
            it.error = f"file too large: {format_size(size)}, {over}"


def _kept_since(out: Path, since: float) -> int:
    """Items stored at or after ``since`` (time.time()): what an interrupted run kept."""
    import sqlite3

    try:
        store = Store(out)
    except ConvirError:
        return 0
    try:
        return int(store.db.execute("SELECT COUNT(*) FROM items WHERE updated >= ?", (since,)).fetchone()[0])
    except sqlite3.Error:
        return 0
    finally:
        store.close()


def _unusable(item: SourceItem, use_images: bool, max_pixels: int | None) -> str | None:
    """Why ``item`` cannot be encoded, or None. A caption encoder still checks the image is sound."""
    from convir.encoders.base import check_image

    if use_images:
        return None if item.image is not None or item.captions else "no image and no caption"
    if item.image is not None and (reason := check_image(item.image, max_pixels)):
        return reason
    if not item.captions:
        return "no caption (the caption encoder needs text: add a name.txt sidecar or use an image encoder)"
    return None


def _fingerprint(item: SourceItem, previous_stat: str | None) -> tuple[str, str | None]:
    img_digest, stat = ("", None)
    if item.image is not None:
        img_digest, stat = _image_digest(item.image, previous_stat)
    payload = json.dumps([img_digest, item.captions], ensure_ascii=False).encode()
    return hashlib.sha256(payload).hexdigest()[:32], stat


def _encode_batch(
    encoder: Any,
    batch: list[SourceItem],
    use_images: bool,
    max_pixels: int | None,
    settings: EncodeSettings | None = None,
    pool: ThreadPoolExecutor | None = None,
) -> tuple[list[tuple[SourceItem, np.ndarray, str]], list[tuple[str, str]]]:
    """Vectors for a batch: image tower where available, else the item's caption vector.

    Images are decoded in ``pool``'s threads (or ``settings.decode_workers`` of its own) while
    the model encodes, ``settings.image_batch`` per model call (:mod:`convir.encoders.pipeline`)."""
    done: list[tuple[SourceItem, np.ndarray, str]] = []
    failed: list[tuple[str, str]] = []
    text_items = batch
    if use_images:
        from convir.encoders.pipeline import encode_images_pipelined

        with_img = [it for it in batch if it.image is not None]
        text_items = [it for it in batch if it.image is None]
        if with_img:
            paths = [it.image for it in with_img]
            vecs, ok, bad = encode_images_pipelined(encoder, paths, settings, max_pixels, pool)
            for row, i in enumerate(ok):
                done.append((with_img[i], vecs[row], "image"))
            failed += [(with_img[i].id, reason) for i, reason in bad]
    if text_items:
        vecs = item_vectors(encoder, [it.captions for it in text_items])
        done += [(it, vecs[row], "captions") for row, it in enumerate(text_items)]
    return done, failed


def ingest(
    gallery: Path,
    out: Path,
    encoder_spec: str | None = None,
    ann: str | None = None,
    fmt: str = "auto",
    batch_size: int = 256,
    replace: bool = False,
    long_text: str = "chunk",
    on_total: Callable[[int], None] | None = None,
    on_progress: ProgressFn | None = None,
    *,
    rebuild: bool = False,
    max_pixels: int | None = None,
    wait: bool = True,
    on_wait: Callable[[str], None] | None = None,
    store: str | None = None,
    ray: str | None = None,
    ray_workers: int | None = None,
    settings: EncodeSettings | None = None,
    max_file_size: int | str | None = None,
    captioner: str | None = None,
) -> IngestReport:
    """Index (or update) ``gallery`` into ``out``; see the module docstring.

    ``rebuild`` rebuilds the search files even when nothing changed and, when convir.sqlite
    is damaged, sets it aside (``convir.sqlite.corrupt-TIME``) and indexes from scratch;
    ``max_pixels`` skips larger images; ``wait=False`` refuses instead of waiting when another
    run holds the index (``on_wait`` hears that it waits); ``store`` is a vector store spec
    (:mod:`convir.store`; default: the index's own, else faiss); ``ray`` encodes with Ray
    workers ("local": a Ray started here; else a cluster address), ``ray_workers`` of them;
    ``settings`` sets images per model call, torch threads and decoding threads;
    ``max_file_size`` (bytes, or "200MB") skips larger image files unread; ``captioner``
    generates a caption per photo (recorded: later runs keep using it)."""
    t0 = time.perf_counter()
    started = time.time()
    out = Path(out).expanduser()
    validate_options(
        out,
        encoder_spec,
        ann,
        fmt,
        batch_size,
        long_text,
        max_pixels,
        store,
        ray,
        ray_workers,
        max_file_size=max_file_size,
        captioner=captioner,
    )
    settings = (settings or EncodeSettings()).validate()
    if settings.runtime != "torch":
        if ray is not None:
            raise ConvirError(
                f"--runtime {settings.runtime} encodes in this process; it does not combine with --ray"
            )
        if encoder_spec is not None:
            from convir.encoders.onnx_image import check_runtime

            check_runtime(settings.runtime, encoder_spec)
    ignored: list[tuple[str, str]] = []
    items = list(open_source(gallery, fmt, ignored))  # gallery problems: before anything is created
    _skip_oversized(items, parse_size(max_file_size))
    existed = out.exists()
    lock = IndexLock(out, wait=wait, on_wait=on_wait)
    lock.acquire()
    fresh = not (out / DB_NAME).exists()  # after waiting: the other run may have created it
    try:
        report = _ingest_locked(
            gallery, out, items, ignored, encoder_spec, ann, fmt, batch_size, replace, long_text,
            on_total, on_progress, rebuild, max_pixels, t0, store, ray, ray_workers, settings, captioner,
        )  # fmt: skip
    except BaseException as exc:
        if fresh:
            _discard_if_empty(out, existed)
        if isinstance(exc, KeyboardInterrupt) and not isinstance(exc, IndexInterrupted):
            raise IndexInterrupted(_kept_since(out, started)) from exc
        if isinstance(exc, OSError) and is_disk_full(exc):  # a build or report file (SQLite: store.py)
            raise DiskFullError(out) from exc
        raise
    finally:
        lock.release()
    return report


def _discard_if_empty(out: Path, existed: bool) -> None:
    """A first run that stored nothing leaves nothing: no empty index to confuse later runs."""
    db = out / DB_NAME
    if db.exists():
        try:
            store = Store(out)
            try:
                if store.count():
                    return  # resumable work is kept
            finally:
                store.close()
        except ConvirError:
            pass
    if not existed:
        shutil.rmtree(out, ignore_errors=True)
        return
    for name in (DB_NAME, f"{DB_NAME}-wal", f"{DB_NAME}-shm", REPORT_NAME, LOCK_NAME):
        (out / name).unlink(missing_ok=True)
    shutil.rmtree(out / "builds", ignore_errors=True)


def _open_store(out: Path, rebuild: bool) -> tuple[Store, str | None]:
    """The writable store; with ``rebuild`` a damaged database is set aside and started afresh."""
    try:
        store = Store(out, create=True)
    except IndexCorruptError:
        if not rebuild:
            raise
        stamp = time.strftime("%Y%m%d-%H%M%S")
        aside = out / f"{DB_NAME}.corrupt-{stamp}"
        for suffix in ("", "-wal", "-shm"):
            src = out / f"{DB_NAME}{suffix}"
            if src.exists():
                os.replace(src, out / f"{aside.name}{suffix}")
        store = Store(out, create=True)  # old builds stay until no reader serves them
        note = f"convir.sqlite was damaged: set aside as {aside.name}; indexing the gallery from scratch"
        store.upgrade()
        return store, note
    store.upgrade()
    return store, None


def _ingest_locked(
    gallery: Path,
    out: Path,
    items: list[SourceItem],
    ignored: list[tuple[str, str]],
    encoder_spec: str | None,
    ann: str | None,
    fmt: str,
    batch_size: int,
    replace: bool,
    long_text: str,
    on_total: Callable[[int], None] | None,
    on_progress: ProgressFn | None,
    rebuild: bool,
    max_pixels: int | None,
    t0: float,
    store_text: str | None = None,
    ray: str | None = None,
    ray_workers: int | None = None,
    settings: EncodeSettings | None = None,
    captioner: str | None = None,
) -> IngestReport:
    from convir.encoders import DEFAULT_ENCODER, load_encoder
    from convir.store import (
        STORE_SETTING,
        check_ann_for_store,
        check_reachable,
        parse_store,
        recorded_store,
        store_from_builds,
    )

    store, note = _open_store(out, rebuild)
    stack = contextlib.ExitStack()  # encoders (Ray workers) to stop, whatever happens
    try:
        source_key = json.dumps([str(Path(gallery).expanduser().resolve()), fmt])
        have_source = store.get("source")
        if have_source and have_source != source_key and not replace and store.count():
            raise ConvirError(_another_gallery(out, have_source))
        gallery_root = root_of_source(source_key)
        spec = encoder_spec or store.encoder_spec or DEFAULT_ENCODER
        if store.encoder_spec and spec != store.encoder_spec:
            # the stored spec is canonical (absolute model paths); a different kind can be refused
            # at once, the same kind only after loading shows it resolves to something else
            same_kind = spec.split(":", 1)[0] == store.encoder_spec.split(":", 1)[0]
            if not same_kind or load_encoder(spec, long_text=long_text).spec != store.encoder_spec:  # type: ignore[arg-type]
                store.bind_encoder(spec, -1)  # raises the mismatch error
            spec = store.encoder_spec
        ann_kind = ann or store.get("ann") or "flat"
        if store_text is not None:
            vstore = parse_store(store_text, out)
        elif store.get(STORE_SETTING) is None and (aside := store_from_builds(out)) is not None:
            vstore = aside  # convir.sqlite was set aside: keep the store the builds used
        else:
            vstore = recorded_store(store)
        check_ann_for_store(vstore, ann_kind)
        check_reachable(store, vstore)  # an unreachable store fails now, before any encoding
        if max_pixels is None and (saved := store.get("max_pixels")):
            max_pixels = int(saved)
        report = IngestReport(str(out), spec, ann_kind, vstore.display(out))  # spec may become canonical
        if note:
            report.warnings.append(("convir.sqlite", note))
        report.ignored = ignored
        report.seen = len(items)
        old_paths = store.image_paths()
        repoint: list[tuple[str, str | None]] = []  # (id, new path) of unchanged items that moved

        def claim() -> None:
            """Just before the first change: this folder now mirrors this gallery."""
            if store.get("source") != source_key:
                store.set("source", source_key)
            if max_pixels is not None and store.get("max_pixels") != str(max_pixels):
                store.set("max_pixels", str(max_pixels))
            if store.get(STORE_SETTING) != vstore.to_json():
                store.set(STORE_SETTING, vstore.to_json())
            if store.get(GALLERY_ROOT) != str(gallery_root) or repoint:
                store.set_gallery_root(gallery_root, repoint)  # type: ignore[arg-type]
                repoint.clear()  # once: later calls find the root set

        previous = store.fingerprints()
        _forget_damaged(store, previous, report)
        pending: list[tuple[SourceItem, str, str | None]] = []
        from_generated: set[str] = set()  # encoded from their generated caption: no user captions
        keep: set[str] = set()
        stat_updates: list[tuple[str, str]] = []
        meta_updates: list[tuple[str, dict[str, Any]]] = []
        stored_meta: dict[str, dict[str, Any]] | None = None
        for it in items:
            if it.error:
                report.failed.append((it.id, it.error))
                continue
            it.captions, cut = cap_captions(it.captions)
            if cut:
                report.warnings.append(
                    (it.id, f"{cut} caption(s) longer than {MAX_CAPTION_CHARS:,} characters were cut")
                )
            try:
                if it.image is not None and not it.image.is_file():
                    report.failed.append((it.id, f"image file not found: {it.image}"))
                    continue
                h, stat = _fingerprint(it, previous.get(it.id, (None, None))[1])
            except (OSError, ValueError, MemoryError) as exc:
                report.failed.append((it.id, f"cannot read image: {str(exc) or type(exc).__name__}"))
                continue
            old = previous.get(it.id)
            if old and old[0] == h:
                keep.add(it.id)
                report.unchanged += 1
                new_path = absolute_path(stored_path(it.image, gallery_root), gallery_root)
                if new_path != old_paths.get(it.id):
                    repoint.append((it.id, new_path))
                if stat and stat != old[1]:
                    stat_updates.append((it.id, stat))
                if it.image is not None:  # indexed before photo metadata: fill it in, keep the vector
                    stored_meta = store.metas() if stored_meta is None else stored_meta
                    new_meta = None
                    if photometa.MARKER not in stored_meta.get(it.id, {}):
                        new_meta = photometa.with_photo_meta(it.image, it.meta)
                    if new_meta and photometa.MARKER in new_meta:
                        meta_updates.append((it.id, new_meta))
                continue
            it.meta = photometa.with_photo_meta(it.image, it.meta)  # re-read whenever the file changed
            pending.append((it, h, stat))
        if stat_updates:
            store.update_stat(stat_updates)
        if meta_updates:
            claim()
            store.update_meta(meta_updates)
        report.repointed = len(repoint)
        captioner = captioner or store.get(CAPTIONER_SETTING)
        if captioner:
            current = [(it, h) for it, h, _ in pending] + [
                (it, previous[it.id][0]) for it in items if it.id in keep
            ]
            recaptioned = caption_items(store, captioner, current, batch_size, report, claim, checkpoint)
            if spec.split(":", 1)[0] == "caption":
                # the caption encoder reads a caption-less photo's generated caption (below): a
                # photo captioned again is encoded again
                again = [it for it in items if it.id in keep and it.id in recaptioned and not it.captions]
                pending += [(it, *previous[it.id]) for it in again]
                keep -= {it.id for it in again}
                report.unchanged -= len(again)
                generated = store.generated([it.id for it, _, _ in pending if not it.captions])
                pending = [
                    (dataclasses.replace(it, captions=[generated[it.id][0]]), h, st)
                    if not it.captions and it.id in generated
                    else (it, h, st)
                    for it, h, st in pending
                ]
                from_generated = set(generated)

        if pending:
            from convir.gallery.distributed import open_encoding

            if settings is not None and settings.runtime != "torch":
                from convir.encoders.onnx_image import check_runtime

                check_runtime(settings.runtime, spec)  # the index's own encoder, when none was given
            encoding = open_encoding(spec, long_text, batch_size, max_pixels, ray, ray_workers, settings)
            stack.callback(encoding.close)
            store.bind_encoder(encoding.spec, encoding.dim)  # canonical: reopens from any folder
            report.encoder = encoding.spec
            report.workers = encoding.workers
            use_images = encoding.use_images
            ready = []
            for it, h, st in pending:
                reason = _unusable(it, use_images, max_pixels)
                if reason:
                    report.failed.append((it.id, reason))
                else:
                    ready.append((it, h, st))
            pending = ready
            if on_total:
                on_total(len(pending))
            if pending:
                claim()
            te = time.perf_counter()
            chunks = [pending[start : start + batch_size] for start in range(0, len(pending), batch_size)]
            for chunk, done, failed in encoding.encode(chunks):
                meta = {it.id: (h, st) for it, h, st in chunk}
                report.failed += failed
                store.upsert(
                    (
                        StoredItem(
                            it.id,
                            str(it.image) if it.image else None,
                            [] if it.id in from_generated else it.captions,
                            it.meta,
                            src,
                        ),
                        *meta[it.id],
                        v,
                    )
                    for it, v, src in done
                )
                for it, _, _ in done:
                    keep.add(it.id)
                    if it.id in previous:
                        report.updated += 1
                    else:
                        report.added += 1
                if on_progress:
                    on_progress(len(chunk))
                checkpoint("encode")
            report.encode_seconds = time.perf_counter() - te
        elif on_total:
            on_total(0)

        if not keep:  # never empty an index because the gallery looks empty (unmounted disk?)
            raise ConvirError(_empty_message(report))
        stale = [i for i in previous if i not in keep]  # left the gallery, or now broken
        if stale:
            claim()
        report.removed = store.delete(stale)
        checkpoint("remove")
        claim()
        report.rebuild_reason = _build_needed(store, ann_kind, rebuild, vstore)
        if report.rebuild_reason:
            _, report.synced = build(store, ann_kind, vstore, full_sync=rebuild)
            report.rebuilt = True
        from convir.index.build import has_bm25, read_info, remove_unused_builds

        published = store.current_build()
        remove_unused_builds(store.builds_dir, published.name if published else "")
        report.bm25 = bool(published and has_bm25(published, read_info(published)))
        report.total = store.count()
        report.seconds = time.perf_counter() - t0
        write_json(out / REPORT_NAME, report.to_dict())
        return report
    finally:
        stack.close()
        store.close()


def _forget_damaged(store: Store, previous: dict[str, tuple[str, str | None]], report: IngestReport) -> None:
    """Items whose stored vector fails its checksum count as changed: re-encoded from the
    gallery (or removed with it), so no build is ever made from them."""
    for item_id, why in store.damaged_vectors().items():
        previous[item_id] = ("", previous[item_id][1])  # matches no content hash
        report.warnings.append((item_id, f"stored vector damaged ({why}): re-encoding it from the gallery"))


def _build_needed(store: Store, ann_kind: str, rebuild: bool, vstore: Any = None) -> str | None:
    """Why the published build cannot serve the current items as they are, or None."""
    from convir.index.build import has_checksums, read_info, store_kind, verify_build
    from convir.store import StoreSpec, store_out_of_step

    vstore = vstore or StoreSpec("faiss")
    if rebuild:
        return "--rebuild"
    path = store.current_build()
    if path is None:
        return "no build published yet"
    if store.build_items_version != store.items_version:
        return "the items changed since the published build (or its build was interrupted)"
    problems = verify_build(path, expected_count=store.count(), expected_dim=store.dim, checksums=True)
    if problems:
        return "the published build is damaged: " + "; ".join(problems)
    info = read_info(path)
    if not has_checksums(info):
        return "the published build records no checksums (written by an older convir)"
    if info.get("ann") != ann_kind:
        return f"--ann {ann_kind}"
    built = info.get("store") if isinstance(info.get("store"), dict) else {"kind": "faiss"}
    if store_kind(info) != vstore.kind or (vstore.kind != "faiss" and built.get("uri") != vstore.uri):
        return f"--store {vstore.display(store.root)}"
    return store_out_of_step(store, vstore)


def _another_gallery(out: Path, have_source: str) -> str:
    """The refusal to switch galleries silently; when the indexed one is gone it may have moved."""
    old = json.loads(have_source)[0]
    msg = (
        f"{out} indexes another gallery ({old}); use a new --out folder, or --replace to make it "
        "mirror this gallery instead"
    )
    if not Path(old).exists():
        msg += f" ({old} no longer exists: if the gallery moved here, --replace re-points the index "
        msg += "without re-encoding)"
    return msg


def _empty_message(report: IngestReport) -> str:
    msg = "nothing could be indexed"
    if report.failed:
        msg += f": all {len(report.failed)} items failed, e.g. {report.failed[0][0]}: {report.failed[0][1]}"
    elif report.seen == 0:
        msg += ": the gallery has no images or records"
    return msg


def build(
    store: Store, ann_kind: str, vstore: Any = None, full_sync: bool = False
) -> tuple[Path, dict[str, int] | None]:
    """Bring the vector store to the items (Milvus), write a new build generation of the
    search files and publish it atomically; (its folder, what the sync sent and deleted)."""
    from convir.index.build import write_build
    from convir.store import StoreSpec, build_store_info, sync_store

    vstore = vstore or StoreSpec("faiss")
    local = vstore.kind == "faiss"
    # the store first: the build is published only once the store holds exactly these items
    # (a writer holds the lock, so the items cannot change between the sync and the snapshot)
    synced = sync_store(store, vstore, ann_kind, full_sync, checkpoint)
    gen = store.reserve_generation()
    while (store.builds_dir / gen).exists():  # folders of a database set aside by --rebuild
        gen = store.reserve_generation()
    version, ids, matrix, caps = store.snapshot(with_vectors=local)
    generated = store.generated()  # BM25 reads generated captions too (no-op without --captioner)
    caps = [[*c, generated[i][0]] if i in generated else c for i, c in zip(ids, caps, strict=True)]
    target = store.builds_dir / gen
    write_build(
        target,
        ids,
        matrix,
        item_documents(caps),
        ann_kind=ann_kind,
        encoder=store.encoder_spec,
        items_version=version,
        source=store.get("source"),
        checkpoint=checkpoint,
        store=build_store_info(store, vstore),
        dim=store.dim,
    )
    checkpoint("publish")
    store.publish_build(gen, version, ann_kind)
    checkpoint("cleanup")
    return target, synced


def iter_failed(report: IngestReport) -> Iterable[str]:
    for item_id, reason in report.failed:
        yield f"{item_id}: {reason}"
