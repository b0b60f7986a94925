"""Turn a gallery into an index directory, incrementally and resumably.

Each run: read the source, fingerprint every item (image bytes + captions), encode only new
or changed items in batches (one SQLite transaction per batch, so a killed run resumes
where it stopped), drop items that left the gallery, then publish a fresh build of the
search artifacts. Bad items are skipped and reported, never fatal.

Item vectors with a caption encoder are the normalised mean of the item's caption vectors:
captions are independent paraphrases of one image, their centroid sits closer to an
unseen paraphrase (the query) than any single caption does, and one vector per item keeps
ranking per image without a max-over-captions de-duplication step.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from convir.atomic import atomic_dir, write_json
from convir.errors import ConvirError
from convir.gallery.sources import SourceItem, open_source
from convir.gallery.store import Store, StoredItem

REPORT_NAME = "last_index_report.json"


@dataclass
class IngestReport:
    index_dir: str
    encoder: str
    ann: str
    seen: int = 0
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    ignored: list[tuple[str, str]] = field(default_factory=list)
    total: int = 0
    rebuilt: bool = False
    seconds: float = 0.0
    encode_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


ProgressFn = Callable[[int], None]


def _image_digest(path: Path, previous: str | None) -> tuple[str, str]:
    """(digest, stat string); reuse the stored digest when size and mtime are unchanged."""
    st = path.stat()
    key = f"{st.st_size}:{st.st_mtime_ns}"
    if previous and previous.rsplit(":", 1)[0] == key:
        return previous.rsplit(":", 1)[1], previous
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:32]
    return digest, f"{key}:{digest}"


def _check_image(path: Path) -> str | None:
    """Reason the file is not a usable image, or None."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        return f"unreadable or corrupt image ({type(exc).__name__}: {exc})"
    return None


