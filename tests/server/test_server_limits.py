"""What the server accepts matches its schema (enums from the registry, ``k: 36.0``, OPTIONS
with Allow), a full disk is a 507 that leaves the session as it was, and sessions share
one LLM fairly within a per-turn LLM time budget."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

pytest.importorskip("fastapi")

from fastapi.testclient import TestClient

from convir.dialog.answers import ANSWER_MODES
from convir.llm.llamacpp import FifoLock
from convir.server import create_app
from convir.specs import REGISTRY
from server_helpers import tiny_index

HEADER = "X-Session-Secret"
FAKE_SPEC = "openai:http://127.0.0.1:9/v1#scripted"  # a registered kind; never contacted


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> TestClient:
    return TestClient(create_app(tiny_index(tmp_path_factory)))


def _enum(schema: dict[str, Any], model: str, field: str) -> list[str]:
    prop = schema["components"]["schemas"][model]["properties"][field]
    return next(x["enum"] for x in prop["anyOf"] if "enum" in x)


# -- schema ------------------------------------------------------------------------------------
def test_schema_names_every_component_the_registry_has(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert _enum(schema, "SessionCreate", "strategy") == list(REGISTRY.names("strategy"))
    assert _enum(schema, "SessionCreate", "questioner") == list(REGISTRY.names("questioner"))
    assert _enum(schema, "SessionCreate", "answers") == list(ANSWER_MODES)
    assert set(REGISTRY.names("imagination")) <= set(_enum(schema, "SessionCreate", "imagine"))
    # a name outside the enum is refused as the schema says: 422, not a 400 after the fact
    res = client.post("/api/sessions", json={"description": "a red square", "strategy": "magic"})
    assert res.status_code == 422 and "strategy" in res.json()["detail"]


def test_integral_float_k_is_the_integer_the_schema_allows(client: TestClient) -> None:
    res = client.post("/api/sessions", json={"description": "a red square", "k": 3.0})
    assert res.status_code == 201, res.text
    view = res.json()
    assert view["options"]["k"] == 3 and len(view["results"]) == 3
    turn = client.post(
        f"/api/sessions/{view['id']}/turns",
        json={"kind": "say", "text": "bright", "version": float(view["version"])},
        headers={HEADER: view["secret"]},
    )
    assert turn.status_code == 200, turn.text
    for bad in (3.5, "3", True):
        assert client.post("/api/sessions", json={"description": "x", "k": bad}).status_code == 422


def test_options_answers_with_the_allow_header(client: TestClient) -> None:
    res = client.options("/api/sessions")
    assert res.status_code == 204 and set(res.headers["allow"].split(", ")) == {"GET", "POST", "OPTIONS"}
    res = client.options("/api/sessions/some-id")
    assert res.status_code == 204 and set(res.headers["allow"].split(", ")) == {"GET", "DELETE", "OPTIONS"}
    assert client.options("/api/no-such-route").status_code == 404


# -- disk full ---------------------------------------------------------------------------------
def test_full_disk_is_507_and_the_session_is_unchanged(tmp_path_factory: pytest.TempPathFactory) -> None:
    """SQLite's own "database or disk is full" (SQLITE_FULL, raised by the real write path once
    the file may not grow: ``PRAGMA max_page_count``), as a full device would raise it."""
    app = create_app(tiny_index(tmp_path_factory))
    with TestClient(app) as client:
        view = client.post("/api/sessions", json={"description": "a red square"}).json()
        owner = {HEADER: view["secret"]}
        store = app.state.service.sessions
        with store._lock:
            pages = store._db.execute("PRAGMA page_count").fetchone()[0]
            store._db.execute(f"PRAGMA max_page_count = {pages}")
        try:
            for n in range(20):  # each turn stores a longer state: the file must grow
                res = client.post(
                    f"/api/sessions/{view['id']}/turns",
                    json={"kind": "say", "text": f"{n} " + "x" * 990},
                    headers=owner,
                )
                if res.status_code != 200:
                    break
                view = res.json()
            assert res.status_code == 507, res.text
            body = res.json()
            assert body["error"] == "disk_full"
            assert str(store.path) in body["detail"] and "free space and retry" in body["detail"]
            assert client.get(f"/api/sessions/{view['id']}", headers=owner).json() == {
                k: v for k, v in view.items() if k != "secret"
            }
            new = client.post("/api/sessions", json={"description": "x " + "y" * 1990})
            assert new.status_code == 507 and new.json()["error"] == "disk_full"
        finally:
            with store._lock:
                store._db.execute("PRAGMA max_page_count = 1073741823")
        res = client.post(
            f"/api/sessions/{view['id']}/turns", json={"kind": "say", "text": "ok"}, headers=owner
        )
        assert res.status_code == 200 and res.json()["version"] == view["version"] + 1


# -- LLM fairness and budget -------------------------------------------------------------------
class GatedLLM:
    """A scripted LLM that, like the llama.cpp backend, runs one call at a time (a FIFO lock),
    and holds each call until the test lets one through (``step``): the order in which the
    sessions' calls reach the model is then the test's to read, not a matter of timing.
    Gated, it answers with the description itself, a question the ``plain`` questioner
    rejects and asks again for: every create makes several calls in a row."""

    spec = FAKE_SPEC
    instruct = True

    def __init__(self, gated: bool = True) -> None:
        self._lock = FifoLock()
        self._go = threading.Semaphore(0)
        self.gated = gated
        self.order: list[str] = []  # the colour word of each call's session, in model order

    @property
    def waiting(self) -> int:
        return self._lock.waiting

    def step(self) -> None:
        self._go.release()

    def chat(self, messages: list[dict[str, str]], params: Any = None) -> str:
        text = " ".join(m["content"] for m in messages)
        colour = next((c for c in ("red", "blue", "green") if f"a {c} square" in text), "?")
        with self._lock:
            self.order.append(colour)
            if self.gated:
                assert self._go.acquire(timeout=120), "the test never let this call through"
                return f"a {colour} square?"
        return "Is it bright?"

    def complete(self, prompt: str, params: Any = None) -> str:
        return self.chat([{"role": "user", "content": prompt}], params)


def _until(what: Callable[[], bool], label: str) -> None:
    deadline = time.monotonic() + 120  # a bound, not a timing assertion: a hang fails, not waits
    while not what():
        assert time.monotonic() < deadline, f"timed out waiting for {label}"
        time.sleep(0.01)


def test_a_new_session_goes_before_the_next_call_of_a_long_turn(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Sessions red and blue are mid-turn (several LLM calls each); green arrives while
    red's second call is queued. When blue's call ends, green's first call goes next, not
    red's second (arrival order would have given red's: the 0.3 s -> 10 s of the issue)."""
    llm = GatedLLM()
    app = create_app(tiny_index(tmp_path_factory), llm=llm, questioner="plain", warm=False)
    service = app.state.service
    client = TestClient(app)

    def queued() -> int:  # calls waiting for the model, in the scheduler or the backend's lock
        return getattr(service.llm, "waiting", 0) + (llm.waiting if service.llm is not llm else 0)

    results: dict[str, int] = {}

    def create(colour: str) -> threading.Thread:
        def run() -> None:
            results[colour] = client.post(
                "/api/sessions", json={"description": f"a {colour} square"}
            ).status_code

        t = threading.Thread(target=run)
        t.start()
        return t

    threads = [create("red")]
    _until(lambda: llm.order == ["red"], "red's first call")
    threads.append(create("blue"))
    _until(lambda: queued() == 1, "blue's call to queue")
    llm.step()  # red's 1st call ends: blue's goes (arrival order agrees)
    _until(lambda: llm.order == ["red", "blue"] and queued() == 1, "red's 2nd call to queue")
    threads.append(create("green"))
    _until(lambda: queued() == 2, "green's call to queue")
    llm.step()  # blue's 1st call ends: green (no call yet this turn) before red's 2nd
    _until(lambda: len(llm.order) == 3, "the next call")
    for _ in range(20):
        llm.step()
    for t in threads:
        t.join(timeout=120)
    assert llm.order[:3] == ["red", "blue", "green"], llm.order
    assert results == {"red": 201, "blue": 201, "green": 201}


