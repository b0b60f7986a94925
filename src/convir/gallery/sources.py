"""Where gallery items come from: an image folder, a JSONL manifest, or a named dataset format.

Every source yields :class:`SourceItem` records; a problem with one record (bad JSON line,
unreadable or oversized caption file, missing image) becomes an item with ``error`` set, so
ingest can skip, count and list it instead of dying. Reads are bounded: a caption sidecar
is judged by its size before it is read, a manifest is read line by line with a cap on
the line length, so one huge file costs neither memory nor time.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from convir.errors import ConvirError
from convir.gallery.photometa import HEIF_EXTS, RAW_EXTS

MAX_SIDECAR_BYTES = 1024**2  # captions are cut to 4,000 characters each: 1 MiB is ~250 of them
MAX_MANIFEST_LINE_BYTES = 64 * 1024**2
IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"} | HEIF_EXTS | RAW_EXTS
FORMATS = {
    "auto": "folder of images (recursive, optional name.txt captions) or a .jsonl manifest",
    "folder": "folder of images; a sidecar name.txt next to name.jpg holds captions, one per line",
    "manifest": 'JSONL, one {"id", "image"?, "captions"?: [...], "meta"?: {...}} per line',
    "flickr8k": "Flickr8k layout: captions.txt (CSV image,caption) + images/",
    "coco-captions": "coco5k layout: Search_Space_coco.json + coco_captions.json (no image files needed)",
}


@dataclass
class SourceItem:
    id: str
    image: Path | None = None
    captions: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


def _clean(captions: list[Any]) -> list[str]:
    return [" ".join(str(c).split()) for c in captions if isinstance(c, str) and c.strip()]


def format_size(n: int) -> str:
    """Bytes for messages, in the binary units ``ls -lh`` shows (1.5 GB = 1.5 x 1024**3)."""
    value = float(n)
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if value < 1024 or unit == "TB":
            return f"{int(value)} bytes" if unit == "bytes" else f"{value:.1f} {unit}".replace(".0 ", " ")
        value /= 1024
    raise AssertionError("unreachable")


def _read_sidecar(path: Path) -> tuple[list[str], str | None]:
    """Captions of ``path``; a file over MAX_SIDECAR_BYTES is refused from its size, unread."""
    try:
        size = path.stat().st_size
        if size > MAX_SIDECAR_BYTES:
            return [], (
                f"caption file {path.name} is {format_size(size)}, over the "
                f"{format_size(MAX_SIDECAR_BYTES)} limit for caption files"
            )
        with path.open("rb") as fh:  # bounded even if the file grows after the stat
            data = fh.read(MAX_SIDECAR_BYTES + 1)
        if len(data) > MAX_SIDECAR_BYTES:
            return [], f"caption file {path.name} is over the {format_size(MAX_SIDECAR_BYTES)} limit"
        return _clean(data.decode("utf-8").splitlines()), None
    except (OSError, UnicodeDecodeError, MemoryError) as exc:
        return [], f"caption file {path.name} unreadable: {exc}"


def iter_folder(root: Path, ignored: list[tuple[str, str]]) -> Iterator[SourceItem]:
    """Images below ``root`` (sorted, hidden files skipped); non-image files go to ``ignored``."""
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue
        try:
            rel.as_posix().encode("utf-8")
        except UnicodeEncodeError:  # undecodable bytes in a file name (not UTF-8 on disk)
            shown = rel.as_posix().encode("utf-8", "backslashreplace").decode("ascii", "replace")
            if path.suffix.lower() in IMAGE_EXTS:
                yield SourceItem(shown, error="file name is not valid UTF-8: rename the file")
            continue
        if path.suffix.lower() not in IMAGE_EXTS:
            if path.suffix.lower() != ".txt" or not any(
                path.with_suffix(e).exists() or path.with_suffix(e.upper()).exists() for e in IMAGE_EXTS
            ):
                ignored.append((rel.as_posix(), "not an image file (extension not recognised)"))
            continue
        caps, err = (
            _read_sidecar(path.with_suffix(".txt")) if path.with_suffix(".txt").exists() else ([], None)
        )
        yield SourceItem(rel.as_posix(), path, caps, {}, err)


def _manifest_record(rec: Any, where: str, base: Path) -> SourceItem:
    """One manifest record as an item; wrong JSON types become the item's error."""
    if not isinstance(rec, dict):
        return SourceItem(f"<{where}>", error=f"{where}: a record must be a JSON object")
    rid = rec.get("id")
    if isinstance(rid, bool) or not isinstance(rid, (str, int)) or not str(rid).strip():
        return SourceItem(f"<{where}>", error=f'{where}: record needs an "id" (string)')
    item_id = str(rid)
    caps = rec.get("captions", [])
    if isinstance(caps, str):
        caps = [caps]
    if not isinstance(caps, list) or not all(isinstance(c, str) for c in caps):
        return SourceItem(item_id, error=f'{where}: "captions" must be a string or a list of strings')
    meta = rec.get("meta", {})
    if meta is None:
        meta = {}
    if not isinstance(meta, dict):
        return SourceItem(item_id, error=f'{where}: "meta" must be an object')
    image = rec.get("image")
    img_path = None
    if image is not None:
        if not isinstance(image, str) or not image.strip() or "\x00" in image:
            return SourceItem(item_id, error=f'{where}: "image" must be a file path (string)')
        img_path = Path(image).expanduser()
        if not img_path.is_absolute():
            img_path = base / img_path
    return SourceItem(item_id, img_path, _clean(caps), meta)


