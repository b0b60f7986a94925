"""Inline image thumbnails in the terminal (``convir chat --previews auto|on|off``).

Three renderers, picked per terminal:

* kitty graphics protocol (kitty, Ghostty: ``TERM=xterm-kitty``, ``KITTY_WINDOW_ID``,
  ``TERM_PROGRAM=ghostty``): a PNG thumbnail sent base64 in 4096-byte chunks
  (``ESC _G a=T,f=100,q=2,c=COLS,m=1;... ESC \\``); ``q=2`` stops the terminal from replying
  into stdin, where the chat prompt would read it.
* iTerm2 inline images (iTerm2, WezTerm: ``TERM_PROGRAM=iTerm.app``/``WezTerm``,
  ``LC_TERMINAL=iTerm2``): ``ESC ]1337;File=inline=1;size=N;width=COLS;preserveAspectRatio=1:BASE64 BEL``.
* anywhere else with 256 or true colours: unicode half blocks through rich, one ``▀`` per two
  pixels (foreground = top pixel, background = bottom pixel).

Inside tmux/screen the graphics protocols need pass-through, so half blocks are used there.
``auto`` renders only when stdout is a terminal (nothing goes into a pipe or a log file);
``on`` renders even when it is not (a graphics protocol if detected, else true-colour half
blocks); ``off`` never. A file that cannot be read is skipped silently: a preview must never
break the chat.
"""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from convir.errors import ConvirError

if TYPE_CHECKING:
    from PIL import Image
    from rich.text import Text

PREVIEW_MODES = ("auto", "on", "off")
_CHUNK = 4096  # kitty: base64 payload per escape sequence


def detect_protocol(env: Mapping[str, str] | None = None) -> str | None:
    """``kitty``, ``iterm`` or None (use half blocks) from the environment."""
    env = os.environ if env is None else env
    if env.get("TMUX") or env.get("TERM", "").startswith(("screen", "tmux")):
        return None
    prog = env.get("TERM_PROGRAM", "")
    if env.get("TERM") == "xterm-kitty" or env.get("KITTY_WINDOW_ID") or prog == "ghostty":
        return "kitty"
    if prog in ("iTerm.app", "WezTerm") or env.get("LC_TERMINAL") == "iTerm2":
        return "iterm"
    return None


def _open(path: str | Path) -> Image.Image | None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            return im.convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError):
        return None


def thumbnail_png(image: Image.Image, max_side: int) -> bytes:
    im = image.copy()
    if max(im.size) > max_side:
        im.thumbnail((max_side, max_side))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def kitty_sequence(png: bytes, width_cells: int) -> str:
    """Transmit-and-display escape sequence(s) for a PNG, ``width_cells`` columns wide."""
    data = base64.b64encode(png).decode("ascii")
    chunks = [data[i : i + _CHUNK] for i in range(0, len(data), _CHUNK)] or [""]
    out = []
    for i, chunk in enumerate(chunks):
        more = int(i < len(chunks) - 1)
        keys = f"a=T,f=100,q=2,c={width_cells},m={more}" if i == 0 else f"m={more}"
        out.append(f"\x1b_G{keys};{chunk}\x1b\\")
    return "".join(out)


def iterm_sequence(png: bytes, width_cells: int) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f"\x1b]1337;File=inline=1;size={len(png)};width={width_cells};preserveAspectRatio=1:{data}\x07"


