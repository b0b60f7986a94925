"""Images the server sends: gallery thumbnails and generated images, never a client's path.

A thumbnail is looked up by item id: the file is the path the index recorded for that id,
resolved and checked to be inside the gallery folder (or to be exactly the recorded file,
for manifests that point elsewhere), so neither ``..`` in an id nor a symlink planted in
the gallery reaches other files. Generated images are served only when the session's own
state recorded them and they lie in the image cache.

Both are re-encoded from their pixels alone (:func:`pixels_only`): the decoded pixels are
copied into a new image with no metadata, after applying the EXIF orientation and
converting an embedded ICC profile to sRGB, so no JPEG comment, EXIF (camera, GPS, time),
ICC profile, XMP, PNG text chunk or C2PA manifest of the original file leaves the server.
"""

from __future__ import annotations

import io
import json
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

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

    Keyed by (path, mtime, size, edge) so an image changed on disk gets a new thumbnail;
    ``edge`` 0 is the full-size PNG of a generated image."""

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
        data = make_thumbnail(path, edge) if edge else make_png(path)
        with self._lock:
            if key not in self._data:
                self._data[key] = data
                self._bytes += len(data)
            while self._bytes > self.max_bytes and self._data:
                _, old = self._data.popitem(last=False)
                self._bytes -= len(old)
        return data


def pixels_only(im: Any) -> Any:
    """An RGB copy of ``im`` that carries its pixels and nothing else.

    The EXIF orientation is applied and an ICC profile converted to sRGB first, so the picture
    looks the same without them; then the pixels go into a fresh image whose ``info`` is
    empty, so Pillow's encoders (which fall back to ``im.info`` for comments and profiles)
    have nothing to copy."""
    from PIL import Image, ImageOps

    icc = im.info.get("icc_profile")
    im = ImageOps.exif_transpose(im)
    if im.mode not in ("RGB", "CMYK", "L"):
        im = im.convert("RGBA" if "A" in im.getbands() or "transparency" in im.info else "RGB")
        if im.mode == "RGBA":  # flatten onto white: JPEG and the page's tiles have no alpha
            flat = Image.new("RGB", im.size, (255, 255, 255))
            flat.paste(im, mask=im.getchannel("A"))
            im = flat
    if icc:
        im = _to_srgb(im, icc)
    im = im.convert("RGB")
    return Image.frombytes("RGB", im.size, im.tobytes())


def _to_srgb(im: Any, icc: bytes) -> Any:
    from PIL import ImageCms

    try:
        src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        return ImageCms.profileToProfile(im, src, ImageCms.createProfile("sRGB"), outputMode="RGB")
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return im  # a broken profile: keep the pixels as they are


def make_thumbnail(path: Path, edge: int) -> bytes:
    """JPEG of the image's pixels, longest side at most ``edge``."""
    from PIL import Image

    with Image.open(path) as im:
        im.draft("RGB", (edge, edge))  # JPEG: decode at reduced size, much faster
        clean = pixels_only(im)
    clean.thumbnail((edge, edge))
    buf = io.BytesIO()
    clean.save(buf, "JPEG", quality=82, optimize=True)
    return buf.getvalue()


def make_png(path: Path) -> bytes:
    """PNG of the image's pixels at full size (a generated image)."""
    from PIL import Image

    with Image.open(path) as im:
        clean = pixels_only(im)
    buf = io.BytesIO()
    clean.save(buf, "PNG")
    return buf.getvalue()