def _bounded_lines(fh: BinaryIO, limit: int) -> Iterator[bytes | None]:
    """The lines of ``fh``; None for a line over ``limit`` bytes, which is skipped unread
    (1 MiB at a time) instead of being held whole: a file without newlines is one such line."""
    while raw := fh.readline(limit + 1):
        if len(raw) <= limit or raw.endswith(b"\n"):
            yield raw
            continue
        while (rest := fh.readline(1024**2)) and not rest.endswith(b"\n"):
            pass
        yield None


def iter_manifest(path: Path) -> Iterator[SourceItem]:
    """Records of a JSONL manifest; every bad line (invalid JSON or UTF-8, wrong types,
    duplicate id, over MAX_MANIFEST_LINE_BYTES) is an item with ``error`` set, never an exception."""
    base = path.parent
    seen: set[str] = set()
    any_line = False
    with path.open("rb") as fh:
        for lineno, raw in enumerate(_bounded_lines(fh, MAX_MANIFEST_LINE_BYTES), 1):
            where = f"{path.name} line {lineno}"
            if raw is None:
                any_line = True
                why = f"{where}: longer than {format_size(MAX_MANIFEST_LINE_BYTES)}, skipped"
                yield SourceItem(f"<{where}>", error=why)
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                any_line = True
                why = f"{where}: not valid UTF-8 ({exc.reason} at byte {exc.start})"
                yield SourceItem(f"<{where}>", error=why)
                continue
            if lineno == 1:
                line = line.removeprefix("\ufeff")  # a byte-order mark from Windows editors
            if not line.strip():
                continue
            any_line = True
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                yield SourceItem(f"<{where}>", error=f"{where}: invalid JSON ({exc.msg})")
                continue
            item = _manifest_record(rec, where, base)
            if item.error is None or not item.id.startswith("<"):
                if item.id in seen:
                    yield SourceItem(f"<{where}>", error=f"{where}: duplicate id {item.id!r}")
                    continue
                seen.add(item.id)
            yield item
    if not any_line:
        raise ConvirError(f"manifest {path} is empty: nothing to index")


def iter_named(fmt: str, path: Path) -> Iterator[SourceItem]:
    from convir import datasets

    loader = {"flickr8k": datasets.load_flickr8k, "coco-captions": datasets.load_coco5k}[fmt]
    for it in loader(path):
        yield SourceItem(
            it.id,
            Path(it.image) if it.image and Path(it.image).exists() else None,
            _clean(list(it.captions)),
            dict(it.meta),
        )


def open_source(
    path: Path, fmt: str = "auto", ignored: list[tuple[str, str]] | None = None
) -> Iterator[SourceItem]:
    """Items of the gallery at ``path`` in format ``fmt`` (see FORMATS).

    The path is made absolute so stored image paths work from any directory (chat, serve)."""
    path = Path(path).expanduser().resolve()
    ignored = ignored if ignored is not None else []
    if fmt not in FORMATS:
        raise ConvirError(f"unknown --format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    if not path.exists():
        raise ConvirError(f"gallery {path} does not exist")
    if fmt == "auto":
        fmt = "manifest" if path.is_file() and path.suffix == ".jsonl" else "folder"
        if path.is_file() and fmt == "folder":
            raise ConvirError(f"{path} is a file; pass a folder of images, a .jsonl manifest, or --format")
    if fmt == "folder":
        if not path.is_dir():
            raise ConvirError(f"{path} is not a folder")
        return iter_folder(path, ignored)
    if fmt == "manifest":
        if not path.is_file():
            raise ConvirError(f"manifest {path} is not a file")
        return iter_manifest(path)
    return iter_named(fmt, path)
