"""Inline image previews: the exact kitty / iTerm2 escape sequences, half-block colours, and the
rules for when nothing may be printed (off, not a terminal, no colours)."""

from __future__ import annotations

import base64
import io
import random
import re
from pathlib import Path

import pytest
from PIL import Image
from rich.console import Console

from conftest import make_image
from convir.errors import ConvirError
from convir.preview import (
    detect_protocol,
    halfblock_text,
    kitty_sequence,
    preview_image,
    preview_kind,
    preview_results,
)

KITTY = {"TERM": "xterm-kitty"}
ITERM = {"TERM_PROGRAM": "iTerm.app"}
PLAIN: dict[str, str] = {"TERM": "xterm-256color"}


def _console(color_system: str | None = "truecolor", terminal: bool = True) -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, force_terminal=terminal, color_system=color_system, width=100), buf


@pytest.fixture
def png(tmp_path: Path) -> Path:
    return make_image(tmp_path / "small.png", (30, 160, 90), size=(40, 24))


@pytest.fixture
def quad(tmp_path: Path) -> Path:
    """2x2: red, green on top; blue, white below."""
    im = Image.new("RGB", (2, 2))
    im.putdata([(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)])
    im.save(tmp_path / "quad.png")
    return tmp_path / "quad.png"


def test_detect_protocol() -> None:
    assert detect_protocol(KITTY) == "kitty" and detect_protocol({"KITTY_WINDOW_ID": "3"}) == "kitty"
    assert detect_protocol({"TERM_PROGRAM": "ghostty"}) == "kitty"
    assert detect_protocol(ITERM) == "iterm" and detect_protocol({"TERM_PROGRAM": "WezTerm"}) == "iterm"
    assert detect_protocol({"LC_TERMINAL": "iTerm2"}) == "iterm"
    assert detect_protocol({**KITTY, "TMUX": "/tmp/tmux-0/default,1,0"}) is None  # needs pass-through
    assert detect_protocol(PLAIN) is None and detect_protocol({}) is None


def test_kitty_sequence_carries_the_png(png: Path) -> None:
    console, buf = _console()
    assert preview_image(console, png, width_cells=10, env=KITTY) == "kitty"
    out = buf.getvalue()
    parts = re.findall(r"\x1b_G([^;]*);([^\x1b]*)\x1b\\", out)
    assert parts and out.endswith("\x1b\\\n")
    keys = dict(kv.split("=") for kv in parts[0][0].split(","))
    assert keys == {"a": "T", "f": "100", "q": "2", "c": "10", "m": "0" if len(parts) == 1 else "1"}
    sent = Image.open(io.BytesIO(base64.b64decode("".join(p[1] for p in parts))))
    assert sent.format == "PNG" and sent.size == (40, 24)
    with Image.open(png) as im:
        assert sent.convert("RGB").tobytes() == im.convert("RGB").tobytes()


def test_kitty_sequence_chunks_big_payloads() -> None:
    noise = Image.frombytes("RGB", (96, 96), random.Random(0).randbytes(96 * 96 * 3))
    data = io.BytesIO()
    noise.save(data, format="PNG")
    seq = kitty_sequence(data.getvalue(), 8)
    parts = re.findall(r"\x1b_G([^;]*);([^\x1b]*)\x1b\\", seq)
    assert len(parts) > 2
    assert [p[0].split(",")[-1] for p in parts] == ["m=1"] * (len(parts) - 1) + ["m=0"]
    assert all(p[0] == "m=1" for p in parts[1:-1]) and all(len(p[1]) <= 4096 for p in parts)
    assert base64.b64decode("".join(p[1] for p in parts)) == data.getvalue()


def test_iterm_sequence_carries_the_png(png: Path) -> None:
    console, buf = _console()
    assert preview_image(console, png, width_cells=12, env={"TERM_PROGRAM": "WezTerm"}) == "iterm"
    m = re.fullmatch(
        r"\x1b\]1337;File=inline=1;size=(\d+);width=12;preserveAspectRatio=1:([A-Za-z0-9+/=]+)\x07\n",
        buf.getvalue(),
    )
    assert m
    payload = base64.b64decode(m.group(2))
    assert len(payload) == int(m.group(1))
    assert Image.open(io.BytesIO(payload)).size == (40, 24)