def test_a_turn_over_its_llm_budget_runs_without_the_llm_and_says_so(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    llm = GatedLLM(gated=False)
    app = create_app(tiny_index(tmp_path_factory), llm=llm, questioner="plain", warm=False, llm_budget=0)
    client = TestClient(app)
    res = client.post("/api/sessions", json={"description": "a red square", "strategy": "rewrite"})
    assert res.status_code == 201, res.text
    view = res.json()
    assert llm.order == []  # the model was never called
    assert "LLM time budget" in view["notice"] and "'concat'" in view["notice"]
    assert view["question"] is None and view["results"]
    assert view["options"]["strategy"] == "rewrite"  # the session keeps its options
    res = client.post(
        f"/api/sessions/{view['id']}/turns",
        json={"kind": "say", "text": "bright"},
        headers={HEADER: view["secret"]},
    )
    assert res.status_code == 200 and res.json()["notice"] and res.json()["turn"] == 1
    unlimited = TestClient(create_app(tiny_index(tmp_path_factory), llm=GatedLLM(gated=False), warm=False))
    view = unlimited.post("/api/sessions", json={"description": "a red square", "questioner": "plain"}).json()
    assert view["notice"] is None and view["question"] == "Is it bright?"


class ImagesServer:
    """A real HTTP server answering the OpenAI Images API with a small PNG (b64_json)."""

    def __init__(self) -> None:
        import base64
        import io
        import json
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        from PIL import Image

        buf = io.BytesIO()
        Image.new("RGB", (32, 32), (200, 30, 30)).save(buf, "PNG")
        answer = json.dumps({"created": 0, "data": [{"b64_json": base64.b64encode(buf.getvalue()).decode()}]})

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                body = answer.encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.spec = f"openai-images:http://127.0.0.1:{self.httpd.server_address[1]}/v1#m"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _mount_small_tmpfs(folder: Any) -> bool:
    """A real 1 MiB filesystem at ``folder`` when this process may mount one (root on Linux)."""
    import shutil
    import subprocess

    folder.mkdir(parents=True, exist_ok=True)
    if not shutil.which("mount"):
        return False
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)], capture_output=True)
    return res.returncode == 0


