#!/usr/bin/env python
"""Generate the offline sample gallery shipped in ``src/convir/demo/gallery/``.

Every image is drawn from scratch with Pillow (flat shapes and gradients) so the gallery is
original synthetic content with no third-party rights (CC0, see the gallery README). Each
``NAME.png`` gets a sidecar ``NAME.txt`` with 2-3 human-style captions, one per line, that
describe what is actually drawn (objects, colours, counts, positions, time of day).

Scenes deliberately overlap (several boats, several red objects, day and night versions of
the same place) so multi-turn conversational search has something to disambiguate.

The output is deterministic: all randomness comes from per-image seeds, and PNGs are written
without timestamps. Re-running the script rewrites the gallery byte-for-byte (for a given
Pillow/zlib version) and removes stale ``.png``/``.txt`` files it no longer produces.

Usage::

    python scripts/make_demo_gallery.py            # writes into src/convir/demo/gallery/
    python scripts/make_demo_gallery.py --out DIR  # somewhere else
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

W, H = 256, 192  # output size
S = 2  # supersampling factor: draw at 2x, downsample for smooth edges
HORIZON = 118
PALETTE_COLORS = 128

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "src" / "convir" / "demo" / "gallery"

Color = tuple[int, int, int]

# ---------------------------------------------------------------------------------------
# colours and sky / water gradients
# ---------------------------------------------------------------------------------------

RED = (206, 36, 40)
DARK_RED = (140, 28, 30)
WHITE = (246, 246, 242)
BLACK = (22, 22, 26)
GREY = (128, 130, 136)
DARK_GREY = (70, 72, 78)
YELLOW = (250, 212, 40)
ORANGE = (242, 132, 30)
GREEN = (60, 150, 60)
DARK_GREEN = (34, 100, 44)
LEAF_GREEN = (88, 176, 70)
BLUE = (40, 90, 200)
LIGHT_BLUE = (150, 200, 240)
BROWN = (120, 76, 40)
DARK_BROWN = (80, 50, 28)
PURPLE = (110, 50, 140)
PINK = (240, 120, 170)
SAND = (232, 206, 150)
SNOW = (240, 244, 250)
LIT_WINDOW = (255, 220, 110)

SKY_DAY = [(0.0, (70, 135, 220)), (1.0, (185, 220, 250))]
SKY_SUNSET = [(0.0, (60, 45, 115)), (0.4, (200, 80, 95)), (0.75, (245, 150, 70)), (1.0, (255, 205, 120))]
SKY_NIGHT = [(0.0, (6, 8, 30)), (1.0, (28, 38, 84))]
SKY_OVERCAST = [(0.0, (150, 156, 168)), (1.0, (208, 212, 220))]
SKY_AFTER_RAIN = [(0.0, (96, 120, 160)), (1.0, (196, 214, 232))]

WATER_DAY = [(0.0, (60, 130, 200)), (1.0, (24, 70, 140))]
WATER_SUNSET = [(0.0, (220, 130, 100)), (1.0, (70, 45, 100))]
WATER_NIGHT = [(0.0, (24, 34, 76)), (1.0, (6, 10, 32))]


def mix(a: Color, b: Color, t: float) -> Color:
    return tuple(round(a[i] + (b[i] - a[i]) * t) for i in range(3))  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------
# canvas: 256x192 coordinates, drawn at S x resolution
# ---------------------------------------------------------------------------------------


class Canvas:
    def __init__(self, bg: Color = WHITE) -> None:
        self.img = Image.new("RGB", (W * S, H * S), bg)
        self.d = ImageDraw.Draw(self.img)

    @staticmethod
    def _pts(pts) -> list[tuple[float, float]]:
        return [(x * S, y * S) for x, y in pts]

    @staticmethod
    def _box(x0, y0, x1, y1) -> list[float]:
        return [min(x0, x1) * S, min(y0, y1) * S, max(x0, x1) * S, max(y0, y1) * S]

    def rect(self, x0, y0, x1, y1, fill, outline=None, width=1, radius=0) -> None:
        if radius:
            self.d.rounded_rectangle(
                self._box(x0, y0, x1, y1), radius * S, fill=fill, outline=outline, width=width * S
            )
        else:
            self.d.rectangle(self._box(x0, y0, x1, y1), fill=fill, outline=outline, width=width * S)

    def ellipse(self, x0, y0, x1, y1, fill=None, outline=None, width=1) -> None:
        self.d.ellipse(self._box(x0, y0, x1, y1), fill=fill, outline=outline, width=int(width * S))

    def circle(self, cx, cy, r, fill=None, outline=None, width=1) -> None:
        self.ellipse(cx - r, cy - r, cx + r, cy + r, fill, outline, width)

    def poly(self, pts, fill, outline=None) -> None:
        self.d.polygon(self._pts(pts), fill=fill, outline=outline)

    def line(self, pts, fill, width=1.0) -> None:
        self.d.line(self._pts(pts), fill=fill, width=max(1, round(width * S)), joint="curve")

    def arc(self, box, start, end, fill, width=1.0) -> None:
        self.d.arc(self._box(*box), start, end, fill=fill, width=max(1, round(width * S)))

    def chord(self, box, start, end, fill) -> None:
        self.d.chord(self._box(*box), start, end, fill=fill)

    def pieslice(self, box, start, end, fill) -> None:
        self.d.pieslice(self._box(*box), start, end, fill=fill)

    def vgradient(self, y0, y1, stops, x0=0, x1=W) -> None:
        """Vertical gradient between y0 and y1; stops are (t, colour) with t in [0, 1]."""
        h, w = int((y1 - y0) * S), int((x1 - x0) * S)
        t = np.linspace(0.0, 1.0, h)
        ts = [s[0] for s in stops]
        cols = np.stack([np.interp(t, ts, [s[1][i] for s in stops]) for i in range(3)], axis=1)
        arr = np.repeat(cols[:, None, :], w, axis=1).round().astype(np.uint8)
        self.img.paste(Image.fromarray(arr, "RGB"), (int(x0 * S), int(y0 * S)))

    def sample(self, x, y) -> Color:
        return self.img.getpixel((int(x * S), int(y * S)))

    def overlay(self, draw_fn: Callable[[ImageDraw.ImageDraw], None]) -> None:
        """Draw translucent shapes (RGBA fills) on a layer and composite it."""
        layer = Image.new("RGBA", self.img.size, (0, 0, 0, 0))
        draw_fn(ImageDraw.Draw(layer))
        self.img = Image.alpha_composite(self.img.convert("RGBA"), layer).convert("RGB")
        self.d = ImageDraw.Draw(self.img)

    def finish(self) -> Image.Image:
        small = self.img.resize((W, H), Image.Resampling.LANCZOS)
        # MAXCOVERAGE keeps small accents (a carrot nose, a lit window) true to colour; the
        # second pass dithers gradients against that palette to hide banding.
        pal = small.quantize(colors=PALETTE_COLORS, method=Image.Quantize.MAXCOVERAGE)
        return small.quantize(palette=pal, dither=Image.Dither.FLOYDSTEINBERG)


# ---------------------------------------------------------------------------------------
# scenery
# ---------------------------------------------------------------------------------------


def sky(c: Canvas, stops, y1: float = HORIZON) -> None:
    c.vgradient(0, y1, stops)


def ground(c: Canvas, top: Color, bottom: Color, y0: float = HORIZON) -> None:
    c.vgradient(y0, H, [(0.0, top), (1.0, bottom)])


def water(c: Canvas, stops, rng: random.Random, y0: float = HORIZON, ripple: Color | None = None) -> None:
    c.vgradient(y0, H, stops)
    ripple = ripple or mix(stops[0][1], WHITE, 0.35)
    for _ in range(22):
        y = rng.uniform(y0 + 4, H - 3)
        x = rng.uniform(-10, W)
        ln = rng.uniform(8, 22) * (0.6 + (y - y0) / (H - y0))
        c.line([(x, y), (x + ln, y)], ripple, 0.8)


def sun(c: Canvas, x, y, r, color: Color = YELLOW, glow: Color | None = None) -> None:
    if glow:
        c.circle(x, y, r * 1.5, fill=glow)
    c.circle(x, y, r, fill=color)


def sun_reflection(c: Canvas, x, y0, color: Color, rows: int = 7) -> None:
    for i in range(rows):
        y = y0 + 4 + i * 6
        half = 18 - i * 2
        c.line([(x - half, y), (x + half, y)], color, 2)


def moon(c: Canvas, x, y, r, crescent: bool = False, color: Color = (246, 240, 210)) -> None:
    bg = c.sample(x + r * 1.2, y - r * 0.5) if crescent else None
    c.circle(x, y, r, fill=color)
    if crescent:
        c.circle(x + r * 0.55, y - r * 0.25, r * 0.92, fill=bg)


def stars(c: Canvas, rng: random.Random, n: int, y_max: float, avoid=None) -> None:
    for _ in range(n):
        x, y = rng.uniform(2, W - 2), rng.uniform(2, y_max)
        if avoid and math.hypot(x - avoid[0], y - avoid[1]) < avoid[2]:
            continue
        r = rng.choice([0.5, 0.6, 0.7, 0.9, 1.2])
        c.circle(x, y, r, fill=(255, 255, rng.randint(200, 255)))


def cloud(c: Canvas, x, y, s: float = 1.0, color: Color = WHITE) -> None:
    for dx, dy, r in [(-14, 2, 8), (-4, -4, 11), (8, -1, 9), (17, 3, 7), (0, 4, 8)]:
        c.circle(x + dx * s, y + dy * s, r * s, fill=color)


def birds(c: Canvas, pts, color: Color = DARK_GREY, s: float = 1.0) -> None:
    for x, y in pts:
        c.arc((x - 5 * s, y - 2 * s, x, y + 3 * s), 200, 340, color, 1.1)
        c.arc((x, y - 2 * s, x + 5 * s, y + 3 * s), 200, 340, color, 1.1)


def snowflakes(c: Canvas, rng: random.Random, n: int) -> None:
    for _ in range(n):
        c.circle(rng.uniform(0, W), rng.uniform(0, H), rng.choice([0.8, 1.0, 1.3]), fill=WHITE)


def hill(c: Canvas, cx, top, rx, color: Color) -> None:
    c.ellipse(cx - rx, top, cx + rx, top + rx * 0.9, fill=color)


def mountain(c: Canvas, px, py, lx, rx, base, color: Color, snow: Color | None = SNOW, snow_depth=16) -> None:
    c.poly([(lx, base), (px, py), (rx, base)], fill=color)
    if snow:
        t = snow_depth / (base - py)
        a, b = px + (lx - px) * t, px + (rx - px) * t
        y = py + snow_depth
        c.poly(
            [
                (px, py),
                (b, y),
                (a + (b - a) * 0.72, y - 4),
                (a + (b - a) * 0.5, y + 2),
                (a + (b - a) * 0.26, y - 4),
                (a, y),
            ],
            fill=snow,
        )


def tree_round(c: Canvas, x, base, h, leaves: Color = LEAF_GREEN, trunk: Color = BROWN) -> None:
    c.rect(x - h * 0.06, base - h * 0.5, x + h * 0.06, base, fill=trunk)
    dark = mix(leaves, BLACK, 0.18)
    c.circle(x - h * 0.18, base - h * 0.56, h * 0.22, fill=dark)
    c.circle(x + h * 0.18, base - h * 0.56, h * 0.22, fill=dark)
    c.circle(x, base - h * 0.72, h * 0.28, fill=leaves)


def tree_pine(
    c: Canvas, x, base, h, color: Color = DARK_GREEN, snow: bool = False, trunk: Color = DARK_BROWN
) -> None:
    c.rect(x - h * 0.05, base - h * 0.15, x + h * 0.05, base, fill=trunk)
    for top, bot, half in [(0.0, 0.42, 0.2), (0.2, 0.65, 0.28), (0.4, 0.88, 0.36)]:
        pts = [
            (x, base - h + top * h),
            (x + half * h, base - h + bot * h),
            (x - half * h, base - h + bot * h),
        ]
        c.poly(pts, fill=color)
        if snow:
            c.poly(
                [
                    (x, base - h + top * h),
                    (x + half * h * 0.45, base - h + (top + (bot - top) * 0.45) * h),
                    (x, base - h + (top + (bot - top) * 0.38) * h),
                    (x - half * h * 0.45, base - h + (top + (bot - top) * 0.45) * h),
                ],
                fill=SNOW,
            )


def palm_tree(c: Canvas, x, base, h) -> None:
    trunk = (150, 110, 70)
    pts = [(x + 14 * math.sin(t * 1.4) * t, base - h * t) for t in np.linspace(0, 1, 12)]
    for i in range(len(pts) - 1):
        c.line([pts[i], pts[i + 1]], trunk, 7 - 3 * i / len(pts))
    cx, cy = pts[-1]
    for ang in [200, 235, 270, 305, 340, 20, 160]:
        a = math.radians(ang)
        ln = h * 0.45
        tip = (cx + ln * math.cos(a), cy + ln * math.sin(a) + ln * 0.35)
        mid = (cx + ln * 0.55 * math.cos(a), cy + ln * 0.55 * math.sin(a) - 4)
        nx, ny = -math.sin(a) * 5, math.cos(a) * 5
        c.poly([(cx, cy), (mid[0] + nx, mid[1] + ny), tip, (mid[0] - nx, mid[1] - ny)], fill=(46, 130, 56))
    for dx in (-3, 3):
        c.circle(cx + dx, cy + 3, 3, fill=(110, 70, 30))


def cactus(c: Canvas, x, base, h, color: Color = (60, 140, 70)) -> None:
    w = h * 0.16
    c.rect(x - w / 2, base - h, x + w / 2, base, fill=color, radius=w / 2)
    # left arm
    c.rect(x - w * 1.9, base - h * 0.62, x - w * 0.3, base - h * 0.5, fill=color, radius=3)
    c.rect(x - w * 1.9, base - h * 0.85, x - w * 1.15, base - h * 0.5, fill=color, radius=w * 0.38)
    # right arm
    c.rect(x + w * 0.3, base - h * 0.45, x + w * 1.9, base - h * 0.33, fill=color, radius=3)
    c.rect(x + w * 1.15, base - h * 0.7, x + w * 1.9, base - h * 0.33, fill=color, radius=w * 0.38)


def bench(c: Canvas, x, base, w, color: Color = (60, 110, 60)) -> None:
    c.rect(x, base - 12, x + w, base - 10, fill=color)
    c.rect(x, base - 18, x + w, base - 16, fill=color)
    for lx in (x + 3, x + w - 5):
        c.rect(lx, base - 10, lx + 2, base, fill=DARK_GREY)


# ---------------------------------------------------------------------------------------
# buildings
# ---------------------------------------------------------------------------------------


def house(
    c: Canvas,
    x,
    base,
    w,
    h,
    wall: Color,
    roof: Color,
    lit: bool = False,
    door: Color = DARK_BROWN,
    snow_roof: bool = False,
    chimney: bool = True,
) -> None:
    win = LIT_WINDOW if lit else (170, 210, 240)
    frame = WHITE if not lit else mix(wall, BLACK, 0.3)
    roof_top = base - h - h * 0.65
    if chimney:
        c.rect(
            x + w * 0.22, roof_top + h * 0.12, x + w * 0.32, base - h - h * 0.2, fill=mix(roof, BLACK, 0.25)
        )
    c.rect(x - w / 2, base - h, x + w / 2, base, fill=wall)
    c.poly([(x - w / 2 - 5, base - h), (x, roof_top), (x + w / 2 + 5, base - h)], fill=roof)
    if snow_roof:
        c.poly(
            [
                (x - w / 2 - 5, base - h),
                (x, roof_top),
                (x + w / 2 + 5, base - h),
                (x + w / 2 - 2, base - h + 3),
                (x, roof_top + 6),
                (x - w / 2 + 2, base - h + 3),
            ],
            fill=SNOW,
        )
    dw = w * 0.2
    c.rect(x - dw / 2, base - h * 0.55, x + dw / 2, base, fill=door)
    c.circle(x + dw * 0.3, base - h * 0.28, 0.9, fill=YELLOW)
    ww = w * 0.2
    for wx in (x - w * 0.32, x + w * 0.32):
        c.rect(wx - ww / 2, base - h * 0.75, wx + ww / 2, base - h * 0.38, fill=win, outline=frame, width=1)
        c.line([(wx, base - h * 0.75), (wx, base - h * 0.38)], frame, 1)
        c.line([(wx - ww / 2, base - h * 0.565), (wx + ww / 2, base - h * 0.565)], frame, 1)


def barn(c: Canvas, x, base, w, h) -> None:
    c.rect(x - w / 2, base - h, x + w / 2, base, fill=RED)
    roof = [
        (x - w / 2 - 4, base - h),
        (x - w / 2 + 4, base - h - h * 0.45),
        (x, base - h - h * 0.7),
        (x + w / 2 - 4, base - h - h * 0.45),
        (x + w / 2 + 4, base - h),
    ]
    c.poly(roof, fill=(90, 50, 45))
    # big white-trimmed door with an X
    dx0, dx1, dy0 = x - w * 0.2, x + w * 0.2, base - h * 0.7
    c.rect(dx0, dy0, dx1, base, fill=DARK_RED, outline=WHITE, width=2)
    c.line([(dx0, dy0), (dx1, base)], WHITE, 2)
    c.line([(dx1, dy0), (dx0, base)], WHITE, 2)
    c.rect(x - w * 0.1, base - h - h * 0.45, x + w * 0.1, base - h - h * 0.15, fill=WHITE)


def silo(c: Canvas, x, base, w, h) -> None:
    c.rect(x - w / 2, base - h, x + w / 2, base, fill=(176, 180, 186))
    c.chord((x - w / 2, base - h - w / 2, x + w / 2, base - h + w / 2), 180, 360, fill=(140, 144, 150))
    for i in range(1, 5):
        y = base - h * i / 5
        c.line([(x - w / 2, y), (x + w / 2, y)], (150, 154, 160), 1)


def log_cabin(c: Canvas, x, base, w, h) -> None:
    wood, dark = (140, 90, 50), (100, 62, 34)
    c.rect(x - w / 2, base - h, x + w / 2, base, fill=wood)
    for i in range(1, 6):
        y = base - h * i / 6
        c.line([(x - w / 2, y), (x + w / 2, y)], dark, 1)
    c.poly([(x - w / 2 - 6, base - h), (x, base - h - h * 0.7), (x + w / 2 + 6, base - h)], fill=(90, 50, 40))
    c.rect(x - w * 0.1, base - h * 0.6, x + w * 0.1, base, fill=dark)
    c.rect(x + w * 0.2, base - h * 0.7, x + w * 0.38, base - h * 0.4, fill=(170, 210, 240), outline=dark)
    c.rect(x + w * 0.28, base - h - h * 0.55, x + w * 0.36, base - h - h * 0.15, fill=DARK_GREY)


def lighthouse(c: Canvas, x, base, h, night: bool) -> None:
    bw, tw = 15, 9
    bands = 6
    for i in range(bands):
        y0, y1 = base - h * i / bands, base - h * (i + 1) / bands
        w0, w1 = bw + (tw - bw) * i / bands, bw + (tw - bw) * (i + 1) / bands
        c.poly([(x - w0, y0), (x + w0, y0), (x + w1, y1), (x - w1, y1)], fill=RED if i % 2 == 0 else WHITE)
    top = base - h
    c.rect(x - tw - 3, top - 3, x + tw + 3, top, fill=DARK_GREY)
    c.rect(x - tw + 2, top - 15, x + tw - 2, top - 3, fill=LIT_WINDOW if night else (180, 220, 240))
    c.line([(x, top - 15), (x, top - 3)], DARK_GREY, 1)
    c.poly([(x - tw, top - 15), (x, top - 24), (x + tw, top - 15)], fill=DARK_RED)


def rocks(c: Canvas, x0, x1, base, color: Color) -> None:
    c.poly(
        [
            (x0, H),
            (x0 + 6, base + 4),
            (x0 + 22, base - 6),
            (x0 + 40, base - 2),
            (x1 - 18, base - 8),
            (x1 - 4, base + 2),
            (x1, H),
        ],
        fill=color,
    )


def skyline(c: Canvas, rng: random.Random, base, night: bool) -> None:
    x = -4
    while x < W:
        bw = rng.randint(22, 38)
        bh = rng.randint(40, 95)
        col = (32, 36, 56) if night else rng.choice([(150, 156, 170), (120, 130, 150), (175, 170, 160)])
        c.rect(x, base - bh, x + bw, base, fill=col)
        for wy in range(int(base - bh + 6), int(base - 6), 9):
            for wx in range(x + 4, x + bw - 5, 7):
                if night:
                    if rng.random() < 0.45:
                        c.rect(wx, wy, wx + 3, wy + 4, fill=LIT_WINDOW)
                else:
                    c.rect(wx, wy, wx + 3, wy + 4, fill=(200, 225, 245))
        x += bw + rng.randint(1, 4)


def street_lamp(c: Canvas, x, base, h) -> None:
    c.rect(x - 1.2, base - h, x + 1.2, base, fill=(50, 52, 60))
    c.line([(x, base - h), (x + 8, base - h - 3)], (50, 52, 60), 2)
    c.circle(x + 9, base - h - 1, 3, fill=LIT_WINDOW)
    sx, sy = (x + 9) * S, (base - h) * S
    c.overlay(
        lambda d: d.ellipse([sx - 14 * S, sy - 14 * S, sx + 14 * S, sy + 14 * S], fill=(255, 220, 120, 60))
    )


# ---------------------------------------------------------------------------------------
# boats and vehicles
# ---------------------------------------------------------------------------------------


def sailboat(c: Canvas, x, wl, size, sail: Color, hull: Color = DARK_BROWN) -> None:
    """Sailboat centred on x with its waterline at y=wl."""
    w, hh, mast = size, size * 0.18, size * 1.05
    deck = wl - hh * 0.6
    c.poly(
        [(x - w / 2, deck), (x + w / 2, deck), (x + w * 0.36, wl + hh * 0.4), (x - w * 0.36, wl + hh * 0.4)],
        fill=hull,
    )
    c.line([(x, deck), (x, deck - mast)], DARK_GREY, 1.2)
    c.poly([(x + 1, deck - mast), (x + 1, deck - 3), (x + w * 0.44, deck - 3)], fill=sail)
    c.poly(
        [(x - 1.5, deck - mast * 0.86), (x - 1.5, deck - 3), (x - w * 0.34, deck - 3)],
        fill=mix(sail, WHITE, 0.12),
    )
    c.poly([(x, deck - mast - 5), (x + 5, deck - mast - 3), (x, deck - mast - 1)], fill=mix(sail, BLACK, 0.2))


def rowboat(c: Canvas, x, wl, w, color: Color, oars: bool = False) -> None:
    h = w * 0.22
    if oars:
        c.line([(x - w * 0.1, wl - h * 0.9), (x - w * 0.55, wl + h * 0.9)], DARK_BROWN, 1.5)
        c.line([(x + w * 0.1, wl - h * 0.9), (x + w * 0.55, wl + h * 0.9)], DARK_BROWN, 1.5)
    c.chord((x - w / 2, wl - h * 1.6, x + w / 2, wl + h * 0.6), 0, 180, fill=color)
    c.line([(x - w / 2 + 1, wl - h * 0.5), (x + w / 2 - 1, wl - h * 0.5)], mix(color, WHITE, 0.4), 1.2)


def car(c: Canvas, x, base, L, color: Color, headlights: bool = False) -> None:
    """Car facing right, left end at x, wheels touching y=base."""
    r = L * 0.11
    body_top, body_bot = base - r - L * 0.2, base - r * 0.5
    if headlights:
        hx, hy = (x + L) * S, (body_top + 6) * S
        c.overlay(
            lambda d: d.polygon(
                [(hx, hy - 2 * S), (hx + 60 * S, hy - 14 * S), (hx + 60 * S, hy + 18 * S), (hx, hy + 3 * S)],
                fill=(255, 224, 110, 110),
            )
        )
    c.poly(
        [
            (x + L * 0.2, body_top + 1),
            (x + L * 0.32, body_top - L * 0.2),
            (x + L * 0.66, body_top - L * 0.2),
            (x + L * 0.8, body_top + 1),
        ],
        fill=color,
    )
    c.rect(x, body_top, x + L, body_bot, fill=color, radius=4)
    glass = (180, 215, 240)
    c.poly(
        [
            (x + L * 0.25, body_top),
            (x + L * 0.34, body_top - L * 0.16),
            (x + L * 0.48, body_top - L * 0.16),
            (x + L * 0.48, body_top),
        ],
        fill=glass,
    )
    c.poly(
        [
            (x + L * 0.52, body_top),
            (x + L * 0.52, body_top - L * 0.16),
            (x + L * 0.64, body_top - L * 0.16),
            (x + L * 0.75, body_top),
        ],
        fill=glass,
    )
    c.line([(x + L * 0.5, body_top + 2), (x + L * 0.5, body_bot - 2)], mix(color, BLACK, 0.35), 1)
    c.rect(
        x + L - 5, body_top + 3, x + L - 1, body_top + 7, fill=LIT_WINDOW if headlights else (255, 236, 170)
    )
    c.rect(x + 1, body_top + 3, x + 4, body_top + 7, fill=(220, 30, 30))
    for wx in (x + L * 0.22, x + L * 0.78):
        c.circle(wx, base - r, r, fill=BLACK)
        c.circle(wx, base - r, r * 0.45, fill=(170, 170, 175))


def bus(c: Canvas, x, base, L, color: Color = (250, 196, 20)) -> None:
    r = L * 0.06
    top, bot = base - r - L * 0.3, base - r * 0.4
    c.rect(x, top, x + L, bot, fill=color, radius=5)
    for i in range(6):
        wx = x + 8 + i * (L - 26) / 6
        c.rect(wx, top + 5, wx + (L - 26) / 6 - 3, top + 18, fill=(170, 210, 240))
    c.rect(x + L - 14, top + 5, x + L - 3, bot - 4, fill=(170, 210, 240))
    c.line([(x + 2, top + 24), (x + L - 16, top + 24)], mix(color, BLACK, 0.25), 1.5)
    c.rect(x + L - 3, bot - 10, x + L, bot - 6, fill=(255, 240, 180))
    for wx in (x + L * 0.18, x + L * 0.8):
        c.circle(wx, base - r, r, fill=BLACK)
        c.circle(wx, base - r, r * 0.45, fill=(170, 170, 175))


def bicycle(c: Canvas, x, base, r, color: Color) -> None:
    """Bicycle facing right; x is the rear wheel centre, wheels touch y=base."""
    rear, front = (x, base - r), (x + 2.6 * r, base - r)
    bb = (x + 1.15 * r, base - r * 0.85)
    seat = (x + 0.95 * r, base - 2.15 * r)
    head_top, head_bot = (x + 2.2 * r, base - 2.1 * r), (x + 2.3 * r, base - 1.7 * r)
    tyre = (30, 30, 34)
    for cx, cy in (rear, front):
        for k in range(6):
            a = math.pi * k / 6
            c.line(
                [
                    (cx - r * 0.9 * math.cos(a), cy - r * 0.9 * math.sin(a)),
                    (cx + r * 0.9 * math.cos(a), cy + r * 0.9 * math.sin(a)),
                ],
                (150, 150, 156),
                0.5,
            )
        c.circle(cx, cy, r, outline=tyre, width=2.2)
        c.circle(cx, cy, 1.3, fill=DARK_GREY)
    fw = 2.4
    c.line([rear, bb], color, fw)
    c.line([rear, seat], color, fw)
    c.line([bb, seat], color, fw)
    c.line([seat, head_top], color, fw)
    c.line([bb, head_bot], color, fw)
    c.line([head_top, front], color, fw)
    c.line([(seat[0] - 0.1 * r, seat[1]), (seat[0] - 0.15 * r, seat[1] - 0.3 * r)], DARK_GREY, 1.5)
    c.line([(seat[0] - 0.45 * r, seat[1] - 0.32 * r), (seat[0] + 0.15 * r, seat[1] - 0.32 * r)], BLACK, 2.5)
    bar = (head_top[0] - 0.1 * r, head_top[1] - 0.35 * r)
    c.line([head_top, bar], DARK_GREY, 1.5)
    c.line([(bar[0] - 0.25 * r, bar[1] - 0.05 * r), (bar[0] + 0.2 * r, bar[1])], BLACK, 2)
    c.circle(*bb, 2.2, fill=DARK_GREY)


# ---------------------------------------------------------------------------------------
# still life
# ---------------------------------------------------------------------------------------


def wall_and_table(c: Canvas, wall: Color, table: Color = (150, 96, 56), y: float = 128) -> None:
    c.vgradient(0, y, [(0.0, mix(wall, WHITE, 0.15)), (1.0, mix(wall, BLACK, 0.08))])
    c.rect(0, y, W, H, fill=table)
    c.rect(0, y, W, y + 4, fill=mix(table, WHITE, 0.2))
    for i, gy in enumerate(range(int(y) + 14, H, 14)):
        c.line([(0, gy), (W, gy + (3 if i % 2 else -2))], mix(table, BLACK, 0.12), 1)


def checked_cloth(c: Canvas, y: float, a: Color = RED, b: Color = WHITE, sq: int = 16) -> None:
    c.rect(0, y, W, H, fill=b)
    for j, yy in enumerate(range(int(y), H, sq // 2)):
        for i, xx in enumerate(range(0, W, sq)):
            if (i + j) % 2 == 0:
                c.rect(xx, yy, xx + sq, yy + sq // 2, fill=a)


def apple(c: Canvas, x, y, r, color: Color = RED) -> None:
    c.circle(x - r * 0.25, y, r * 0.85, fill=color)
    c.circle(x + r * 0.25, y, r * 0.85, fill=color)
    c.circle(x - r * 0.35, y - r * 0.3, r * 0.22, fill=mix(color, WHITE, 0.45))
    c.line([(x, y - r * 0.65), (x + r * 0.12, y - r * 1.1)], DARK_BROWN, 1.5)
    c.ellipse(x + r * 0.12, y - r * 1.15, x + r * 0.6, y - r * 0.85, fill=LEAF_GREEN)


def orange_fruit(c: Canvas, x, y, r) -> None:
    c.circle(x, y, r, fill=ORANGE)
    c.circle(x - r * 0.35, y - r * 0.35, r * 0.2, fill=(250, 180, 90))
    c.circle(x + r * 0.1, y - r * 0.8, 1.2, fill=(90, 110, 40))


def banana(c: Canvas, x, y, r) -> None:
    c.arc((x - r, y - r * 1.2, x + r, y + r * 0.4), 20, 160, (245, 215, 70), r * 0.3)
    c.circle(x + r * 0.92, y - r * 0.12, 1.4, fill=DARK_BROWN)
    c.circle(x - r * 0.92, y - r * 0.12, 1.4, fill=DARK_BROWN)


def grapes(c: Canvas, x, y, r) -> None:
    for row, n in enumerate([4, 3, 2, 1]):
        for i in range(n):
            gx = x + (i - (n - 1) / 2) * r * 1.7
            c.circle(gx, y + row * r * 1.5, r, fill=(110, 50, 130), outline=(80, 30, 100), width=0.6)
    c.line([(x, y - r), (x + 2, y - r * 2.2)], DARK_BROWN, 1.3)


def lemon(c: Canvas, x, y, r) -> None:
    col = (248, 226, 60)
    c.ellipse(x - r * 1.25, y - r * 0.85, x + r * 1.25, y + r * 0.85, fill=col)
    c.ellipse(x - r * 1.5, y - r * 0.2, x - r * 1.05, y + r * 0.2, fill=col)
    c.ellipse(x + r * 1.05, y - r * 0.2, x + r * 1.5, y + r * 0.2, fill=col)
    c.ellipse(x - r * 0.6, y - r * 0.55, x - r * 0.1, y - r * 0.3, fill=(252, 244, 170))


def bowl_back(c: Canvas, x, y, w, color: Color) -> None:
    c.ellipse(x - w / 2, y - 6, x + w / 2, y + 6, fill=mix(color, BLACK, 0.25))


def bowl_front(c: Canvas, x, y, w, color: Color) -> None:
    c.chord((x - w / 2, y - w * 0.42, x + w / 2, y + w * 0.42), 0, 180, fill=color)
    c.arc((x - w / 2, y - 6, x + w / 2, y + 6), 0, 180, mix(color, WHITE, 0.3), 1.5)
    c.rect(x - w * 0.18, y + w * 0.4, x + w * 0.18, y + w * 0.44, fill=mix(color, BLACK, 0.15))


def balloon(c: Canvas, x, y, r, color: Color, string_to: tuple[float, float] | None = None) -> None:
    knot_y = y + r * 1.2
    end = string_to or (x + 4, knot_y + 48)
    pts = []
    for t in np.linspace(0, 1, 10):
        pts.append((x + (end[0] - x) * t + 2.5 * math.sin(t * 3 * math.pi), knot_y + (end[1] - knot_y) * t))
    c.line(pts, (90, 90, 96), 0.7)
    c.ellipse(x - r, y - r * 1.2, x + r, y + r * 1.2, fill=color)
    c.poly([(x, knot_y - 2), (x - 2.5, knot_y + 3), (x + 2.5, knot_y + 3)], fill=mix(color, BLACK, 0.15))
    c.ellipse(x - r * 0.55, y - r * 0.8, x - r * 0.2, y - r * 0.25, fill=mix(color, WHITE, 0.5))


def hot_air_balloon(c: Canvas, x, y, r, a: Color, b: Color) -> None:
    for k, col in [(1.0, a), (0.7, b), (0.38, a)]:
        c.ellipse(x - r * k, y - r, x + r * k, y + r, fill=col)
        c.poly(
            [
                (x - r * k * 0.9, y + r * 0.45),
                (x + r * k * 0.9, y + r * 0.45),
                (x + r * k * 0.3, y + r * 1.35),
                (x - r * k * 0.3, y + r * 1.35),
            ],
            fill=col,
        )
    c.rect(x - r * 0.32, y + r * 1.3, x + r * 0.32, y + r * 1.4, fill=mix(a, BLACK, 0.3))
    c.line([(x - r * 0.28, y + r * 1.4), (x - r * 0.18, y + r * 1.68)], DARK_BROWN, 0.8)
    c.line([(x + r * 0.28, y + r * 1.4), (x + r * 0.18, y + r * 1.68)], DARK_BROWN, 0.8)
    c.rect(x - r * 0.2, y + r * 1.68, x + r * 0.2, y + r * 1.95, fill=(150, 100, 50))


# ---------------------------------------------------------------------------------------
# scenes
# ---------------------------------------------------------------------------------------

SCENES: list[tuple[str, list[str], Callable[[Canvas, random.Random], None]]] = []


def scene(name: str, *captions: str):
    def deco(fn):
        SCENES.append((name, list(captions), fn))
        return fn

    return deco


@scene(
    "sailboat_red_sail_sunset",
    "A sailboat with a red sail on the sea at sunset.",
    "One small boat with red sails on calm water while the orange sun sets on the horizon.",
    "Sunset over the ocean, a lone red-sailed boat on the left and the sun reflected in the water.",
)
def _(c, rng):
    sky(c, SKY_SUNSET)
    sun(c, 170, HORIZON, 20, (255, 190, 70), glow=(252, 170, 90))
    water(c, WATER_SUNSET, rng)
    sun_reflection(c, 170, HORIZON, (255, 190, 110))
    sailboat(c, 78, 150, 52, RED, hull=(60, 36, 30))


@scene(
    "sailboat_white_sail_sunset",
    "A white sailboat on the sea at sunset.",
    "A boat with white sails on the right, the sun going down over the water behind it.",
    "Orange and purple evening sky over the ocean, one white-sailed boat and two birds.",
)
def _(c, rng):
    sky(c, SKY_SUNSET)
    sun(c, 96, HORIZON, 20, (255, 190, 70), glow=(252, 170, 90))
    water(c, WATER_SUNSET, rng)
    sun_reflection(c, 96, HORIZON, (255, 190, 110))
    sailboat(c, 182, 152, 54, WHITE, hull=(60, 36, 30))
    birds(c, [(60, 46), (76, 38)], (60, 40, 70))


@scene(
    "sailboat_white_sail_day",
    "A white sailboat on a blue sea on a sunny day.",
    "Sailing boat with white sails and a blue hull under a clear blue sky with a few clouds.",
    "Daytime at sea: the sun in the top right corner, white clouds and one white sailboat in the middle.",
)
def _(c, rng):
    sky(c, SKY_DAY)
    sun(c, 222, 30, 15)
    cloud(c, 60, 40, 1.0)
    cloud(c, 150, 70, 0.7)
    water(c, WATER_DAY, rng)
    sailboat(c, 128, 154, 56, WHITE, hull=BLUE)


@scene(
    "two_sailboats_red_blue_day",
    "Two sailboats on the sea in the daytime, one with a red sail and one with a blue sail.",
    "A red-sailed boat on the left and a smaller blue-sailed boat on the right,"
    " on blue water under a sunny sky.",
    "Two boats sailing on a bright day with white clouds.",
)
def _(c, rng):
    sky(c, SKY_DAY)
    sun(c, 36, 28, 14)
    cloud(c, 120, 36, 0.9)
    cloud(c, 215, 60, 0.7)
    water(c, WATER_DAY, rng)
    sailboat(c, 84, 160, 58, RED, hull=WHITE)
    sailboat(c, 190, 138, 36, BLUE, hull=WHITE)


@scene(
    "sailboat_yellow_sail_night",
    "A sailboat with a yellow sail on the sea at night under a full moon.",
    "Night scene: dark water, stars, a bright full moon and one small boat with yellow sails.",
    "A boat sailing at night with the moonlight reflected on the sea.",
)
def _(c, rng):
    sky(c, SKY_NIGHT)
    stars(c, rng, 60, HORIZON - 6, avoid=(190, 42, 24))
    moon(c, 190, 42, 16)
    water(c, WATER_NIGHT, rng, ripple=(50, 64, 110))
    sun_reflection(c, 190, HORIZON, (220, 220, 190), rows=6)
    sailboat(c, 90, 152, 50, YELLOW, hull=(40, 30, 30))


@scene(
    "rowboat_lake_sunset",
    "A small wooden rowboat on a lake at sunset.",
    "A brown rowing boat with two oars on calm water, dark pine trees on the far shore and an orange sky.",
    "Evening on a lake: the sun is setting behind a row of fir trees and a little boat floats in front.",
)
def _(c, rng):
    sky(c, SKY_SUNSET)
    sun(c, 128, HORIZON - 6, 18, (255, 190, 70), glow=(252, 170, 90))
    for i, x in enumerate(range(-4, W + 10, 13)):
        tree_pine(c, x, HORIZON + 2, 26 + (i * 7) % 14, color=(40, 30, 50), trunk=(40, 30, 50))
    water(c, WATER_SUNSET, rng, y0=HORIZON + 1)
    sun_reflection(c, 128, HORIZON, (255, 190, 110), rows=5)
    rowboat(c, 150, 162, 60, (130, 80, 40), oars=True)


@scene(
    "three_rowboats_pier_day",
    "Three rowboats, red, green and yellow, next to a wooden pier on a sunny day.",
    "A wooden dock reaching into blue water with three small colourful boats lined up beside it.",
    "Sunny lake with green hills in the distance, a pier on the left"
    " and a red boat, a green boat and a yellow boat.",
)
def _(c, rng):
    sky(c, SKY_DAY, HORIZON - 20)
    cloud(c, 190, 30, 0.8)
    hill(c, 60, HORIZON - 36, 110, (90, 150, 80))
    hill(c, 210, HORIZON - 30, 90, (70, 130, 70))
    water(c, WATER_DAY, rng, y0=HORIZON - 20)
    c.poly([(0, 120), (110, 120), (118, 128), (0, 128)], fill=(150, 100, 60))
    c.rect(0, 128, 118, 131, fill=(110, 70, 40))
    for px in (10, 45, 80, 112):
        c.rect(px, 128, px + 4, 148, fill=(100, 64, 36))
    for (bx, by), col in zip([(150, 134), (170, 156), (150, 180)], [RED, (40, 150, 70), YELLOW], strict=True):
        rowboat(c, bx, by, 56, col)


@scene(
    "lighthouse_night_sailboat",
    "A red and white striped lighthouse shining its beam at night, with a small sailboat on the dark sea.",
    "Lighthouse on rocks at the right under a starry sky,"
    " its light sweeping across the water towards a white boat.",
    "Night on the coast: a glowing lighthouse, stars and one sailboat.",
)
def _(c, rng):
    sky(c, SKY_NIGHT)
    stars(c, rng, 55, HORIZON - 6)
    water(c, WATER_NIGHT, rng, ripple=(50, 64, 110))
    rocks(c, 150, W + 4, 150, (54, 50, 56))
    lighthouse(c, 200, 156, 90, night=True)
    lx, ly = 200 * S, 50 * S
    c.overlay(
        lambda d: d.polygon(
            [(lx, ly - 4 * S), (0, ly - 40 * S), (0, ly + 14 * S), (lx, ly + 4 * S)], fill=(255, 214, 90, 120)
        )
    )
    sailboat(c, 64, 154, 40, WHITE, hull=(60, 50, 50))


@scene(
    "lighthouse_day",
    "A red and white lighthouse on rocks by the sea on a sunny day.",
    "Striped lighthouse on the coast with a blue sky, white clouds and two seagulls.",
    "Calm blue sea and a tall red-and-white lighthouse standing on grey rocks on the right.",
)
def _(c, rng):
    sky(c, SKY_DAY)
    cloud(c, 70, 40, 1.0)
    cloud(c, 130, 80, 0.6)
    water(c, WATER_DAY, rng)
    rocks(c, 150, W + 4, 150, (120, 116, 112))
    lighthouse(c, 200, 156, 90, night=False)
    birds(c, [(60, 80), (90, 66)], DARK_GREY, 1.3)


@scene(
    "red_house_day",
    "A red house with a grey roof and a green tree beside it on a sunny day.",
    "Small red cottage on green grass with a round tree to its right and a yellow sun in the blue sky.",
    "A red house in the middle of a meadow in the daytime, with one white cloud.",
)
def _(c, rng):
    sky(c, SKY_DAY, 130)
    sun(c, 40, 34, 16)
    cloud(c, 200, 36, 0.9)
    ground(c, (110, 180, 80), (60, 130, 50), 128)
    house(c, 116, 160, 76, 50, RED, (90, 92, 100))
    tree_round(c, 196, 164, 84)


@scene(
    "red_house_night",
    "A red house at night with glowing yellow windows under a crescent moon.",
    "A small red cottage with its lights on after dark, a dark tree next to it and stars in the sky.",
    "Night-time house: lit windows, a thin moon at top left and a starry sky.",
)
def _(c, rng):
    sky(c, SKY_NIGHT, 130)
    stars(c, rng, 50, 120, avoid=(40, 34, 26))
    moon(c, 40, 34, 15, crescent=True)
    ground(c, (30, 60, 40), (14, 34, 24), 128)
    house(c, 116, 160, 76, 50, (150, 40, 40), (50, 52, 62), lit=True)
    tree_round(c, 196, 164, 84, leaves=(24, 64, 40), trunk=(50, 36, 26))


@scene(
    "blue_house_snow",
    "A blue house in the snow with two pine trees, snow falling.",
    "Winter scene with a small blue cottage, snow on its roof and snowy fir trees on both sides.",
    "A blue house on a snowy white field under a grey winter sky.",
)
def _(c, rng):
    sky(c, SKY_OVERCAST, 130)
    ground(c, (236, 240, 248), (210, 218, 232), 128)
    house(c, 128, 162, 78, 50, (60, 100, 190), (80, 60, 60), snow_roof=True)
    tree_pine(c, 46, 168, 80, snow=True)
    tree_pine(c, 212, 166, 72, snow=True)
    snowflakes(c, rng, 90)


@scene(
    "yellow_and_green_houses",
    "Two houses side by side, a yellow one and a green one, on a sunny day.",
    "A yellow house on the left and a green house on the right along a grey street.",
    "Two small houses with brown roofs, blue sky and green lawns.",
)
def _(c, rng):
    sky(c, SKY_DAY, 130)
    sun(c, 226, 26, 13)
    cloud(c, 128, 30, 0.8)
    ground(c, (110, 180, 80), (80, 150, 60), 128)
    c.rect(0, 168, W, H, fill=(120, 122, 128))
    for x in range(6, W, 34):
        c.rect(x, 179, x + 16, 181, fill=WHITE)
    house(c, 72, 160, 72, 48, (245, 205, 60), (140, 80, 50))
    house(c, 184, 160, 72, 48, (90, 170, 90), (140, 80, 50))


@scene(
    "red_barn_silo_field",
    "A red barn with a white-trimmed door and a grey silo in a yellow wheat field.",
    "Farm scene: a big red barn beside a tall silo, a golden field and blue sky.",
    "Red farm building on the left of a round grey silo on a clear sunny day.",
)
def _(c, rng):
    sky(c, SKY_DAY, 130)
    cloud(c, 200, 34, 1.0)
    cloud(c, 40, 24, 0.6)
    ground(c, (230, 196, 90), (200, 160, 60), 128)
    silo(c, 176, 156, 28, 80)
    barn(c, 108, 158, 88, 48)
    for _ in range(60):
        x, y = rng.uniform(0, W), rng.uniform(160, H)
        c.line([(x, y), (x + rng.uniform(-2, 2), y - 6)], (190, 150, 50), 1)


@scene(
    "log_cabin_mountains",
    "A wooden log cabin in front of snowy mountains with pine trees.",
    "A brown cabin in a green valley below snow-capped peaks on a clear day.",
    "Small log house with a chimney, two fir trees and grey mountains behind it.",
)
def _(c, rng):
    sky(c, SKY_DAY, 140)
    mountain(c, 70, 30, -40, 180, 140, (120, 126, 140))
    mountain(c, 180, 44, 80, 290, 140, (100, 108, 124))
    ground(c, (100, 170, 80), (60, 130, 50), 128)
    log_cabin(c, 128, 166, 80, 40)
    tree_pine(c, 56, 168, 64)
    tree_pine(c, 208, 170, 58)


@scene(
    "lone_tree_field_sunset",
    "A single tree alone in a field at sunset.",
    "Silhouette of one tree on a hill against an orange and pink sunset sky.",
    "Evening landscape with a big setting sun behind a low hill and a lone dark tree.",
)
def _(c, rng):
    sky(c, SKY_SUNSET, 150)
    sun(c, 150, 128, 24, (255, 190, 70), glow=(252, 170, 90))
    hill(c, 128, 126, 240, (50, 30, 50))
    c.rect(0, 150, W, H, fill=(50, 30, 50))
    tree_round(c, 96, 132, 90, leaves=(40, 22, 40), trunk=(40, 22, 40))
    birds(c, [(190, 50), (204, 58)], (50, 30, 50))


@scene(
    "autumn_trees_park_bench",
    "Three autumn trees with orange, red and yellow leaves in a park, with a green bench.",
    "Colourful fall trees and a park bench on grass covered with fallen leaves.",
    "An autumn day in the park: a red tree in the middle between an orange one and a yellow one.",
)
def _(c, rng):
    sky(c, SKY_DAY, 130)
    cloud(c, 210, 30, 0.8)
    ground(c, (120, 170, 80), (90, 140, 60), 128)
    tree_round(c, 50, 150, 100, leaves=(236, 130, 40))
    tree_round(c, 128, 146, 110, leaves=(200, 50, 40))
    tree_round(c, 206, 152, 96, leaves=(245, 200, 50))
    bench(c, 100, 176, 56)
    for _ in range(50):
        x, y = rng.uniform(0, W), rng.uniform(150, H)
        c.circle(x, y, 1.4, fill=rng.choice([(236, 130, 40), (200, 50, 40), (245, 200, 50)]))


@scene(
    "snowy_pine_forest",
    "A snowy pine forest with falling snow.",
    "Rows of dark green fir trees covered in snow on a grey winter day.",
    "Winter woods: many snowy evergreen trees on white ground and snowflakes in the air.",
)
def _(c, rng):
    sky(c, SKY_OVERCAST, 140)
    ground(c, (236, 240, 248), (206, 214, 230), 128)
    for row, (base, h, col) in enumerate(
        [(136, 56, (70, 100, 90)), (158, 70, (40, 90, 60)), (184, 84, DARK_GREEN)]
    ):
        for x in range(-10 + row * 12, W + 20, 36 + row * 4):
            tree_pine(c, x + rng.uniform(-4, 4), base, h + rng.uniform(-6, 6), color=col, snow=True)
    snowflakes(c, rng, 100)


@scene(
    "mountains_lake_day",
    "Snow-capped mountains above a blue lake on a sunny day.",
    "Three grey mountains with white peaks reflected in a calm lake.",
    "A mountain landscape in the daytime: rocky peaks, green shore and clear water.",
)
def _(c, rng):
    sky(c, SKY_DAY, 120)
    sun(c, 226, 26, 12)
    peaks = [
        (60, 36, -30, 150, (118, 124, 140)),
        (140, 22, 60, 220, (100, 106, 124)),
        (215, 48, 150, 290, (124, 130, 146)),
    ]
    for px, py, lx, rx, col in peaks:
        mountain(c, px, py, lx, rx, 118, col)
    c.rect(0, 112, W, 120, fill=(70, 130, 60))
    water(c, [(0.0, (110, 160, 210)), (1.0, (50, 100, 170))], rng, y0=120)
    for px, py, lx, rx, col in peaks:
        c.poly([(lx, 120), (px, 120 + (118 - py) * 0.7), (rx, 120)], fill=mix(col, (60, 110, 170), 0.55))
    for _ in range(14):
        y, x = rng.uniform(124, H), rng.uniform(0, W)
        c.line([(x, y), (x + 16, y)], (150, 190, 230), 0.8)


@scene(
    "mountains_night_stars",
    "Dark mountains under a starry night sky with a crescent moon.",
    "Night landscape: black mountain silhouettes, lots of stars and a thin moon on the right.",
    "Starry sky over a mountain range at night.",
)
def _(c, rng):
    sky(c, SKY_NIGHT, 150)
    stars(c, rng, 110, 130, avoid=(200, 40, 24))
    moon(c, 200, 40, 15, crescent=True)
    mountain(c, 60, 70, -40, 170, 160, (30, 34, 52), snow=(80, 86, 110), snow_depth=12)
    mountain(c, 160, 86, 70, 270, 160, (22, 26, 44), snow=(70, 76, 100), snow_depth=10)
    c.rect(0, 150, W, H, fill=(14, 18, 30))


@scene(
    "desert_cactus_sun",
    "Two green cacti in a sandy desert under a hot sun.",
    "Desert scene with sand dunes, tall saguaro cactus plants and a bright yellow sun.",
    "Hot dry day: pale blue sky, golden dunes and two cactuses, one big and one small.",
)
def _(c, rng):
    sky(c, [(0.0, (130, 180, 230)), (1.0, (240, 230, 200))], 140)
    sun(c, 200, 34, 20, (255, 220, 80), glow=(255, 240, 170))
    c.ellipse(-80, 112, 170, 240, fill=(226, 190, 120))
    c.ellipse(90, 118, 340, 250, fill=(236, 200, 130))
    c.rect(0, 160, W, H, fill=SAND)
    c.ellipse(-40, 150, 300, 240, fill=SAND)
    cactus(c, 80, 172, 86)
    cactus(c, 190, 166, 48)


@scene(
    "palm_tree_beach_umbrella",
    "A tropical beach with a palm tree and a red and white striped umbrella.",
    "Sunny beach: sand, blue sea, one palm tree on the left and a beach umbrella on the right.",
    "Seaside on a clear day with a palm tree, a sun umbrella and turquoise water.",
)
def _(c, rng):
    sky(c, SKY_DAY, 110)
    sun(c, 200, 26, 14)
    water(c, [(0.0, (60, 170, 200)), (1.0, (40, 130, 180))], rng, y0=110)
    c.poly([(0, 140), (80, 132), (180, 136), (W, 128), (W, H), (0, H)], fill=SAND)
    palm_tree(c, 50, 176, 110)
    c.line([(180, 178), (176, 122)], (90, 90, 90), 1.6)
    for i in range(6):
        c.pieslice((146, 108, 210, 148), 180 + i * 30, 210 + i * 30, RED if i % 2 == 0 else WHITE)


@scene(
    "kite_over_beach",
    "A red and yellow kite flying over a sandy beach.",
    "A diamond-shaped kite with a long tail high in the blue sky above the sea and the sand.",
    "Windy day at the beach with one kite and two white clouds.",
)
def _(c, rng):
    sky(c, SKY_DAY, 124)
    cloud(c, 60, 40, 0.8)
    cloud(c, 210, 90, 0.7)
    water(c, WATER_DAY, rng, y0=122)
    c.poly([(0, 150), (120, 142), (W, 146), (W, H), (0, H)], fill=SAND)
    kx, ky = 150, 54
    pts = [(kx, ky - 24), (kx + 17, ky - 2), (kx, ky + 30), (kx - 17, ky - 2)]
    center = (kx, ky - 2)
    for i, col in enumerate([RED, YELLOW, RED, YELLOW]):
        c.poly([center, pts[i], pts[(i + 1) % 4]], fill=col)
    c.line([pts[0], pts[2]], DARK_BROWN, 1)
    c.line([pts[1], pts[3]], DARK_BROWN, 1)
    tail = [(kx + 8 * math.sin(t * 5) * t, ky + 30 + 54 * t) for t in np.linspace(0, 1, 16)]
    c.line(tail, (60, 60, 60), 0.8)
    for i in (4, 8, 12):
        tx, ty = tail[i]
        c.poly([(tx - 4, ty - 3), (tx + 4, ty + 3), (tx + 4, ty - 3), (tx - 4, ty + 3)], fill=BLUE)
    c.line([(kx, ky + 2), (40, 180)], (70, 70, 70), 0.6)


@scene(
    "red_car_country_road",
    "A red car driving on a country road on a sunny day.",
    "A small red car on a grey road with green fields and trees behind it.",
    "Red hatchback on the road in the countryside, blue sky and white clouds.",
)
def _(c, rng):
    sky(c, SKY_DAY, 130)
    sun(c, 36, 28, 13)
    cloud(c, 170, 36, 0.9)
    ground(c, (110, 180, 80), (70, 140, 55), 128)
    tree_round(c, 40, 146, 70)
    tree_round(c, 200, 142, 62)
    tree_round(c, 236, 146, 54)
    c.rect(0, 150, W, 184, fill=(110, 112, 118))
    for x in range(4, W, 40):
        c.rect(x, 166, x + 20, 168, fill=WHITE)
    car(c, 88, 176, 86, RED)


@scene(
    "blue_car_city_night",
    "A blue car at night on a city street with street lamps and lit buildings.",
    "A blue car with its headlights on driving past tall buildings after dark.",
    "City at night: dark sky, windows glowing yellow, two street lights and one car on the road.",
)
def _(c, rng):
    sky(c, SKY_NIGHT, 150)
    stars(c, rng, 20, 60)
    skyline(c, rng, 150, night=True)
    c.rect(0, 150, W, H, fill=(40, 42, 50))
    for x in range(8, W, 40):
        c.rect(x, 182, x + 20, 184, fill=(200, 200, 190))
    street_lamp(c, 30, 158, 64)
    street_lamp(c, 200, 158, 64)
    car(c, 70, 180, 88, (40, 80, 200), headlights=True)


@scene(
    "yellow_bus_street",
    "A yellow bus on a street on a sunny day.",
    "A long yellow bus with many windows driving along a road lined with trees.",
    "Bright yellow bus on a grey road, green trees and blue sky behind it.",
)
def _(c, rng):
    sky(c, SKY_DAY, 130)
    cloud(c, 60, 30, 0.8)
    cloud(c, 190, 40, 0.9)
    ground(c, (110, 180, 80), (70, 140, 55), 128)
    for x in (20, 76, 132, 188, 244):
        tree_round(c, x, 146, 60)
    c.rect(0, 146, W, 186, fill=(110, 112, 118))
    bus(c, 40, 178, 170)


@scene(
    "red_and_green_cars_white_house",
    "Two cars, a red one and a green one, parked in front of a white house.",
    "A green car and a red car parked on the street outside a house during the day.",
    "White house with a dark roof, and a red car on the left and a green car on the right in front of it.",
)
def _(c, rng):
    sky(c, SKY_DAY, 130)
    sun(c, 30, 26, 12)
    ground(c, (110, 180, 80), (80, 150, 60), 128)
    house(c, 128, 146, 100, 52, (240, 240, 236), (70, 74, 90))
    c.rect(0, 150, W, H, fill=(110, 112, 118))
    car(c, 18, 184, 96, RED)
    car(c, 142, 184, 96, (40, 150, 70))


@scene(
    "red_bicycle_tree_sunset",
    "A red bicycle standing beside a big tree at sunset.",
    "A red bike parked on the grass near a tree while the sun goes down.",
    "Evening in a field: orange sky, the sun low on the horizon, one tree and a red bicycle to its right.",
)
def _(c, rng):
    sky(c, SKY_SUNSET, 136)
    sun(c, 200, 128, 20, (255, 190, 70), glow=(252, 170, 90))
    ground(c, (90, 90, 60), (50, 60, 40), 132)
    tree_round(c, 70, 174, 124, leaves=(60, 80, 50), trunk=(70, 46, 30))
    bicycle(c, 120, 176, 18, RED)


@scene(
    "blue_bicycle_tree_day",
    "A blue bicycle next to a tree in a park on a sunny day.",
    "A blue bike parked on green grass beside a leafy tree under a blue sky.",
    "Daytime park scene with one big green tree on the left and a blue bicycle on the right.",
)
def _(c, rng):
    sky(c, SKY_DAY, 134)
    sun(c, 210, 30, 14)
    cloud(c, 150, 40, 0.7)
    ground(c, (110, 180, 80), (70, 140, 55), 132)
    tree_round(c, 70, 174, 124)
    bicycle(c, 120, 176, 18, BLUE)


@scene(
    "red_bicycle_yellow_house",
    "A red bicycle parked in front of a yellow house during the day.",
    "A yellow cottage with a brown roof and a red bike standing on the grass"
    " next to the path in front of it.",
    "Sunny day, a small yellow house and a red bicycle on the grass.",
)
def _(c, rng):
    sky(c, SKY_DAY, 124)
    cloud(c, 50, 30, 0.8)
    ground(c, (110, 180, 80), (80, 150, 60), 122)
    house(c, 128, 150, 100, 56, (245, 205, 60), (140, 80, 50))
    c.poly([(118, 150), (138, 150), (150, H), (106, H)], fill=(190, 180, 160))
    bicycle(c, 156, 182, 17, RED)


@scene(
    "bowl_of_red_apples",
    "Three red apples in a white bowl on a wooden table.",
    "A simple still life: a bowl of red apples on a brown table against a beige wall.",
    "White fruit bowl holding three shiny red apples.",
)
def _(c, rng):
    wall_and_table(c, (228, 214, 186))
    c.ellipse(70, 150, 186, 166, fill=(120, 76, 44))
    bowl_back(c, 128, 126, 110, WHITE)
    for x, y in [(128, 104), (100, 114), (156, 114)]:
        apple(c, x, y, 19)
    bowl_front(c, 128, 126, 110, WHITE)


@scene(
    "bowl_of_mixed_fruit",
    "A blue bowl full of fruit: bananas, oranges, a green apple and purple grapes.",
    "Mixed fruit in a bowl on a wooden table.",
    "Still life with a blue fruit bowl holding two oranges, yellow bananas, grapes and a green apple.",
)
def _(c, rng):
    wall_and_table(c, (200, 214, 200))
    c.ellipse(60, 152, 196, 168, fill=(120, 76, 44))
    bowl_back(c, 128, 128, 124, (50, 90, 180))
    grapes(c, 160, 92, 6)
    banana(c, 112, 92, 38)
    banana(c, 118, 100, 34)
    orange_fruit(c, 86, 118, 15)
    orange_fruit(c, 114, 122, 14)
    apple(c, 158, 120, 16, color=(130, 200, 70))
    bowl_front(c, 128, 128, 124, (50, 90, 180))


@scene(
    "lemons_blue_plate_checked_cloth",
    "Three yellow lemons on a blue plate on a red and white checked tablecloth.",
    "Lemons on a round blue plate sitting on a checkered table cloth.",
    "Still life with three lemons, a blue plate and a red-and-white tablecloth in front of a pale wall.",
)
def _(c, rng):
    c.vgradient(0, 110, [(0.0, (236, 232, 220)), (1.0, (214, 208, 194))])
    checked_cloth(c, 110)
    c.ellipse(50, 120, 206, 176, fill=(30, 60, 140))
    c.ellipse(62, 125, 194, 170, fill=(50, 90, 180))
    for x, y in [(100, 146), (152, 148), (126, 134)]:
        lemon(c, x, y, 14)


@scene(
    "green_apple_coffee_cup",
    "One green apple next to a white coffee cup on a wooden table.",
    "A single green apple on the left and a cup of coffee on a saucer on the right.",
    "Simple breakfast still life: an apple and a white mug on a brown table.",
)
def _(c, rng):
    wall_and_table(c, (176, 196, 214))
    apple(c, 86, 136, 22, color=(130, 200, 70))
    c.ellipse(140, 150, 220, 164, fill=(236, 236, 232))
    c.arc((196, 118, 218, 142), 270, 90, WHITE, 4)
    c.rect(152, 110, 202, 156, fill=WHITE, radius=6)
    c.ellipse(152, 106, 202, 116, fill=(236, 236, 232))
    c.ellipse(155, 108, 199, 114, fill=(90, 56, 34))


@scene(
    "red_tulips_blue_vase",
    "Red tulips in a blue vase on a table.",
    "Five red flowers with green stems in a blue vase against a pale green wall.",
    "A bunch of red tulips standing in a blue vase on a wooden table.",
)
def _(c, rng):
    wall_and_table(c, (200, 226, 200), y=138)
    vx, vb = 128, 160
    for hx, hy in [(100, 46), (116, 32), (132, 40), (150, 30), (162, 52)]:
        c.line([(vx + (hx - vx) * 0.15, 104), (hx, hy + 10)], (60, 140, 60), 2)
        c.ellipse(hx - 8, hy - 4, hx + 8, hy + 14, fill=RED)
        c.poly(
            [
                (hx - 8, hy + 4),
                (hx - 8, hy - 8),
                (hx - 3, hy - 1),
                (hx, hy - 10),
                (hx + 3, hy - 1),
                (hx + 8, hy - 8),
                (hx + 8, hy + 4),
            ],
            fill=RED,
        )
        c.line([(hx, hy - 6), (hx, hy + 10)], DARK_RED, 0.8)
    c.poly([(112, 110), (100, 90), (118, 104)], fill=(60, 140, 60))
    c.poly([(144, 108), (160, 86), (138, 104)], fill=(60, 140, 60))
    c.poly(
        [(114, 100), (142, 100), (140, 110), (152, 130), (146, vb), (110, vb), (104, 130), (116, 110)],
        fill=(50, 90, 180),
    )
    c.rect(112, 98, 144, 104, fill=(40, 76, 160))


@scene(
    "five_red_balloons_sky",
    "A bunch of five red balloons floating in a blue sky.",
    "Red balloons on strings rising among white clouds on a clear day.",
    "Five shiny red balloons tied together, drifting upwards.",
)
def _(c, rng):
    sky(c, SKY_DAY, H)
    cloud(c, 50, 150, 1.1)
    cloud(c, 210, 40, 0.9)
    cloud(c, 200, 150, 0.7)
    tie = (126, 170)
    for x, y in [(108, 56), (140, 48), (124, 76), (96, 88), (152, 84)]:
        balloon(c, x, y, 15, RED, string_to=tie)
    c.line([tie, (130, H)], (90, 90, 96), 0.8)


@scene(
    "colorful_party_balloons",
    "Many colourful balloons, red, yellow, blue and green, at a party with bunting.",
    "Party decorations: balloons of different colours and a string of little flags against a pink wall.",
    "A birthday party room with lots of balloons.",
)
def _(c, rng):
    c.vgradient(0, H, [(0.0, (250, 214, 226)), (1.0, (240, 190, 206))])
    c.rect(0, 176, W, H, fill=(190, 140, 110))
    pts = [(x, 14 + 10 * math.sin(x / W * math.pi)) for x in range(0, W + 1, 8)]
    c.line(pts, (120, 90, 90), 0.8)
    cols = [RED, YELLOW, BLUE, (40, 160, 70), ORANGE, PURPLE]
    for i, x in enumerate(range(8, W, 22)):
        y = 14 + 10 * math.sin(x / W * math.pi)
        c.poly([(x - 7, y), (x + 7, y), (x, y + 14)], fill=cols[i % len(cols)])
    positions = [
        (40, 80),
        (70, 64),
        (100, 90),
        (132, 70),
        (164, 88),
        (196, 66),
        (224, 90),
        (56, 110),
        (184, 112),
    ]
    for (x, y), col in zip(
        positions, [RED, YELLOW, BLUE, (40, 160, 70), RED, ORANGE, PURPLE, BLUE, YELLOW], strict=True
    ):
        balloon(c, x, y, 15, col, string_to=(x + rng.uniform(-10, 10), 178))


@scene(
    "hot_air_balloon_green_hills",
    "A red and yellow striped hot air balloon over green hills on a sunny day.",
    "One big hot-air balloon with a basket floating above a green countryside under a blue sky.",
    "Colourful balloon flight in the daytime, white clouds and rolling hills.",
)
def _(c, rng):
    sky(c, SKY_DAY, H)
    cloud(c, 40, 40, 0.9)
    cloud(c, 220, 70, 0.8)
    hill(c, 40, 140, 120, (90, 160, 70))
    hill(c, 220, 130, 130, (70, 140, 60))
    c.rect(0, 170, W, H, fill=(80, 150, 64))
    hot_air_balloon(c, 132, 58, 32, RED, YELLOW)


@scene(
    "two_hot_air_balloons_sunset",
    "Two hot air balloons floating in the sky at sunset above dark hills.",
    "A blue and white balloon and a smaller orange and purple balloon in an orange evening sky.",
    "Evening balloon ride: two hot-air balloons and the setting sun behind the hills.",
)
def _(c, rng):
    sky(c, SKY_SUNSET, H)
    sun(c, 128, 160, 22, (255, 190, 70), glow=(252, 170, 90))
    hill(c, 30, 150, 130, (60, 36, 60))
    hill(c, 230, 156, 120, (50, 30, 52))
    c.rect(0, 172, W, H, fill=(50, 30, 52))
    hot_air_balloon(c, 80, 56, 28, BLUE, WHITE)
    hot_air_balloon(c, 190, 84, 18, ORANGE, PURPLE)


@scene(
    "rainbow_green_hills",
    "A rainbow over green hills with white clouds.",
    "A bright rainbow arching across the sky above grassy hills after the rain.",
    "Green countryside with a full rainbow and a few clouds.",
)
def _(c, rng):
    sky(c, SKY_AFTER_RAIN, H)
    cols = [
        (230, 40, 40),
        (245, 140, 30),
        (250, 220, 40),
        (60, 180, 60),
        (50, 110, 220),
        (80, 50, 160),
        (150, 70, 190),
    ]
    for i, col in enumerate(cols):
        r = 112 - i * 6
        c.arc((128 - r, 176 - r, 128 + r, 176 + r), 180, 360, col, 6.5)
    cloud(c, 30, 40, 1.0)
    cloud(c, 220, 56, 0.9)
    hill(c, 40, 136, 130, (90, 170, 70))
    hill(c, 220, 140, 120, (70, 150, 60))
    c.rect(0, 176, W, H, fill=(70, 150, 60))


@scene(
    "snowman_red_scarf",
    "A snowman with a black hat, a red scarf and a carrot nose on a snowy day.",
    "A cheerful snowman with stick arms standing in the snow next to a pine tree under a blue sky.",
    "Winter fun: a snowman made of three snowballs wearing a top hat and a red scarf.",
)
def _(c, rng):
    sky(c, SKY_DAY, 130)
    ground(c, (240, 244, 250), (214, 222, 236), 128)
    tree_pine(c, 200, 160, 96, snow=True)
    x = 100
    c.line([(x - 14, 112), (x - 40, 96)], DARK_BROWN, 2)
    c.line([(x + 14, 112), (x + 40, 98)], DARK_BROWN, 2)
    c.circle(x, 156, 28, fill=WHITE, outline=(200, 210, 225))
    c.circle(x, 114, 20, fill=WHITE, outline=(200, 210, 225))
    c.circle(x, 80, 15, fill=WHITE, outline=(200, 210, 225))
    c.rect(x - 16, 91, x + 16, 98, fill=RED, radius=3)
    c.rect(x + 4, 94, x + 11, 118, fill=RED, radius=2)
    c.rect(x - 16, 64, x + 16, 68, fill=BLACK)
    c.rect(x - 10, 44, x + 10, 66, fill=BLACK)
    c.rect(x - 10, 60, x + 10, 63, fill=RED)
    c.circle(x - 5, 76, 2, fill=BLACK)
    c.circle(x + 5, 76, 2, fill=BLACK)
    c.poly([(x, 80), (x + 18, 83), (x, 85)], fill=ORANGE)
    for y in (108, 118, 128):
        c.circle(x, y, 2, fill=BLACK)


@scene(
    "city_skyline_full_moon",
    "A city skyline at night with lit windows and a full moon.",
    "Tall buildings silhouetted against a dark blue night sky, many yellow windows glowing.",
    "Downtown at night with a big round moon above the skyscrapers.",
)
def _(c, rng):
    sky(c, SKY_NIGHT, H)
    stars(c, rng, 40, 80, avoid=(60, 36, 22))
    moon(c, 60, 36, 18)
    skyline(c, rng, H, night=True)


# ---------------------------------------------------------------------------------------


def render(name: str, fn: Callable[[Canvas, random.Random], None]) -> Image.Image:
    rng = random.Random(zlib.crc32(name.encode()))
    c = Canvas()
    fn(c, rng)
    return c.finish()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default: %(default)s)")
    args = ap.parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)

    names = [n for n, _, _ in SCENES]
    assert len(names) == len(set(names)), "scene names must be unique"
    total = 0
    for name, captions, fn in SCENES:
        img = render(name, fn)
        png = out / f"{name}.png"
        img.save(png, optimize=True)
        (out / f"{name}.txt").write_text("\n".join(captions) + "\n", encoding="utf-8")
        size = png.stat().st_size
        total += size
        print(f"{size / 1024:6.1f} KB  {png.name}")
    keep = set(names)
    for stale in sorted(out.iterdir()):
        if stale.suffix in (".png", ".txt") and stale.stem not in keep:
            stale.unlink()
            print(f"removed stale {stale.name}")
    print(f"{len(SCENES)} images, {total / 1024:.1f} KB of PNG in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
