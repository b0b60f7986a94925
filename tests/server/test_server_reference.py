"""Start a session from a result over HTTP: ``like`` (an item id) in the create request."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")

from fastapi.testclient import TestClient

from conftest import run_cli
from convir.server import create_app


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> TestClient:
    import shutil

    from convir.demo import gallery_path

    tmp = tmp_path_factory.mktemp("server-like")
    shutil.copytree(gallery_path(), tmp / "gallery")
    res = run_cli("index", str(tmp / "gallery"), "--out", str(tmp / "ix"), cwd=tmp)
    assert res.returncode == 0, res.stderr
    return TestClient(create_app(tmp / "ix"), raise_server_exceptions=False)


def test_create_with_like_fuses_the_item_and_keeps_it_over_turns(client: TestClient) -> None:
    plain = client.post("/api/sessions", json={"description": "at night", "k": 5}).json()
    ref = plain["results"][-1]["id"]
    v = client.post("/api/sessions", json={"description": "at night", "like": ref, "k": 5})
    assert v.status_code == 201, v.text
    ids = [r["id"] for r in v.json()["results"]]
    assert ref not in ids and ids != [r["id"] for r in plain["results"]]
    alone = client.post("/api/sessions", json={"like": ref, "k": 5})  # no words: the photo alone
    assert alone.status_code == 201, alone.text
    sid = v.json()["id"]
    nxt = client.post(f"/api/sessions/{sid}/turns", json={"kind": "say", "text": "with people"})
    assert nxt.status_code == 200 and ref not in [r["id"] for r in nxt.json()["results"]]


def test_create_with_an_unknown_like_or_nothing_at_all_is_a_400(client: TestClient) -> None:
    bad = client.post("/api/sessions", json={"description": "a dog", "like": "nope.png"})
    assert bad.status_code == 400 and "nope.png" in bad.text
    empty = client.post("/api/sessions", json={"description": "  "})
    assert empty.status_code in (400, 422) and "like" in empty.text
