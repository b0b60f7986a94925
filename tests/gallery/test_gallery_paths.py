"""Image paths relative to the recorded gallery root: a moved gallery is re-pointed without
re-encoding, older indexes with absolute paths keep working and are migrated, manifests may
name images anywhere."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from conftest import make_image, run_cli
from convir import ingest, open_index
from convir.errors import ConvirError
from convir.gallery.store import SCHEMA_VERSION, Store

GALLERY_ROOT = "gallery_root"  # the setting (convir.gallery.store.GALLERY_ROOT)


def _rows(out: Path) -> dict[str, str | None]:
    with sqlite3.connect(out / "convir.sqlite") as db:
        return dict(db.execute("SELECT id, path FROM items"))


def test_paths_are_stored_relative_to_the_recorded_root(gallery: Path, tmp_path: Path) -> None:
    ingest(gallery, tmp_path / "ix")
    assert _rows(tmp_path / "ix")["beach/dog.png"] == "beach/dog.png"
    store = Store(tmp_path / "ix")
    assert store.get(GALLERY_ROOT) == str(gallery.resolve())
    store.close()
    hit = open_index(tmp_path / "ix").search("a dog running on the beach", k=1)[0]
    assert hit.path == str(gallery.resolve() / "beach" / "dog.png")


def test_a_moved_gallery_is_re_pointed_without_re_encoding(gallery: Path, tmp_path: Path) -> None:
    out = tmp_path / "ix"
    ingest(gallery, out)
    moved = tmp_path / "moved"
    shutil.copytree(gallery, moved)  # new mtimes: the contents are hashed again, not encoded
    with pytest.raises(ConvirError, match="another gallery"):
        ingest(moved, out)
    report = ingest(moved, out, replace=True)
    assert (report.added, report.updated, report.unchanged, report.removed) == (0, 0, 6, 0)
    assert report.repointed == 6 and not report.rebuilt
    shutil.rmtree(gallery)

    idx = open_index(out)
    hits = idx.search("a dog running on the beach", k=6)
    assert all(h.path and h.path.startswith(str(moved)) and Path(h.path).is_file() for h in hits)
    idx.close()
    again = ingest(moved, out)
    assert (again.unchanged, again.repointed) == (6, 0)  # the counts stay honest


def test_moved_away_gallery_message_says_replace_re_points(gallery: Path, tmp_path: Path) -> None:
    out = tmp_path / "ix"
    ingest(gallery, out)
    gallery.rename(tmp_path / "moved")
    with pytest.raises(ConvirError, match=r"no longer exists.*--replace re-points the index"):
        ingest(tmp_path / "moved", out)


def test_cli_reports_re_pointed_items(gallery: Path, tmp_path: Path) -> None:
    assert run_cli("index", str(gallery), "--out", str(tmp_path / "ix"), cwd=tmp_path).returncode == 0
    shutil.copytree(gallery, tmp_path / "moved")
    res = run_cli("index", str(tmp_path / "moved"), "--out", str(tmp_path / "ix"), "--replace", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "unchanged 6" in res.stdout and "re-pointed 6 unchanged items" in res.stdout


def _make_old(out: Path) -> None:
    """Turn an index into what convir wrote before schema 3: absolute paths, no recorded root."""
    with sqlite3.connect(out / "convir.sqlite") as db:
        (root,) = db.execute("SELECT value FROM settings WHERE key=?", (GALLERY_ROOT,)).fetchone()
        db.execute("UPDATE items SET path = ? || '/' || path WHERE path IS NOT NULL", (root,))
        db.execute("DELETE FROM settings WHERE key=?", (GALLERY_ROOT,))
        db.execute("UPDATE settings SET value='2' WHERE key='schema_version'")


def test_an_older_index_with_absolute_paths_works_and_is_migrated(gallery: Path, tmp_path: Path) -> None:
    out = tmp_path / "ix"
    ingest(gallery, out)
    _make_old(out)
    assert _rows(out)["snow.jpg"] == str(gallery / "snow.jpg")
    idx = open_index(out)  # a reader does not write: old paths are used as they are
    assert idx.search("a skier on a snowy slope", k=1)[0].path == str(gallery / "snow.jpg")
    idx.close()

    report = ingest(gallery, out)  # a writer upgrades: the root recorded, paths under it relative
    assert (report.unchanged, report.repointed, report.added) == (6, 0, 0)
    assert _rows(out)["snow.jpg"] == "snow.jpg"
    store = Store(out)
    assert store.get(GALLERY_ROOT) == str(gallery) and store.get("schema_version") == str(SCHEMA_VERSION)
    store.close()
    hit = open_index(out).search("a skier on a snowy slope", k=1)[0]
    assert hit.path == str(gallery / "snow.jpg")


def test_manifest_root_is_its_folder_and_outside_images_stay_absolute(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    make_image(folder / "imgs" / "a.png", (10, 10, 200))
    outside = make_image(tmp_path / "elsewhere" / "b.png", (200, 10, 10))
    records = [
        {"id": "a", "image": "imgs/a.png", "captions": ["a blue square"]},
        {"id": "b", "image": str(outside), "captions": ["a red square"]},
    ]
    (folder / "gallery.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    ingest(folder / "gallery.jsonl", tmp_path / "ix")
    assert _rows(tmp_path / "ix") == {"a": "imgs/a.png", "b": str(outside)}

    # the manifest's folder moves (its outside image stays where it is)
    shutil.move(folder, tmp_path / "m2")
    report = ingest(tmp_path / "m2" / "gallery.jsonl", tmp_path / "ix", replace=True)
    assert (report.unchanged, report.repointed, report.added) == (2, 1, 0)
    idx = open_index(tmp_path / "ix")
    paths = {h.id: h.path for h in idx.search("a square", k=2)}
    assert paths == {"a": str(tmp_path / "m2" / "imgs" / "a.png"), "b": str(outside)}
