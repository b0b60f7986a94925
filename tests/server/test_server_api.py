"""The HTTP API with the real app (FastAPI TestClient) over a real index of the demo gallery:
sessions, persistence across a restart, thumbnails, tokens, limits and bad input."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")

from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import make_image, run_cli
from convir.server import create_app
from convir.server.security import host_without_port
from server_helpers import DESCRIPTION, TARGET


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo gallery plus ``link.png``, a symlink to an image outside the gallery."""
    import shutil

    from convir.demo import gallery_path

    tmp = tmp_path_factory.mktemp("server-api")
    gallery = tmp / "gallery"
    shutil.copytree(gallery_path(), gallery)
    make_image(tmp / "outside" / "secret.png", (10, 200, 10))
    (gallery / "link.png").symlink_to(tmp / "outside" / "secret.png")
    (gallery / "link.txt").write_text("a green square outside the gallery\n")
    res = run_cli("index", str(gallery), "--out", str(tmp / "ix"), cwd=tmp)
    assert res.returncode == 0, res.stderr
    return tmp / "ix"


@pytest.fixture(scope="module")
def client(index_dir: Path) -> TestClient:
    return TestClient(create_app(index_dir), raise_server_exceptions=False)


def _ids(view: dict[str, Any]) -> list[str]:
    return [r["id"] for r in view["results"]]


def test_status_routes_page_and_openapi(client: TestClient) -> None:
    assert client.get("/api/health").json()["status"] == "ok"
    version = client.get("/api/version").json()
    assert version["encoder"] == "caption:minilm" and version["items"] == 43 and version["llm"] is None
    opts = client.get("/api/options").json()
    assert opts["defaults"]["strategy"] == "concat" and opts["defaults"]["questioner"] == "infogain-open"
    assert "rewrite" in opts["strategies"] and "text:" in opts["generators"]
    schema = client.get("/openapi.json").json()
    assert {"/api/sessions", "/api/sessions/{session_id}/turns", "/api/search"} <= set(schema["paths"])
    assert "SessionView" in schema["components"]["schemas"]
    page = client.get("/")
    assert page.status_code == 200 and "describe-form" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert client.get("/static/app.js").status_code == 200


def test_a_whole_session_over_the_api(client: TestClient) -> None:
    res = client.post("/api/sessions", json={"description": DESCRIPTION, "k": 5, "questioner": "none"})
    assert res.status_code == 201, res.text
    v = res.json()
    sid = v["id"]
    assert v["version"] == 1 and v["turn"] == 0 and v["question"] is None and len(v["results"]) == 5
    assert v["results"][0]["thumbnail"].startswith("/api/thumbnails?id=")
    assert v["secret"] and client.cookies.get("convir_session_secret_80") == v["secret"]  # port 80
    first = _ids(v)

    v = client.post(f"/api/sessions/{sid}/turns", json={"kind": "say", "text": "it is at sunset"}).json()
    assert v["turn"] == 1 and v["version"] == 2 and _ids(v) != first
    assert v["query"] == f"{DESCRIPTION}, it is at sunset"
    v = client.post(f"/api/sessions/{sid}/turns", json={"kind": "say", "text": "the sail is red"}).json()
    assert _ids(v)[0] == TARGET
    assert [h["text"] for h in v["history"]] == [DESCRIPTION, "it is at sunset", "the sail is red"]

    # no question pending (questioner none): answering or skipping is a clear 409
    res = client.post(f"/api/sessions/{sid}/turns", json={"kind": "answer", "text": "red"})
    assert res.status_code == 409 and res.json()["error"] == "no_question"
    res = client.post(f"/api/sessions/{sid}/turns", json={"kind": "found", "item_id": TARGET, "version": 1})
    assert res.status_code == 409 and res.json()["error"] == "version_conflict"

    v = client.post(f"/api/sessions/{sid}/turns", json={"kind": "found", "item_id": TARGET}).json()
    assert v["status"] == "found" and v["found"] == TARGET and v["question"] is None
    res = client.post(f"/api/sessions/{sid}/turns", json={"kind": "say", "text": "more"})
    assert res.status_code == 409 and res.json()["error"] == "finished"

    assert client.get(f"/api/sessions/{sid}").json() == v
    listed = client.get("/api/sessions").json()
    assert any(s["id"] == sid and s["turn"] == 2 and s["status"] == "found" for s in listed["sessions"])
    assert client.delete(f"/api/sessions/{sid}").status_code == 204
    assert client.get(f"/api/sessions/{sid}").status_code == 404
    assert client.delete(f"/api/sessions/{sid}").status_code == 404


