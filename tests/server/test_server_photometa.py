"""The API and the page over a plain photo folder (issue 31): results carry each photo's own
metadata (taken, place, camera) and name the higher-ranked result a near-copy duplicates."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("fastapi")

from fastapi.testclient import TestClient
from PIL import Image

from conftest import run_cli
from convir.server import create_app
from gallery.photo_helpers import write_photo


def test_results_carry_photo_meta_and_duplicates(tmp_path: Path) -> None:
    folder, ix = tmp_path / "photos", tmp_path / "ix"
    folder.mkdir()
    for n in range(3):
        write_photo(folder / f"p{n}.jpg", color=(80 * n, 90, 200), size=(128, 96), pattern=n)
        (folder / f"p{n}.txt").write_text("a red bicycle by the river\n")
    with Image.open(folder / "p0.jpg") as im:
        im.resize((64, 48)).save(folder / "p0-copy.jpg", quality=80)
    (folder / "p0-copy.txt").write_text("a red bicycle by the river\n")
    assert run_cli("index", str(folder), "--out", str(ix), cwd=tmp_path).returncode == 0
    client = TestClient(create_app(ix), raise_server_exceptions=False)
    res = client.post("/api/sessions", json={"description": "a red bicycle by the river", "k": 4})
    assert res.status_code == 201, res.text
    results = {r["id"]: r for r in res.json()["results"]}
    assert results["p1.jpg"]["meta"]["place"]["city"] == "Paris"
    assert results["p1.jpg"]["meta"]["taken"] == "2022-07-14T12:30:00+02:00"
    assert results["p1.jpg"]["meta"]["camera"] == "Canon EOS R5"
    dups = {i: r["duplicate_of"] for i, r in results.items() if r["duplicate_of"]}
    assert len(dups) == 1 and set(next(iter(dups.items()))) == {"p0.jpg", "p0-copy.jpg"}
    page = client.get("/").text
    assert 'id="hide-duplicates"' in page
