"""Which files a thumbnail may come from: the gallery root recorded at index time, resolved
whole, and a clear 404 (and start-up warning) when that root has gone."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

pytest.importorskip("fastapi")

from fastapi.testclient import TestClient

from conftest import make_image
from convir import ingest
from convir.server import create_app


def _thumb(index_dir: Path, item_id: str) -> int:
    client = TestClient(create_app(index_dir), raise_server_exceptions=False)
    return client.get("/api/thumbnails", params={"id": item_id, "size": 64}).status_code


def test_a_folder_symlink_swapped_in_after_indexing_is_not_followed(tmp_path: Path) -> None:
    gallery = tmp_path / "symgal"
    make_image(gallery / "top.png", (10, 10, 200)).with_suffix(".txt").write_text("a blue square\n")
    make_image(gallery / "sub_real" / "inner.png", (200, 10, 10)).with_suffix(".txt").write_text(
        "a red one\n"
    )
    make_image(tmp_path / "outside" / "inner.png", (10, 200, 10))  # the file an attacker wants served
    ingest(gallery, tmp_path / "ix")
    assert _thumb(tmp_path / "ix", "sub_real/inner.png") == 200

    shutil.rmtree(gallery / "sub_real")
    (gallery / "sub_real").symlink_to(tmp_path / "outside", target_is_directory=True)
    assert (gallery / "sub_real" / "inner.png").is_file()  # the path itself still opens
    assert _thumb(tmp_path / "ix", "sub_real/inner.png") == 404
    assert _thumb(tmp_path / "ix", "top.png") == 200


def test_manifest_images_inside_and_outside_its_folder(tmp_path: Path) -> None:
    """Paths under the manifest's folder are served; one elsewhere only while it is exactly
    the real file recorded at index time (no folder on its way swapped for a symlink)."""
    folder = tmp_path / "m"
    make_image(folder / "imgs" / "a.png", (10, 10, 200))
    make_image(tmp_path / "elsewhere" / "b.png", (200, 10, 10))
    make_image(tmp_path / "attacker" / "b.png", (10, 200, 10))
    records = [
        {"id": "a", "image": "imgs/a.png", "captions": ["a blue square"]},
        {"id": "b", "image": str(tmp_path / "elsewhere" / "b.png"), "captions": ["a red square"]},
    ]
    manifest = folder / "gallery.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in records))
    ingest(manifest, tmp_path / "ix")
    assert _thumb(tmp_path / "ix", "a") == 200 and _thumb(tmp_path / "ix", "b") == 200

    shutil.rmtree(tmp_path / "elsewhere")
    (tmp_path / "elsewhere").symlink_to(tmp_path / "attacker", target_is_directory=True)
    assert _thumb(tmp_path / "ix", "b") == 404


def test_a_missing_gallery_root_is_named_in_the_404_and_at_start_up(
    gallery: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ingest(gallery, tmp_path / "ix")
    gallery.rename(tmp_path / "moved")
    with caplog.at_level(logging.WARNING, logger="convir.server"):
        client = TestClient(create_app(tmp_path / "ix"), raise_server_exceptions=False)
    assert any(str(gallery) in r.getMessage() and "does not exist" in r.getMessage() for r in caplog.records)
    res = client.get("/api/thumbnails", params={"id": "snow.jpg"})
    assert res.status_code == 404 and res.json()["error"] == "no_image"
    detail = res.json()["detail"]
    assert f"gallery root {gallery} does not exist" in detail and "--replace" in detail

    # re-pointed while the server runs: thumbnails come from the new place at once
    report = ingest(tmp_path / "moved", tmp_path / "ix", replace=True)
    assert (report.repointed, report.added, report.updated) == (6, 0, 0)
    assert client.get("/api/thumbnails", params={"id": "snow.jpg"}).status_code == 200