def test_search_endpoint(client: TestClient) -> None:
    out = client.get("/api/search", params={"q": "a red bicycle next to a tree", "k": 3}).json()
    assert out["results"][0]["id"] == "red_bicycle_tree_sunset.png" and len(out["results"]) == 3
    assert out["took_ms"] > 0
    out = client.get("/api/search", params={"q": "lighthouse", "mode": "bm25", "k": 1}).json()
    assert "lighthouse" in out["results"][0]["id"]
    assert client.get("/api/search", params={"q": "   "}).status_code == 422
    assert client.get("/api/search", params={"q": "x", "mode": "magic"}).status_code == 422


def test_a_restart_continues_the_session(index_dir: Path) -> None:
    with TestClient(create_app(index_dir, warm=False)) as c1:
        v = c1.post("/api/sessions", json={"description": DESCRIPTION}).json()
        secret = {"X-Session-Secret": v["secret"]}
        v = c1.post(f"/api/sessions/{v['id']}/turns", json={"kind": "say", "text": "it is at sunset"}).json()
    # a new process would see the same (a new client, so it sends the owner secret itself)
    with TestClient(create_app(index_dir, warm=False), headers=secret) as c2:
        again = c2.get(f"/api/sessions/{v['id']}").json()
        assert again == v
        after = c2.post(
            f"/api/sessions/{v['id']}/turns", json={"kind": "say", "text": "the sail is red"}
        ).json()
    assert after["version"] == 3 and after["turn"] == 2 and _ids(after)[0] == TARGET
    db = sqlite3.connect(index_dir / "sessions.sqlite")
    state = json.loads(db.execute("SELECT state FROM sessions WHERE id=?", (v["id"],)).fetchone()[0])
    assert [e["answer"] for e in state["exchanges"]] == ["it is at sunset", "the sail is red"]


def test_thumbnails_only_for_gallery_items(client: TestClient) -> None:
    from io import BytesIO

    from PIL import Image

    res = client.get(f"/api/thumbnails/{TARGET}", params={"size": 64})
    assert res.status_code == 200 and res.headers["content-type"] == "image/jpeg"
    assert max(Image.open(BytesIO(res.content)).size) <= 64
    for bad in ("nope.png", "..%2Fix%2Fconvir.sqlite", "%2Fetc%2Fpasswd", "gallery/../../etc/passwd"):
        res = client.get(f"/api/thumbnails/{bad}")
        assert res.status_code == 404, bad
        assert res.headers["content-type"] == "application/json"
    # an indexed symlink that points outside the gallery is not followed
    res = client.get("/api/thumbnails/link.png")
    assert res.status_code == 404 and res.json()["error"] == "no_image"
    assert client.get(f"/api/thumbnails/{TARGET}", params={"size": 5}).status_code == 422
    assert client.get(f"/api/thumbnails/{TARGET}", params={"size": "big"}).status_code == 422


def test_token_is_required_on_every_api_route(index_dir: Path) -> None:
    c = TestClient(create_app(index_dir, token="s3cret-token", warm=False), raise_server_exceptions=False)
    for path in ("/api/health", "/api/version", "/api/sessions", "/openapi.json", "/api/thumbnails/x.png"):
        res = c.get(path)
        assert res.status_code == 401, path
        assert res.headers["www-authenticate"].startswith("Bearer")
    assert c.post("/api/sessions", json={"description": "x"}).status_code == 401
    for header in ("Bearer wrong", "Basic czNjcmV0LXRva2Vu", "s3cret-token", "Bearer s3cret-token-and-more"):
        assert c.get("/api/health", headers={"Authorization": header}).status_code == 401, header
    assert c.get("/api/health", headers={"Authorization": "Bearer s3cret-token"}).status_code == 200
    assert c.get("/api/health", headers={"Authorization": "bearer s3cret-token"}).status_code == 200
    # the page shell has no data: it loads, then sends the token itself
    assert c.get("/").status_code == 200 and c.get("/static/style.css").status_code == 200


def test_host_header_allow_list(index_dir: Path) -> None:
    app = create_app(index_dir, allowed_hosts=["127.0.0.1", "localhost", "::1"], warm=False)
    assert TestClient(app).get("/api/health").status_code == 400  # Host: testserver
    assert TestClient(app, base_url="http://127.0.0.1:8000").get("/api/health").status_code == 200
    assert TestClient(app, base_url="http://[::1]:8000").get("/api/health").status_code == 200
    assert host_without_port("[::1]:8000") == "::1" and host_without_port("LocalHost:80") == "localhost"


