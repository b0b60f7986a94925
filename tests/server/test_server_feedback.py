"""The HTTP API's dialogue-value turns: an infogain question without an LLM, image-choice
answers (kind "choose") and "more like this" / "not this" (kinds "more" / "less"), with the
real app over a real index of the demo gallery."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("fastapi")

from fastapi.testclient import TestClient

from convir.server import create_app
from server_helpers import DESCRIPTION, index_demo_gallery


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> TestClient:
    return TestClient(create_app(index_demo_gallery(tmp_path_factory.mktemp("feedback"))))


def _ids(v: dict[str, Any]) -> list[str]:
    return [r["id"] for r in v["results"]]


def test_infogain_asks_without_an_llm_and_reads_a_no(client: TestClient) -> None:
    opts = client.get("/api/options").json()
    assert "infogain" in opts["questioners"] and "infogain" not in opts["needs_llm"]["questioners"]
    assert "plain" in opts["needs_llm"]["questioners"]
    v = client.post("/api/sessions", json={"description": DESCRIPTION, "questioner": "infogain"}).json()
    assert v["question"].startswith("Is there") and v["choices"] == []
    assert v["options"]["answers"] == "aware"
    sid = v["id"]
    after = client.post(f"/api/sessions/{sid}/turns", json={"kind": "answer", "text": "no"}).json()
    assert after["turn"] == 1 and "no" not in (after["query"] or "").split()  # a "no" is not query text
    assert after["question"] != v["question"]  # never the same attribute twice


def test_more_and_less_move_results(client: TestClient) -> None:
    v = client.post("/api/sessions", json={"description": DESCRIPTION, "questioner": "none"}).json()
    sid, first = v["id"], _ids(v)
    less = client.post(f"/api/sessions/{sid}/turns", json={"kind": "less", "item_id": first[0]}).json()
    assert _ids(less)[0] != first[0]  # "not this" moves it off the top
    assert less["history"][-1]["text"].startswith("not ")
    more = client.post(f"/api/sessions/{sid}/turns", json={"kind": "more", "item_id": first[-1]}).json()
    assert _ids(more).index(first[-1]) < len(first) - 1
    assert more["turn"] == 2
    bad = client.post(f"/api/sessions/{sid}/turns", json={"kind": "more"})
    assert bad.status_code == 422 and "needs item_id" in bad.json()["detail"]
    bad = client.post(f"/api/sessions/{sid}/turns", json={"kind": "less", "item_id": "nope.png"})
    assert bad.status_code == 400 and bad.json()["error"] == "unknown_item"
    bad = client.post(f"/api/sessions/{sid}/turns", json={"kind": "choose", "item_id": first[0]})
    assert bad.status_code == 409 and bad.json()["error"] == "no_choice"


def test_an_image_choice_question_and_its_answer(client: TestClient) -> None:
    # a vague start spreads the candidates, so an image choice is the informative question
    # (on the demo gallery "a boat on the water" leaves a few boats, which yes/no questions split)
    v = client.post("/api/sessions", json={"description": "a photo", "questioner": "choice"}).json()
    sid = v["id"]
    for _ in range(4):  # the questioner asks whichever question is more informative
        if v["choices"]:
            break
        v = client.post(f"/api/sessions/{sid}/turns", json={"kind": "answer", "text": "unknown"}).json()
    assert v["choices"], "no image-choice question in four turns"
    options = [c["id"] for c in v["choices"]]
    assert [c["number"] for c in v["choices"]] == list(range(1, len(options) + 1))
    assert all(c["thumbnail"] for c in v["choices"])  # the demo gallery has images
    bad = client.post(f"/api/sessions/{sid}/turns", json={"kind": "choose", "item_id": "nope.png"})
    assert bad.status_code == 400
    chosen = client.post(f"/api/sessions/{sid}/turns", json={"kind": "choose", "item_id": options[1]}).json()
    assert chosen["history"][-1]["text"] == "option 2"
    assert _ids(chosen)[0] == options[1] or options[1] in _ids(chosen)[:3]
    # "none of these" is a choice too (when asked again), and a typed number answers it
    if chosen["choices"]:
        none = client.post(f"/api/sessions/{sid}/turns", json={"kind": "choose", "item_id": None}).json()
        assert none["history"][-1]["text"] == "none of these"