def test_a_generated_image_on_a_full_disk_is_507_and_the_session_is_unchanged(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The image cache's device fills up between two turns: on a real small tmpfs where this
    test may mount one, else by the OS error injected where the PNG is written."""
    import errno
    import subprocess

    pytest.importorskip("convir.imagine")
    monkeypatch.setenv("CONVIR_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CONVIR_IMAGES_API_KEY", "sk-test")
    images = tmp_path / "cache" / "images"
    mounted = _mount_small_tmpfs(images)
    server = ImagesServer()
    try:
        app = create_app(tiny_index(tmp_path_factory), generators=[server.spec], warm=False)
        client = TestClient(app)
        res = client.post(
            "/api/sessions", json={"description": "a red square", "imagine": "dar", "generator": server.spec}
        )
        assert res.status_code == 201, res.text
        view = res.json()
        owner = {HEADER: view.pop("secret")}
        assert view["images"] and view["images"][0]["url"]
        if mounted:  # fill the device
            with open(images / "filler", "wb") as f, pytest.raises(OSError) as full:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            assert full.value.errno == errno.ENOSPC
        else:
            from convir.imagine import cache

            def no_space(self: Any, key: str, image: Any) -> Any:
                raise OSError(errno.ENOSPC, "No space left on device")

            monkeypatch.setattr(cache.ImageCache, "put", no_space)
        res = client.post(
            f"/api/sessions/{view['id']}/turns",
            json={"kind": "say", "text": "on a green field"},
            headers=owner,
        )
        assert res.status_code == 507, res.text
        assert res.json()["error"] == "disk_full" and str(images) in res.json()["detail"]
        assert client.get(f"/api/sessions/{view['id']}", headers=owner).json() == view
        if mounted:
            (images / "filler").unlink()
        else:
            monkeypatch.undo()
            monkeypatch.setenv("CONVIR_CACHE", str(tmp_path / "cache"))
        res = client.post(
            f"/api/sessions/{view['id']}/turns",
            json={"kind": "say", "text": "on a green field"},
            headers=owner,
        )
        assert res.status_code == 200 and res.json()["images"], res.text  # imagination still on
    finally:
        server.close()
        if mounted:
            subprocess.run(["umount", str(images)], check=False)