def test_halfblock_colours_of_a_known_image(quad: Path) -> None:
    with Image.open(quad) as im:
        text = halfblock_text(im, 2)
    assert text.plain == "▀▀"
    styles = [(s.style.color.triplet, s.style.bgcolor.triplet) for s in text.spans]  # type: ignore[union-attr]
    assert [(tuple(fg), tuple(bg)) for fg, bg in styles] == [
        ((255, 0, 0), (0, 0, 255)),
        ((0, 255, 0), (255, 255, 255)),
    ]
    console, buf = _console()
    assert preview_image(console, quad, width_cells=2, env=PLAIN) == "blocks"
    out = buf.getvalue()
    assert out.count("\n") == 1  # 2 pixel rows = 1 text row
    assert "\x1b[38;2;255;0;0;48;2;0;0;255m▀" in out and "\x1b[38;2;0;255;0;48;2;255;255;255m▀" in out
    console, buf = _console()
    preview_image(console, quad, width_cells=4, env=PLAIN)  # scaled up: 4 x 4 pixels = 2 rows of 4
    assert buf.getvalue().count("\n") == 2 and buf.getvalue().count("▀") == 8


def test_halfblock_keeps_aspect_and_row_limit() -> None:
    tall = Image.new("RGB", (10, 40), (9, 9, 9))
    text = halfblock_text(tall, 10, max_rows=5)
    rows = text.plain.split("\n")
    assert len(rows) == 5 and len(rows[0]) == 2  # 10 pixel rows -> width shrinks to keep 1:4
    wide = halfblock_text(Image.new("RGB", (64, 16), (1, 2, 3)), 16)
    assert [len(r) for r in wide.plain.split("\n")] == [16, 16]


def test_256_colour_terminal_gets_downgraded_colours(tmp_path: Path) -> None:
    # colours no other test renders: rich caches a style's codes for the first colour system used
    Image.new("RGB", (4, 4), (201, 77, 13)).save(tmp_path / "c.png")
    console, buf = _console("256")
    assert preview_image(console, tmp_path / "c.png", width_cells=4, env=PLAIN) == "blocks"
    assert "\x1b[38;5;" in buf.getvalue() and "▀" in buf.getvalue()


def test_nothing_is_printed_when_off_or_not_a_terminal(png: Path) -> None:
    console, buf = _console()
    assert preview_image(console, png, mode="off", env=KITTY) is None and buf.getvalue() == ""
    pipe, buf = _console(None, terminal=False)  # e.g. stdout redirected to a file
    assert not pipe.is_terminal
    assert preview_image(pipe, png, env=KITTY) is None and preview_image(pipe, png, env=PLAIN) is None
    assert preview_results(pipe, [("#1 a", str(png))], env=PLAIN) == 0
    assert buf.getvalue() == ""
    basic, buf = _console("standard")  # 16 colours: no half blocks in auto
    assert preview_image(basic, png, env=PLAIN) is None and buf.getvalue() == ""
    console, buf = _console()
    assert preview_image(console, png.parent / "missing.png", env=PLAIN) is None  # unreadable: skipped
    (png.parent / "bad.png").write_bytes(b"not a png")
    assert preview_image(console, png.parent / "bad.png", env=KITTY) is None and buf.getvalue() == ""
    with pytest.raises(ConvirError, match="auto, on or off"):
        preview_kind(console, "sometimes")


def test_on_forces_previews_into_a_pipe(png: Path) -> None:
    pipe, buf = _console(None, terminal=False)
    assert preview_image(pipe, png, width_cells=8, mode="on", env=PLAIN) == "blocks"
    assert buf.getvalue().count("\n") == 3 and "\x1b[38;2;" in buf.getvalue()  # 40x24 -> 8x5 -> 3 rows
    pipe, buf = _console(None, terminal=False)
    assert preview_image(pipe, png, mode="on", env=KITTY) == "kitty" and buf.getvalue().startswith("\x1b_G")


def test_preview_results_side_by_side(png: Path, quad: Path) -> None:
    console, buf = _console()
    items = [("#1 small", str(png)), ("#2 quad", str(quad)), ("#3 none", None), ("#4 gone", "/nope.png")]
    assert preview_results(console, items, width_cells=8, env=PLAIN) == 2
    lines = buf.getvalue().rstrip("\n").split("\n")
    assert "#1 small" in lines[0] and "#2 quad" in lines[0]  # one row of labels, pictures below
    assert len(lines) == 1 + 4  # the 8x8 quad is the tallest: 4 rows
    console, buf = _console()
    assert preview_results(console, items[:2], width_cells=8, env=KITTY) == 2
    out = buf.getvalue()
    assert out.count("\x1b_Ga=T") == 2 and out.index("#1 small") < out.index("\x1b_G") < out.index("#2 quad")