def _unusable(item: SourceItem, use_images: bool) -> str | None:
    """Why ``item`` cannot be encoded, or None. A caption encoder still checks the image is sound."""
    if use_images:
        return None if item.image is not None or item.captions else "no image and no caption"
    if item.image is not None and (reason := _check_image(item.image)):
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
    encoder: Any, batch: list[SourceItem], use_images: bool
) -> tuple[list[tuple[SourceItem, np.ndarray, str]], list[tuple[str, str]]]:
    """Vectors for a batch: image tower where available, else the mean of caption vectors."""
    from convir.encoders.base import l2_normalize

    done: list[tuple[SourceItem, np.ndarray, str]] = []
    failed: list[tuple[str, str]] = []
    text_items = batch
    if use_images:
        from convir.encoders.base import encode_images_skipping

        with_img = [it for it in batch if it.image is not None]
        text_items = [it for it in batch if it.image is None]
        if with_img:
            vecs, ok, bad = encode_images_skipping(encoder, [it.image for it in with_img], 32)
            for row, i in enumerate(ok):
                done.append((with_img[i], vecs[row], "image"))
            failed += [(with_img[i].id, reason) for i, reason in bad]
    if text_items:
        flat = [c for it in text_items for c in it.captions]
        vecs = encoder.encode_text(flat, batch_size=128)
        start = 0
        for it in text_items:
            n = len(it.captions)
            done.append(
                (it, l2_normalize(vecs[start : start + n].mean(axis=0, keepdims=True))[0], "captions")
            )
            start += n
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
) -> IngestReport:
    """Index (or update) ``gallery`` into ``out``; see the module docstring."""
    from convir.encoders import DEFAULT_ENCODER, has_image_tower, load_encoder
    from convir.index.vector import ANN_KINDS

    t0 = time.perf_counter()
    if ann is not None and ann not in ANN_KINDS:
        raise ConvirError(f"unknown --ann {ann!r}; choose one of: {', '.join(ANN_KINDS)}")
    store = Store(out, create=True)
    source_key = json.dumps([str(Path(gallery).expanduser().resolve()), fmt])
    have_source = store.get("source")
    if have_source and have_source != source_key and not replace and store.count():
        raise ConvirError(
            f"{out} indexes another gallery ({json.loads(have_source)[0]}); "
            "use a new --out folder, or --replace to make it mirror this gallery instead"
        )
    spec = encoder_spec or store.encoder_spec or DEFAULT_ENCODER
    if store.encoder_spec and spec != store.encoder_spec:
        # the stored spec is canonical (absolute model paths); a different kind can be refused
        # at once, the same kind only after loading shows it resolves to something else
        same_kind = spec.split(":", 1)[0] == store.encoder_spec.split(":", 1)[0]
        if not same_kind or load_encoder(spec, long_text=long_text).spec != store.encoder_spec:  # type: ignore[arg-type]
            store.bind_encoder(spec, -1)  # raises the mismatch error
        spec = store.encoder_spec
    ann_kind = ann or store.get("ann") or "flat"
    report = IngestReport(str(out), spec, ann_kind)  # spec may become canonical once loaded

    ignored: list[tuple[str, str]] = []
    items = list(open_source(gallery, fmt, ignored))
    report.ignored = ignored
    report.seen = len(items)
    previous = store.fingerprints()
    pending: list[tuple[SourceItem, str, str | None]] = []
    keep: set[str] = set()
    stat_updates: list[tuple[str, str]] = []
    for it in items:
        if it.error:
            report.failed.append((it.id, it.error))
            continue
        if it.image is not None and not it.image.exists():
            report.failed.append((it.id, f"image file not found: {it.image}"))
            continue
        try:
            h, stat = _fingerprint(it, previous.get(it.id, (None, None))[1])
        except OSError as exc:
            report.failed.append((it.id, f"cannot read image: {exc}"))
            continue
        old = previous.get(it.id)
        if old and old[0] == h:
            keep.add(it.id)
            report.unchanged += 1
            if stat and stat != old[1]:
                stat_updates.append((it.id, stat))
            continue
        pending.append((it, h, stat))
    if stat_updates:
        store.update_stat(stat_updates)

    if pending:
        encoder = load_encoder(spec, long_text=long_text)  # type: ignore[arg-type]
        store.bind_encoder(encoder.spec, encoder.dim)  # canonical: reopens from any folder
        use_images = has_image_tower(encoder)
        ready = []
        for it, h, st in pending:
            reason = _unusable(it, use_images)
            if reason:
                report.failed.append((it.id, reason))
            else:
                ready.append((it, h, st))
        pending = ready
        if on_total:
            on_total(len(pending))
        te = time.perf_counter()
        for start in range(0, len(pending), batch_size):
            chunk = pending[start : start + batch_size]
            meta = {it.id: (h, st) for it, h, st in chunk}
            done, failed = _encode_batch(encoder, [c[0] for c in chunk], use_images)
            report.failed += failed
            store.upsert(
                (
                    StoredItem(it.id, str(it.image) if it.image else None, it.captions, it.meta, src),
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
        report.encode_seconds = time.perf_counter() - te
    elif on_total:
        on_total(0)

    stale = [i for i in previous if i not in keep]  # left the gallery, or now broken
    report.removed = store.delete(stale)
    store.set("source", source_key)
    changed = bool(report.added or report.updated or report.removed)
    if changed or store.current_build() is None or store.get("ann") != ann_kind:
        if store.count() == 0:
            raise ConvirError(_empty_message(report))
        build(store, ann_kind)
        report.rebuilt = True
    report.total = store.count()
    report.seconds = time.perf_counter() - t0
    write_json(Path(out) / REPORT_NAME, report.to_dict())
    store.close()
    return report


def _empty_message(report: IngestReport) -> str:
    msg = "nothing could be indexed"
    if report.failed:
        msg += f": all {len(report.failed)} items failed, e.g. {report.failed[0][0]}: {report.failed[0][1]}"
    elif report.seen == 0:
        msg += ": the gallery has no images or records"
    return msg


def build(store: Store, ann_kind: str) -> Path:
    """Write a new build generation of the search artifacts and publish it atomically."""
    from convir.index.bm25 import BM25Index
    from convir.index.vector import build_ann, save_ann

    ids: list[str] = []
    vecs: list[np.ndarray] = []
    docs: list[str] = []
    for item_id, vec, caps in store.iter_vectors():
        ids.append(item_id)
        vecs.append(vec)
        docs.append(" . ".join(caps))
    matrix = np.vstack(vecs).astype(np.float32)
    gen = store.next_generation()
    target = store.builds_dir / gen
    with atomic_dir(target) as tmp:
        np.save(tmp / "vectors.npy", matrix)
        (tmp / "ids.json").write_text(json.dumps(ids, ensure_ascii=False), encoding="utf-8")
        if ann_kind != "flat":
            save_ann(build_ann(matrix, ann_kind), tmp / "ann.faiss")
        BM25Index.build(docs).save(tmp / "bm25")
        (tmp / "build.json").write_text(
            json.dumps(
                {
                    "generation": gen,
                    "count": len(ids),
                    "dim": int(matrix.shape[1]),
                    "encoder": store.encoder_spec,
                    "ann": ann_kind,
                    "created": time.time(),
                },
                indent=2,
            ),
            encoding="utf-8",
        )
    store.set("ann", ann_kind)
    store.publish_build(gen)
    return target


def iter_failed(report: IngestReport) -> Iterable[str]:
    for item_id, reason in report.failed:
        yield f"{item_id}: {reason}"
