"""Photos with real EXIF (capture time, GPS, camera), written by Pillow / pillow-heif."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

PARIS = (48.8534, 2.3488)
BERLIN = (52.52, 13.405)


def _dms(value: float) -> tuple[float, float, float]:
    value = abs(value)
    d = int(value)
    m = int((value - d) * 60)
    return (float(d), float(m), round((value - d - m / 60) * 3600, 4))


def photo_exif(
    taken: str | None, gps: tuple[float, float] | None, camera: tuple[str, str] | None
) -> Image.Exif:
    exif = Image.Exif()
    if camera:
        exif[271], exif[272] = camera
    if taken:
        sub = exif.get_ifd(0x8769)
        sub[36867] = taken  # "YYYY:MM:DD HH:MM:SS"
        sub[36881] = "+02:00"
    if gps:
        g = exif.get_ifd(0x8825)
        g[1], g[2] = ("N" if gps[0] >= 0 else "S"), _dms(gps[0])
        g[3], g[4] = ("E" if gps[1] >= 0 else "W"), _dms(gps[1])
    return exif


def write_photo(
    path: Path,
    color: tuple[int, int, int] = (200, 30, 30),
    size: tuple[int, int] = (64, 48),
    taken: str | None = "2022:07:14 12:30:00",
    gps: tuple[float, float] | None = PARIS,
    camera: tuple[str, str] | None = ("Canon", "Canon EOS R5"),
    pattern: int = 0,
) -> Path:
    """A JPEG (or, by suffix, HEIC) photo: coloured blocks laid out by ``pattern``, and its EXIF."""
    import numpy as np

    # a coarse random block picture per pattern: perceptual hashes of different photos differ
    blocks = np.random.default_rng(pattern).integers(0, 5, (12, 16, 1)) * np.array(color) // 5 + 20
    im = Image.fromarray(blocks.astype(np.uint8)).resize(size, Image.BILINEAR)  # smooth: a stable pHash
    exif = photo_exif(taken, gps, camera)
    if path.suffix.lower() in (".heic", ".heif"):
        from pillow_heif import register_heif_opener

        register_heif_opener()
        im.save(path, format="HEIF", exif=exif.tobytes(), quality=90)
    else:
        im.save(path, "JPEG", exif=exif.tobytes(), quality=95)
    return path
