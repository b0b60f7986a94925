"""Shared fixtures: the real evaluation data next to the repo and small galleries made on the fly."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED = (REPO / ".." / "shared" / "data").resolve()


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    if not SHARED.exists():
        pytest.skip(f"evaluation data not found at {SHARED}")
    return SHARED


def make_image(path: Path, color: tuple[int, int, int], size: tuple[int, int] = (48, 32)) -> Path:
    from PIL import Image, ImageDraw

    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.new("RGB", size, color)
    ImageDraw.Draw(im).rectangle(
        [4, 4, size[0] // 2, size[1] // 2], fill=(255 - color[0], 128, color[2] // 2)
    )
    im.save(path)
    return path


GALLERY = {
    "beach/dog.png": ((200, 180, 90), ["a brown dog running on a sandy beach", "a puppy plays by the sea"]),
    "beach/boat.png": (
        (40, 90, 200),
        ["a small red sailboat on blue water", "a boat sailing near the shore"],
    ),
    "city/bus.jpg": ((120, 120, 120), ["a yellow school bus parked on a city street"]),
    "city/cafe.png": ((150, 80, 40), ["people drinking coffee at an outdoor cafe table"]),
    "kitchen.png": ((230, 230, 230), ["a white kitchen with a bowl of green apples on the counter"]),
    "snow.jpg": ((250, 250, 255), ["a skier going down a snowy mountain slope", "winter sports in the alps"]),
}


@pytest.fixture()
def gallery(tmp_path: Path) -> Path:
    """Six captioned images in two sub-folders (captions as name.txt sidecars)."""
    root = tmp_path / "gallery"
    for rel, (color, caps) in GALLERY.items():
        img = make_image(root / rel, color)
        img.with_suffix(".txt").write_text("\n".join(caps) + "\n", encoding="utf-8")
    return root


T = TypeVar("T")


def run_together(fn: Callable[[], T], n: int) -> tuple[list[T], list[BaseException]]:
    """Call ``fn`` in ``n`` threads started together: what each returned, and what each raised
    (an exception in a thread is otherwise only a pytest warning)."""
    results: list[T] = []
    errors: list[BaseException] = []

    def call() -> None:
        try:
            results.append(fn())
        except BaseException as e:  # returned to the caller, which asserts on it
            errors.append(e)

    threads = [threading.Thread(target=call) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, errors


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run the real ``convir`` console entry point in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "convir.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "200", "CONVIR_CACHE": str(cwd or REPO / ".pytest_cache" / "convir")},
    )


def start_cli(
    *args: str, env: dict[str, str] | None = None, columns: int = 200, **kw: Any
) -> subprocess.Popen[str]:
    """The real ``convir`` CLI in the background (``run_cli`` waits; kill and interrupt tests
    need to interleave); ``env`` adds variables (test hooks)."""
    return subprocess.Popen(
        [sys.executable, "-m", "convir.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={
            **os.environ,
            "COLUMNS": str(columns),
            "CONVIR_CACHE": str(REPO / ".pytest_cache" / "convir"),
            **(env or {}),
        },
        **kw,
    )