def halfblock_text(image: Image.Image, width_cells: int, max_rows: int | None = None) -> Text:
    """The image as rows of ``▀`` cells: ``width_cells`` wide, 2 pixels per cell vertically."""
    from PIL import Image
    from rich.color import Color
    from rich.style import Style
    from rich.text import Text

    w, h = image.size
    cols = max(1, int(width_cells))
    rows_px = max(2, round(cols * h / w))
    rows_px += rows_px % 2
    if max_rows and rows_px > 2 * max_rows:  # too tall: shrink the width to keep the aspect ratio
        rows_px = 2 * max_rows
        cols = max(1, round(rows_px * w / h))
    if (cols, rows_px) == (w, h):
        small = image.convert("RGB")
    else:
        shrink = cols <= w and rows_px <= h
        small = image.convert("RGB").resize(
            (cols, rows_px), Image.Resampling.BOX if shrink else Image.Resampling.NEAREST
        )
    px = small.load()
    text = Text(no_wrap=True, overflow="crop")
    for y in range(0, rows_px, 2):
        if y:
            text.append("\n")
        for x in range(cols):
            top, bottom = px[x, y], px[x, y + 1]
            text.append("▀", Style(color=Color.from_rgb(*top), bgcolor=Color.from_rgb(*bottom)))
    return text


def _ansi(text: Text) -> str:
    """True-colour ANSI for ``text`` regardless of the target console's detected colours."""
    from rich.console import Console

    buf = io.StringIO()
    Console(file=buf, force_terminal=True, color_system="truecolor", width=10_000).print(text)
    return buf.getvalue()


def preview_kind(console: Any, mode: str = "auto", env: Mapping[str, str] | None = None) -> str | None:
    """What :func:`preview_image` would draw on ``console``: kitty, iterm, blocks or None."""
    if mode not in PREVIEW_MODES:
        raise ConvirError(f"unknown previews mode {mode!r}; use auto, on or off")
    if mode == "off" or (mode == "auto" and not console.is_terminal):
        return None
    proto = detect_protocol(env)
    if proto:
        return proto
    if mode == "on" or console.color_system in ("truecolor", "256"):
        return "blocks"
    return None


def preview_image(
    console: Any,
    path: str | Path,
    width_cells: int = 16,
    mode: str = "auto",
    env: Mapping[str, str] | None = None,
    max_rows: int = 8,
) -> str | None:
    """Draw a thumbnail of ``path`` inline; returns the renderer used (None = nothing drawn)."""
    kind = preview_kind(console, mode, env)
    if kind is None:
        return None
    image = _open(path)
    if image is None:
        return None
    if kind in ("kitty", "iterm"):
        png = thumbnail_png(image, min(512, 20 * width_cells))
        seq = kitty_sequence(png, width_cells) if kind == "kitty" else iterm_sequence(png, width_cells)
        console.file.write(seq + "\n")
        console.file.flush()
        return kind
    text = halfblock_text(image, width_cells, max_rows)
    if console.color_system in ("truecolor", "256"):
        console.print(text)
    else:  # --previews on without detected colours: the user asked for it, send true colour
        console.file.write(_ansi(text))
        console.file.flush()
    return kind


def preview_results(
    console: Any,
    items: list[tuple[str, str | None]],
    width_cells: int = 16,
    mode: str = "auto",
    env: Mapping[str, str] | None = None,
    max_rows: int = 8,
) -> int:
    """Thumbnails of several results, each under its label (``"#1 id"``); half blocks side by
    side, protocol images one under the other. Items without a readable file are skipped.
    Returns how many were drawn."""
    kind = preview_kind(console, mode, env)
    if kind is None:
        return 0
    readable = [(label, p) for label, p in items if p and Path(p).is_file()]
    if kind == "blocks" and console.color_system in ("truecolor", "256"):
        from rich.table import Table
        from rich.text import Text

        cells = []
        for label, p in readable:
            image = _open(p)  # type: ignore[arg-type]
            if image is not None:
                cells.append(
                    Text(label, no_wrap=True, overflow="ellipsis")
                    + "\n"
                    + halfblock_text(image, width_cells, max_rows)
                )
        if cells:
            grid = Table.grid(padding=(0, 2))
            for _ in cells:
                grid.add_column(max_width=max(width_cells, 4))
            grid.add_row(*cells)
            console.print(grid)
        return len(cells)
    drawn = 0
    for label, p in readable:
        console.print(label, markup=False, highlight=False)
        drawn += preview_image(console, p, width_cells, mode, env, max_rows) is not None  # type: ignore[arg-type]
    return drawn
