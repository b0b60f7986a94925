"""Images the server sends: gallery thumbnails and generated images, never a client's path.

A thumbnail is looked up by item id: the file is the path the index recorded for that id,
resolved whole and checked to be inside the gallery root recorded at index time (or, for
a manifest naming images elsewhere, to be exactly the recorded real path), so neither
``..`` in an id nor a symlink planted in the gallery (a file or a folder) reaches other
files. Generated images are served only when the session's own state recorded them and
they lie in the image cache.

Both are re-encoded from their pixels alone (:func:`pixels_only`): the decoded pixels are
copied into a new image with no metadata, after applying the EXIF orientation and
converting an embedded ICC profile to sRGB, so no JPEG comment, EXIF (camera, GPS, time),
ICC profile, XMP, PNG text chunk or C2PA manifest of the original file leaves the server.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp"})


def gallery_root(root_setting: str | None, source_setting: str | None = None) -> Path | None:
    """The gallery root recorded at index time (the ``gallery_root`` setting; an index not yet
    upgraded: the folder of its ``source`` setting ``[path, format]``)."""
    from convir.gallery.store import root_of_source

    return Path(root_setting) if root_setting else root_of_source(source_setting)


def safe_item_path(stored: str, root: Path | None) -> Path | None:
    """The image file of an item (``stored``: the absolute path the index gives for it), or
    None when it is missing or escapes the gallery.

    The path is resolved whole (every symlink on the way, not just the last component) and
    must lie under the gallery root recorded at index time, itself a real path then: a folder
    of the gallery replaced by a symlink to somewhere else afterwards is refused. A manifest
    may name images outside its folder; such a path (stored as its real path at index time)
    is served only while it still resolves to exactly itself, with no symlink anywhere on it."""
    raw = Path(stored)
    if not raw.is_absolute() or ".." in raw.parts:
        return None
    try:
        resolved = raw.resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if not resolved.is_file():
        return None
    if root is not None and root.is_absolute():
        if resolved.is_relative_to(root):
            return resolved
        if raw.is_relative_to(root):
            return None  # under the gallery by name, elsewhere in fact: a symlink on the way
    return resolved if resolved == raw else None


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
    from convir.gallery.photometa import open_image  # HEIC/HEIF and RAW previews too

    with open_image(path) as im:
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