def test_request_body_limit(client: TestClient) -> None:
    big = json.dumps({"description": "x" * 70_000})
    res = client.post("/api/sessions", content=big, headers={"content-type": "application/json"})
    assert res.status_code == 413 and res.json()["error"] == "too_large"

    def chunks() -> Any:  # no Content-Length: chunked transfer, counted as it arrives
        for _ in range(20):
            yield b"x" * 8192

    res = client.post("/api/sessions", content=chunks(), headers={"content-type": "application/json"})
    assert res.status_code == 413
    res = client.post(
        "/api/sessions", json={"description": "y" * 2001}
    )  # under the body limit, over the field limit
    assert res.status_code == 422 and "at most 2000" in res.json()["detail"]


BAD_CREATE: list[Any] = [
    b"not json",
    b"",
    b"[]",
    b"null",
    b'{"description": 5}',
    b'{"description": null}',
    b'{"description": ""}',
    b'{"description": "   "}',
    b'{"descripton": "typo"}',
    b'{"description": "x", "extra": 1}',
    b'{"description": "x", "k": 0}',
    b'{"description": "x", "k": 10000}',
    b'{"description": "x", "k": "many"}',
    b'{"description": "x", "strategy": "magic"}',
    b'{"description": "x", "strategy": "rewrite"}',
    b'{"description": "x", "questioner": "plain"}',
    b'{"description": "x", "imagine": "dream"}',
    b'{"description": "x", "imagine": "dar", "generator": "diffusers:/etc"}',
    b'{"description": "x", "generator": "openai-images:http://169.254.169.254#x"}',
    b'{"description": ["a", "b"]}',
    b'{"description": {"$ne": 1}}',
    b'{"description": "\\ud800"}',
    b"\xff\xfe\x00",
]
BAD_TURN: list[Any] = [
    {},
    {"kind": "shout", "text": "x"},
    {"kind": "say"},
    {"kind": "say", "text": ""},
    {"kind": "say", "text": "   "},
    {"kind": "say", "text": 12},
    {"kind": "say", "text": "x" * 1001},
    {"kind": "answer", "text": "x"},
    {"kind": "skip"},
    {"kind": "found"},
    {"kind": "found", "item_id": "../../etc/passwd"},
    {"kind": "found", "item_id": "x" * 600},
    {"kind": "say", "text": "x", "version": 0},
    {"kind": "say", "text": "x", "version": "one"},
    {"kind": "say", "text": "x", "version": 999},
    {"kind": "say", "text": "x", "bogus": True},
    [],
    "say",
]


def test_bad_input_gets_a_clear_4xx_never_a_500(client: TestClient) -> None:
    for body in BAD_CREATE:
        res = client.post("/api/sessions", content=body, headers={"content-type": "application/json"})
        assert 400 <= res.status_code < 500, (body, res.status_code, res.text)
        assert res.json()["detail"], body
    sid = client.post("/api/sessions", json={"description": DESCRIPTION, "questioner": "none"}).json()["id"]
    for body in BAD_TURN:
        res = client.post(f"/api/sessions/{sid}/turns", json=body)
        assert 400 <= res.status_code < 500, (body, res.status_code, res.text)
        assert res.json()["detail"], body
    for raw in (b"Infinity", b'{"kind": "answer", "text": NaN}', b'{"version": -Infinity}', b"[1e999]"):
        # Python's json reads these; a 422 that echoes them back must still be valid JSON
        res = client.post(
            f"/api/sessions/{sid}/turns", content=raw, headers={"content-type": "application/json"}
        )
        assert 400 <= res.status_code < 500, (raw, res.status_code, res.text)
    for path in (
        "/api/sessions/not-a-session",
        "/api/sessions/has.dot",
        f"/api/sessions/{'a' * 65}",
        "/api/sessions/x/images/0/0",
        f"/api/sessions/{sid}/images/-1/0",
        f"/api/sessions/{sid}/images/0/0",
        "/api/nothing-here",
        "/api/sessions?limit=0",
        "/api/sessions?limit=abc",
        "/api/search",
        "/api/search?q=" + "x" * 2001,
        "/api/search?q=x&k=0",
    ):
        res = client.get(path)
        assert 400 <= res.status_code < 500, (path, res.status_code)
        assert res.json()["detail"]
    assert client.put(f"/api/sessions/{sid}", json={}).status_code == 405
    v = client.get(f"/api/sessions/{sid}").json()
    assert v["version"] == 1 and v["turn"] == 0  # none of that touched the session


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=10,
)
turn_like = st.fixed_dictionaries(
    {},
    optional={
        "kind": st.sampled_from(["answer", "say", "skip", "found", "x"]) | json_values,
        "text": st.text(max_size=40) | json_values,
        "item_id": st.sampled_from([TARGET, "", "../x"]) | json_values,
        "version": st.integers(-2, 50) | json_values,
        "image_feedback": st.text(max_size=20) | json_values,
    },
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=turn_like | json_values)
def test_fuzzed_turns_never_get_a_500(client: TestClient, body: Any) -> None:
    sid = getattr(test_fuzzed_turns_never_get_a_500, "sid", None)
    if sid is None:
        sid = client.post("/api/sessions", json={"description": DESCRIPTION}).json()["id"]
        test_fuzzed_turns_never_get_a_500.sid = sid  # type: ignore[attr-defined]
    res = client.post(f"/api/sessions/{sid}/turns", json=body)
    assert res.status_code < 500, (body, res.text)
    if res.status_code == 409 and res.json()["error"] == "finished":  # a fuzzed "found" ended it
        test_fuzzed_turns_never_get_a_500.sid = None  # type: ignore[attr-defined]


