"""A minimal real DNG (linear RGB, DNG 1.4 tags) written byte by byte: LibRaw (rawpy) decodes it,
Pillow does not, so it exercises convir's RAW path without a camera file in the repository."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np


def write_dng(
    path: Path, width: int = 64, height: int = 48, make: str = "Convir", model: str = "Test DNG"
) -> Path:
    rng = np.random.default_rng(7)
    blocks = rng.integers(2000, 60000, (6, 8, 3)).astype(np.uint16)
    pixels = np.repeat(np.repeat(blocks, height // 6, axis=0), width // 8, axis=1)[:height, :width]
    data = pixels.astype("<u2").tobytes()
    extra = bytearray()
    base = 8  # header; then the IFD; then out-of-line values; then the pixels

    entries: list[tuple[int, int, int, bytes]] = []  # tag, type, count, value bytes

    def add(tag: int, typ: int, values: list[int] | bytes, fmt: str = "") -> None:
        raw = values if isinstance(values, bytes) else struct.pack("<" + fmt * len(values), *values)
        count = len(values)
        if typ == 10:
            count //= 2
        entries.append((tag, typ, count, raw))

    def ascii_(s: str) -> bytes:
        return s.encode() + b"\0"

    add(254, 4, [0], "I")
    add(256, 4, [width], "I")
    add(257, 4, [height], "I")
    add(258, 3, [16, 16, 16], "H")
    add(259, 3, [1], "H")
    add(262, 3, [34892], "H")  # LinearRaw
    add(271, 2, ascii_(make))
    add(272, 2, ascii_(model))
    add(273, 4, [0], "I")  # patched below
    add(274, 3, [1], "H")
    add(277, 3, [3], "H")
    add(278, 4, [height], "I")
    add(279, 4, [len(data)], "I")
    add(284, 3, [1], "H")
    add(50706, 1, bytes([1, 4, 0, 0]))
    add(50708, 2, ascii_(f"{make} {model}"))
    add(50721, 10, [1, 1, 0, 1, 0, 1, 0, 1, 1, 1, 0, 1, 0, 1, 0, 1, 1, 1], "i")  # ColorMatrix1 = I
    add(50778, 3, [21], "H")  # D65
    ifd_size = 2 + 12 * len(entries) + 4
    extra_at = base + ifd_size
    sizes = {1: 1, 2: 1, 3: 2, 4: 4, 10: 8}
    out_of_line = sum(len(r) + len(r) % 2 for _, t, c, r in entries if sizes[t] * c > 4)
    strip_at = extra_at + out_of_line
    ifd = struct.pack("<H", len(entries))
    for tag, typ, count, raw in entries:
        if tag == 273:
            raw = struct.pack("<I", strip_at)
        if sizes[typ] * count > 4:
            ifd += struct.pack("<HHII", tag, typ, count, extra_at + len(extra))
            extra += raw + (b"\0" if len(raw) % 2 else b"")
        else:
            ifd += struct.pack("<HHI", tag, typ, count) + raw.ljust(4, b"\0")
    ifd += struct.pack("<I", 0)
    path.write_bytes(b"II*\0" + struct.pack("<I", base) + ifd + bytes(extra) + data)
    return path
