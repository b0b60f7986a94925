"""Issue 26: one huge file never kills a run. Image files are judged by their size before any
byte is read (``--max-file-size``), digests stream, caption sidecars and manifest lines are
bounded, and a per-file MemoryError is a listed failure like any other."""

from __future__ import annotations

import hashlib
import json
import os
import tracemalloc
from pathlib import Path

import pytest

from conftest import make_image, run_cli
from convir import ingest, open_index
from convir.errors import ConvirError
from convir.gallery import ingest as ingest_mod
from convir.gallery import sources
from convir.gallery.ingest import DEFAULT_MAX_FILE_SIZE, parse_size

HUGE = 40 * 1024**3  # sparse: costs no disk, and must never be read


def _one_photo(root: Path) -> Path:
    make_image(root / "photo.png", (200, 30, 30)).with_suffix(".txt").write_text(
        "a red lighthouse on a rocky cliff\n", encoding="utf-8"
    )
    return root


def test_a_40_gb_image_is_skipped_unread_and_the_photo_is_indexed(tmp_path: Path) -> None:
    """The acceptance case of the issue, through the real CLI."""
    gallery = _one_photo(tmp_path / "g")
    with open(gallery / "huge.jpg", "wb") as fh:
        os.truncate(fh.fileno(), HUGE)
    out = tmp_path / "ix"
    res = run_cli("index", str(gallery), "--out", str(out))
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr + res.stdout
    assert "huge.jpg: file too large: 40 GB, over the limit of 200 MB (--max-file-size)" in res.stdout
    assert "added 1" in res.stdout and "failed 1" in res.stdout
    hit = open_index(out).search("lighthouse on a cliff", k=1)[0]
    assert hit.id == "photo.png"


def test_a_40_gb_caption_sidecar_is_refused_from_its_size(tmp_path: Path) -> None:
    gallery = _one_photo(tmp_path / "g")
    make_image(gallery / "other.png", (1, 2, 3))
    with open(gallery / "other.txt", "wb") as fh:
        os.truncate(fh.fileno(), HUGE)
    report = ingest(gallery, tmp_path / "ix")
    assert report.total == 1 and dict(report.failed) == {
        "other.png": "caption file other.txt is 40 GB, over the 1 MB limit for caption files"
    }


def test_max_file_size_is_a_per_run_option(tmp_path: Path) -> None:
    gallery = _one_photo(tmp_path / "g")
    make_image(gallery / "big.png", (9, 9, 9), size=(400, 400)).with_suffix(".txt").write_text(
        "a grey square\n"
    )
    size = (gallery / "big.png").stat().st_size
    small = ingest(gallery, tmp_path / "ix", max_file_size=size - 1)
    assert small.total == 1 and dict(small.failed)["big.png"].startswith("file too large")
    assert ingest(gallery, tmp_path / "ix", max_file_size=f"{size}b").total == 2


@pytest.mark.parametrize(
    ("text", "size"),
    [(None, DEFAULT_MAX_FILE_SIZE), ("200MB", 200 * 1024**2), ("1.5G", 1536 * 1024**2), ("512k", 512 * 1024),
     ("1000", 1000), (12, 12), ("3 GiB", 3 * 1024**3)],
)  # fmt: skip
def test_parse_size(text: str | int | None, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("bad", ["", "lots", "-5", "0", "0.1b", "12 parsecs", 0])
def test_bad_max_file_size_is_a_usage_error(bad: str | int) -> None:
    with pytest.raises(ConvirError, match="--max-file-size"):
        parse_size(bad)


def test_bad_max_file_size_fails_before_anything_loads(tmp_path: Path) -> None:
    gallery = _one_photo(tmp_path / "g")
    res = run_cli("index", str(gallery), "--out", str(tmp_path / "ix"), "--max-file-size", "lots")
    assert res.returncode == 2 and "--max-file-size must be a size" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and not (tmp_path / "ix").exists()


def test_digest_streams_the_file(tmp_path: Path) -> None:
    """64 MiB hashed with a few MiB of memory (the old read_bytes held the whole file)."""
    path = tmp_path / "big.bin"
    with open(path, "wb") as fh:
        fh.write(b"head")
        os.truncate(fh.fileno(), 64 * 1024**2)
    tracemalloc.start()
    try:
        digest, stat = ingest_mod._image_digest(path, None)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    expected = hashlib.sha256(path.read_bytes()).hexdigest()[:32]
    assert digest == expected and stat.endswith(f":{expected}")
    assert peak < 8 * 1024**2


def test_a_memory_error_on_one_file_is_a_listed_failure(
    gallery: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = ingest_mod._image_digest

    def digest(path: Path, previous: str | None) -> tuple[str, str]:
        if path.name == "snow.jpg":
            raise MemoryError
        return real(path, previous)

    monkeypatch.setattr(ingest_mod, "_image_digest", digest)
    report = ingest(gallery, tmp_path / "ix")
    assert report.total == 5 and dict(report.failed) == {"snow.jpg": "cannot read image: MemoryError"}


def test_an_overlong_manifest_line_is_skipped_unheld(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sources, "MAX_MANIFEST_LINE_BYTES", 1000)
    lines = [
        json.dumps({"id": "a", "captions": ["a lighthouse on a cliff"]}),
        json.dumps({"id": "long", "captions": ["word " * 400]}),  # 2 KB
        json.dumps({"id": "b", "captions": ["a red tram in the snow"]}),
    ]
    manifest = tmp_path / "g.jsonl"
    manifest.write_text("\n".join(lines) + "\n" + "x" * 5000)  # and a last line without newline
    report = ingest(manifest, tmp_path / "ix")
    assert report.total == 2
    assert dict(report.failed) == {
        "<g.jsonl line 2>": "g.jsonl line 2: longer than 1000 bytes, skipped",
        "<g.jsonl line 4>": "g.jsonl line 4: longer than 1000 bytes, skipped",
    }
    assert open_index(tmp_path / "ix").search("tram", k=1)[0].id == "b"
