"""Helpers for the server tests: index the bundled demo gallery (or a tiny gallery of awkward
items) with the real CLI and run the real ``convir serve`` in a subprocess on a free loopback
port."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from conftest import make_image, run_cli

# the demo dialogue of convir.demo: a vague description narrowed down to one image
DESCRIPTION = "a boat on the water"
TARGET = "sailboat_red_sail_sunset.png"


def index_demo_gallery(tmp: Path) -> Path:
    """Copy the bundled 42-image demo gallery and index it with ``convir index`` (caption:minilm)."""
    from convir.demo import gallery_path

    gallery = tmp / "gallery"
    shutil.copytree(gallery_path(), gallery)
    res = run_cli("index", str(gallery), "--out", str(tmp / "ix"), cwd=tmp)
    assert res.returncode == 0, res.stderr
    return tmp / "ix"


# the tiny gallery: ids with "." / ".." segments (each with its own colour, and "b.png" is
# what a browser would turn "a/../b.png" into), and files that carry metadata
DOT_IDS = {
    "b.png": (20, 40, 230),
    "a/../b.png": (230, 20, 20),
    "./x.png": (20, 200, 40),
    "..": (240, 220, 10),
}
SECRETS_IN_FILES = [b"SECRET-COMMENT-42", b"SECRET-EXIF-43", b"SECRET-XMP-44", b"SECRET-PNG-TEXT-45"]
_TINY: dict[str, Path] = {}


def metadata_jpeg(path: Path) -> Path:
    """A 60x30 JPEG carrying a comment, EXIF (description, orientation 6 = rotate 90), an sRGB
    ICC profile and an XMP packet, each with a marker string from SECRETS_IN_FILES."""
    from PIL import Image, ImageCms

    im = Image.new("RGB", (60, 30), (200, 60, 30))
    exif = Image.Exif()
    exif[0x010E] = SECRETS_IN_FILES[1].decode()  # ImageDescription
    exif[0x0112] = 6  # Orientation: rotate 90 CW to display
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><note>' + SECRETS_IN_FILES[2] + b"</note></x:xmpmeta>"
    im.save(path, "JPEG", comment=SECRETS_IN_FILES[0], exif=exif.tobytes(), icc_profile=icc, xmp=xmp)
    return path


def text_png(path: Path) -> Path:
    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", SECRETS_IN_FILES[3].decode())
    Image.new("RGB", (40, 40), (90, 90, 200)).save(path, "PNG", pnginfo=info)
    return path


def tiny_index(factory: pytest.TempPathFactory) -> Path:
    """A manifest gallery of the DOT_IDS squares plus ``meta.jpg`` and ``text.png``, indexed
    once per test run with ``convir index`` (the server tests share it; sessions are per owner)."""
    if "ix" in _TINY:
        return _TINY["ix"]
    tmp = factory.mktemp("server-tiny")
    gallery = tmp / "gallery"
    lines = []
    for n, (item_id, color) in enumerate(DOT_IDS.items()):
        make_image(gallery / f"img{n}.png", color)
        name = {0: "blue", 1: "red", 2: "green", 3: "yellow"}[n]
        lines.append({"id": item_id, "image": f"img{n}.png", "captions": [f"a {name} square"]})
    metadata_jpeg(gallery / "meta.jpg")
    text_png(gallery / "text.png")
    lines.append({"id": "meta.jpg", "image": "meta.jpg", "captions": ["an orange photo with metadata"]})
    lines.append({"id": "text.png", "image": "text.png", "captions": ["a picture with a text chunk"]})
    manifest = gallery / "items.jsonl"
    manifest.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    res = run_cli("index", str(manifest), "--out", str(tmp / "ix"), cwd=tmp)
    assert res.returncode == 0, res.stderr
    _TINY["ix"] = tmp / "ix"
    return _TINY["ix"]


def jpeg_markers(data: bytes) -> list[int]:
    """The marker bytes of a JPEG's header segments, up to the start of scan."""
    assert data[:2] == b"\xff\xd8", "not a JPEG"
    out, i = [], 2
    while i < len(data):
        assert data[i] == 0xFF, f"bad segment at {i}"
        marker = data[i + 1]
        out.append(marker)
        if marker == 0xDA:  # SOS: entropy-coded data follows
            break
        i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    return out


def png_chunks(data: bytes) -> list[bytes]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    out, i = [], 8
    while i < len(data):
        n = int.from_bytes(data[i : i + 4], "big")
        out.append(data[i + 4 : i + 8])
        i += 12 + n
    return out


def median_colour(data: bytes) -> tuple[int, ...]:
    from PIL import Image, ImageStat

    with Image.open(io.BytesIO(data)) as im:
        return tuple(int(c) for c in ImageStat.Stat(im.convert("RGB")).median)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """``convir serve INDEX --port P ...`` as a subprocess; ``url`` once healthy."""

    def __init__(
        self, index_dir: Path, cache: Path, *args: str, token: str | None = None, bearer: str | None = None
    ) -> None:
        """``token``: the shared token (passed as CONVIR_TOKEN); ``bearer``: a token to send
        without setting one (a user's token of a ``--tokens`` file)."""
        self.index_dir, self.cache, self.args, self.token = index_dir, cache, args, token
        self.bearer = bearer or token
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = cache / f"serve-{self.port}.log"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.bearer}"} if self.bearer else {}

    def start(self, timeout: float = 180) -> Server:
        env = {**os.environ, "CONVIR_CACHE": str(self.cache), "COLUMNS": "200"}
        env.pop("CONVIR_TOKEN", None)
        if self.token:
            env["CONVIR_TOKEN"] = self.token
        self.cache.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "convir.cli", "serve", str(self.index_dir), "--port", str(self.port)]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([*cmd, *self.args], stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.time() + timeout
        while time.time() < deadline:
            assert self.proc.poll() is None, f"convir serve exited:\n{self.log.read_text()[-3000:]}"
            try:
                if httpx.get(f"{self.url}/api/health", headers=self.headers, timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.stop()
        raise AssertionError(f"convir serve did not start in {timeout}s:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
