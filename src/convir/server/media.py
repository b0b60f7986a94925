"""Images the server sends: gallery thumbnails and generated images, never a client's path.

A thumbnail is looked up by item id: the file is the path the index recorded for that id,
resolved and checked to be inside the gallery folder (or to be exactly the recorded file,
for manifests that point elsewhere), so neither ``..`` in an id nor a symlink planted in
the gallery reaches other files. It is re-encoded by Pillow, so only pixels ever leave.
Generated images are served only when the session's own state recorded them and they lie
in the image cache.
"""

from __future__ import annotations

import io
import json
import threading
from collections import OrderedDict
from pathlib import Path

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp"})


def gallery_root(source_setting: str | None) -> Path | None:
    """The folder a gallery was indexed from (the ``source`` setting ``[path, format]``)."""
    if not source_setting:
        return None
    try:
        path = Path(json.loads(source_setting)[0])
    except (ValueError, TypeError, IndexError):
        return None
    return path.parent if path.is_file() else path


def safe_item_path(stored: str, root: Path | None) -> Path | None:
    """The recorded image file of an item, or None when it is missing or escapes the gallery.

    ``convir index`` records paths as it was given them, so a relative path is relative to
    the directory it ran in; it is looked up under the gallery folder by its trailing parts
    (``demo/a.png`` indexed from ``demo`` is ``ROOT/a.png``). An absolute path outside the
    gallery (a manifest may point anywhere) is served only if it is the file itself, not a
    symlink to something else."""
    raw = Path(stored)
    if ".." in raw.parts:
        return None
    real_root = root.resolve() if root is not None else None
    if raw.is_absolute():
        candidates = [raw]
    elif root is None:
        return None
    else:
        candidates = [root.joinpath(*raw.parts[i:]) for i in range(len(raw.parts))]
    for cand in candidates:
        try:
            resolved = cand.resolve(strict=True)
        except (OSError, RuntimeError):
            continue
        if not resolved.is_file():
            continue
        if real_root is not None and resolved.is_relative_to(real_root):
            return resolved
        if cand is raw and raw.is_absolute() and not raw.is_symlink():
            return resolved
    return None


def safe_generated_path(stored: str, images_dir: Path) -> Path | None:
    """A generated image recorded in a session: an existing image file in the image cache."""
    if not stored:
        return None
    try:
        resolved = Path(stored).resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if resolved.suffix.lower() not in IMAGE_SUFFIXES or not resolved.is_file():
        return None
    return resolved if resolved.is_relative_to(images_dir.resolve()) else None


class ThumbnailCache:
    """JPEG thumbnails in memory, least recently used dropped first (bounded by total bytes).

    Keyed by (path, mtime, size, edge) so an image changed on disk gets a new thumbnail."""

    def __init__(self, max_bytes: int = 32 * 1024**2) -> None:
        self.max_bytes = max_bytes
        self._data: OrderedDict[tuple[str, int, int, int], bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, path: Path, edge: int) -> bytes:
        """Raises ``OSError`` / ``ValueError`` when Pillow cannot read the file."""
        st = path.stat()
        key = (str(path), st.st_mtime_ns, st.st_size, edge)
        with self._lock:
            data = self._data.get(key)
            if data is not None:
                self._data.move_to_end(key)
                return data
        data = make_thumbnail(path, edge)
        with self._lock:
            if key not in self._data:
                self._data[key] = data
                self._bytes += len(data)
            while self._bytes > self.max_bytes and self._data:
                _, old = self._data.popitem(last=False)
                self._bytes -= len(old)
        return data


def make_thumbnail(path: Path, edge: int) -> bytes:
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        im.draft("RGB", (edge, edge))  # JPEG: decode at reduced size, much faster
        im = ImageOps.exif_transpose(im).convert("RGB")
        im.thumbnail((edge, edge))
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=82, optimize=True)
    return buf.getvalue()