def test_llm_failure_is_a_503_and_the_session_is_unchanged(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from convir.dialog.strategies import ConcatStrategy
    from convir.llm.base import LLMError

    v = client.post("/api/sessions", json={"description": DESCRIPTION}).json()
    assert v.pop("secret")  # only the create response carries the owner secret

    def down(*args: Any, **kwargs: Any) -> Any:
        raise LLMError("connection refused (model server down)")

    with monkeypatch.context() as m:
        m.setattr(ConcatStrategy, "rank", down)
        res = client.post(f"/api/sessions/{v['id']}/turns", json={"kind": "say", "text": "at sunset"})
    assert res.status_code == 503 and res.json()["error"] == "llm_unavailable"
    assert "connection refused" in res.json()["detail"]
    assert client.get(f"/api/sessions/{v['id']}").json() == v
    res = client.post(f"/api/sessions/{v['id']}/turns", json={"kind": "say", "text": "at sunset"})
    assert res.status_code == 200 and res.json()["version"] == 2


def test_generated_images_only_from_the_sessions_own_record(
    client: TestClient, index_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from io import BytesIO

    from PIL import Image

    monkeypatch.setenv("CONVIR_CACHE", str(tmp_path / "cache"))
    made = make_image(tmp_path / "cache" / "images" / "abc.png", (200, 30, 30))
    stray = make_image(tmp_path / "elsewhere.png", (30, 30, 200))
    v = client.post("/api/sessions", json={"description": DESCRIPTION}).json()
    other = client.post("/api/sessions", json={"description": DESCRIPTION}).json()
    db = sqlite3.connect(index_dir / "sessions.sqlite")
    state = json.loads(db.execute("SELECT state FROM sessions WHERE id=?", (v["id"],)).fetchone()[0])
    state["images"] = [[{"path": str(made), "prompt": "p"}, {"path": str(stray), "prompt": "q"}]]
    with db:
        db.execute("UPDATE sessions SET state=? WHERE id=?", (json.dumps(state), v["id"]))
    res = client.get(f"/api/sessions/{v['id']}/images/0/0")
    assert res.status_code == 200 and res.headers["content-type"] == "image/png"
    with Image.open(made) as want, Image.open(BytesIO(res.content)) as got:  # re-encoded, same pixels
        assert got.size == want.size and got.convert("RGB").tobytes() == want.convert("RGB").tobytes()
    assert client.get(f"/api/sessions/{v['id']}/images/0/1").status_code == 404  # outside the cache
    assert client.get(f"/api/sessions/{v['id']}/images/0/2").status_code == 404
    assert client.get(f"/api/sessions/{v['id']}/images/1/0").status_code == 404
    assert client.get(f"/api/sessions/{other['id']}/images/0/0").status_code == 404  # not its image


def test_imagination_text_generator_shows_prompts(client: TestClient) -> None:
    opts = client.get("/api/options").json()
    if not opts["imagination"]:
        pytest.skip("convir.imagine is not installed")
    res = client.post("/api/sessions", json={"description": DESCRIPTION, "imagine": opts["imagination"][0]})
    assert res.status_code == 201, res.text
    v = res.json()
    assert v["options"]["generator"] == "text:" and v["images"]
    assert all(im["url"] is None and DESCRIPTION in im["prompt"] for im in v["images"])


def test_serve_cli_usage_errors_are_one_line(index_dir: Path, tmp_path: Path) -> None:
    res = run_cli("serve", "--help")
    assert res.returncode == 0 and "CONVIR_TOKEN" in res.stdout and "127.0.0.1" in res.stdout
    res = run_cli("serve", str(tmp_path / "nowhere"), "--port", "0")
    assert res.returncode == 2 and "no index at" in res.stderr and "Traceback" not in res.stderr
    res = run_cli("serve", str(index_dir), "--questioner", "plain", "--port", "0")
    assert res.returncode == 2 and "needs an LLM" in res.stderr and "Traceback" not in res.stderr
