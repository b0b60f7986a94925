"""A photo's own metadata (issue 31): when, where, with what camera, and how large.

Read at index time into each item's ``meta`` so ``--where`` can filter a plain folder with no
manifest::

    taken         ISO 8601 capture time: EXIF DateTimeOriginal with OffsetTimeOriginal when
                  present, else the file's modification time (``taken_source`` says which:
                  "exif" or "file")
    gps           {"lat": float, "lon": float} from the GPS IFD
    place         {"city", "region", "country"} reverse-geocoded offline from ``gps``
                  (reverse_geocoder's bundled GeoNames cities1000 table; country is the ISO
                  3166 two-letter code)
    camera        "Make Model" (``camera_make`` / ``camera_model`` hold the parts)
    width/height  pixel size as displayed (after the EXIF orientation)
    orientation   the EXIF orientation tag (1-8), when present

A manifest's own ``meta`` keys win over these. HEIC/HEIF (pillow-heif) and RAW files (the
embedded JPEG preview, via rawpy) open through :func:`open_image`, the one place convir opens
photos in formats Pillow does not read by itself.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
from pathlib import Path
from typing import Any

from convir.errors import ConvirError

HEIF_EXTS = {".heic", ".heif", ".hif"}
RAW_EXTS = {".dng", ".cr2", ".cr3", ".nef", ".arw", ".orf", ".rw2", ".raf", ".pef", ".srw"}
PHOTO_KEYS = ("taken", "taken_source", "gps", "place", "camera", "camera_make", "camera_model", "width")
PHOTO_KEYS += ("height", "orientation")
MARKER = "taken"  # present in every photo's meta once read: an older index lacks it

_EXIF_IFD, _GPS_IFD = 0x8769, 0x8825
_MAKE, _MODEL, _ORIENTATION, _DATETIME = 271, 272, 274, 306
_DATETIME_ORIGINAL, _OFFSET_ORIGINAL = 36867, 36881
_geocoder: Any = None
_heif_registered = False


def _hint(pkg: str, what: str) -> ConvirError:
    return ConvirError(f"{what} needs {pkg}: pip install 'convir[photos]'")


def register_heif() -> bool:
    """Let Pillow open HEIC/HEIF (once); False when pillow-heif is not installed."""
    global _heif_registered
    if not _heif_registered:
        try:
            from pillow_heif import register_heif_opener
        except ImportError:
            return False
        register_heif_opener()
        _heif_registered = True
    return True


def open_image(path: Path) -> Any:
    """``Image.open`` that also reads HEIC/HEIF and RAW (its embedded preview).

    A RAW file's preview is the camera's own JPEG rendering, full size on most bodies: decoding
    the sensor data would be slower and no better for retrieval."""
    from PIL import Image

    suffix = Path(path).suffix.lower()
    if suffix in HEIF_EXTS and not register_heif():
        raise _hint("pillow-heif", f"{Path(path).name}: HEIC/HEIF")
    if suffix in RAW_EXTS:
        try:
            import rawpy
        except ImportError:
            raise _hint("rawpy", f"{Path(path).name}: RAW") from None
        try:
            with rawpy.imread(str(path)) as raw:
                try:
                    thumb = raw.extract_thumb()
                except (rawpy.LibRawNoThumbnailError, rawpy.LibRawUnsupportedThumbnailError):
                    return Image.fromarray(raw.postprocess())  # no preview: decode the sensor data
        except rawpy.LibRawError:
            return Image.open(path)  # not a RAW LibRaw knows (a TIFF named .dng?): Pillow's turn
        if thumb.format == rawpy.ThumbFormat.JPEG:
            return Image.open(io.BytesIO(thumb.data))
        return Image.fromarray(thumb.data)
    return Image.open(path)


def _raw_exif(path: Path) -> Any:
    """A RAW file's own EXIF: most RAW formats are TIFF inside, whose IFDs Pillow parses even
    where it cannot decode the pixels (a camera's preview JPEG often has no EXIF); None if not."""
    from PIL import Image

    try:
        with open(path, "rb") as f:
            head = f.read(4 << 20)  # the IFDs sit near the start of the file
        if head[:4] not in (b"II*\0", b"MM\0*"):
            return None
        exif = Image.Exif()
        exif.load(head)
        return exif if len(exif) else None
    except Exception:  # an unreadable header: the preview's EXIF, if any
        return None


def _ratio(v: Any) -> float:
    return float(v[0]) / float(v[1]) if isinstance(v, tuple) else float(v)


def _degrees(dms: Any, ref: Any) -> float | None:
    try:
        d, m, s = (_ratio(x) for x in dms)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    value = d + m / 60 + s / 3600
    return -value if str(ref).strip().upper() in ("S", "W") else value


def _text(v: Any) -> str:
    if isinstance(v, bytes):
        v = v.decode("utf-8", "replace")
    return str(v).strip("\x00 ").strip()


def _exif_time(exif: Any) -> str | None:
    """DateTimeOriginal (else DateTime) with OffsetTimeOriginal when present, as ISO 8601."""
    sub = exif.get_ifd(_EXIF_IFD)
    raw = _text(sub.get(_DATETIME_ORIGINAL) or exif.get(_DATETIME) or "")
    try:
        when = dt.datetime.strptime(raw, "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return None
    offset = _text(sub.get(_OFFSET_ORIGINAL) or "")
    try:
        return (
            dt.datetime.fromisoformat(when.isoformat() + offset).isoformat() if offset else when.isoformat()
        )
    except ValueError:
        return when.isoformat()


def _file_time(path: Path) -> str:
    """The file's modification time in the local zone (a photo without EXIF time)."""
    return dt.datetime.fromtimestamp(path.stat().st_mtime).astimezone().replace(microsecond=0).isoformat()


def places(points: list[tuple[float, float]]) -> list[dict[str, str]]:
    """Offline reverse geocoding: the nearest GeoNames place (population >= 1000) to each point."""
    global _geocoder
    if not points:
        return []
    if _geocoder is None:
        try:
            import reverse_geocoder
        except ImportError:
            raise _hint("reverse_geocoder", "naming GPS places") from None
        _geocoder = reverse_geocoder.RGeocoder(mode=1, verbose=False)  # one process, no pool
    return [{"city": r["name"], "region": r["admin1"], "country": r["cc"]} for r in _geocoder.query(points)]


def read_photo_meta(path: Path, geocode: bool = True) -> dict[str, Any]:
    """The metadata convir stores for one photo; ``{}`` when the file is not a readable image."""
    path = Path(path)
    try:
        with open_image(path) as im:  # TIFF-based files read their IFDs lazily: stay open
            width, height = im.size
            try:
                exif = (_raw_exif(path) if path.suffix.lower() in RAW_EXTS else None) or im.getexif()
                meta = _from_exif(exif, path)
            except Exception:  # broken EXIF: what the file itself tells
                meta = {}
    except ConvirError:
        raise
    except Exception:  # a broken image is reported by the encoder, not here
        return {}
    if "taken" not in meta:
        meta["taken"], meta["taken_source"] = _file_time(path), "file"
    if meta.get("orientation", 1) >= 5:  # rotated a quarter turn: displayed width is the stored height
        width, height = height, width
    meta["width"], meta["height"] = width, height
    if geocode and "gps" in meta:
        with contextlib.suppress(ConvirError):  # no geocoder installed: gps is stored, place is not
            meta["place"] = places([(meta["gps"]["lat"], meta["gps"]["lon"])])[0]
    return meta


def _from_exif(exif: Any, path: Path) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    taken = _exif_time(exif)
    if taken:
        meta["taken"], meta["taken_source"] = taken, "exif"
    orientation = exif.get(_ORIENTATION)
    if isinstance(orientation, int) and 1 <= orientation <= 8:
        meta["orientation"] = orientation
    make, model = _text(exif.get(_MAKE) or ""), _text(exif.get(_MODEL) or "")
    if make or model:
        meta["camera_make"], meta["camera_model"] = make, model
        # "Canon Canon EOS R5" reads badly: the model often repeats the make
        meta["camera"] = (
            model if make and model.lower().startswith(make.lower()) else f"{make} {model}".strip()
        )
    gps = exif.get_ifd(_GPS_IFD)
    if gps.get(2) and gps.get(4):
        lat, lon = _degrees(gps[2], gps.get(1, "N")), _degrees(gps[4], gps.get(3, "E"))
        if lat is not None and lon is not None and abs(lat) <= 90 and abs(lon) <= 180:
            meta["gps"] = {"lat": round(lat, 6), "lon": round(lon, 6)}
    return meta


def with_photo_meta(image: Path | None, meta: dict[str, Any]) -> dict[str, Any]:
    """``meta`` (a manifest's, which wins) over the photo's own metadata."""
    if image is None:
        return meta
    try:
        return {**read_photo_meta(image), **meta}
    except ConvirError:  # HEIC/RAW without its library: the encoder reports the item with the hint
        return meta


def photo_line(meta: dict[str, Any]) -> str:
    """ "2022-07-14 · Paris, FR · Canon EOS R5": a result's photo metadata in one short line.
    A date read from the file's time (no EXIF) is left out: it is when the file was copied,
    not when the photo was taken (it stays in ``meta.taken`` for filters and JSON)."""
    parts = []
    if isinstance(meta.get("taken"), str) and meta.get("taken_source") != "file":
        parts.append(meta["taken"][:10])
    place = meta.get("place")
    if isinstance(place, dict):
        parts.append(", ".join(str(place[k]) for k in ("city", "country") if place.get(k)))
    if isinstance(meta.get("camera"), str):
        parts.append(meta["camera"])
    return " · ".join(p for p in parts if p)
