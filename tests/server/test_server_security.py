"""The service's security model under attack (issue 13), with the real app in-process on a real
index: sessions private to their owner secret, per-user tokens, strict and bounded input,
thumbnails that carry pixels only, ids with dot segments, no docs UI; and the real
``convir serve`` with a tokens file whose logs must not show a token or a secret."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import socket
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")

import httpx
from fastapi.testclient import TestClient

from conftest import REPO, run_cli, run_together
from convir.errors import ConvirError
from convir.server import create_app
from convir.server.sessions import Owner, SessionStore
from convir.server.tokens import TokenTable, hash_token, read_tokens
from server_helpers import (
    DOT_IDS,
    SECRETS_IN_FILES,
    Server,
    jpeg_markers,
    median_colour,
    metadata_jpeg,
    png_chunks,
    tiny_index,
)

COOKIE = "convir_session_secret_80"  # the cookie's name carries the port (TestClient's is 80)
HEADER = "X-Session-Secret"


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_index(tmp_path_factory)


@pytest.fixture(scope="module")
def app(index_dir: Path) -> Any:
    return create_app(index_dir, warm=False)


def _client(app: Any, **kw: Any) -> TestClient:
    return TestClient(app, raise_server_exceptions=False, **kw)


def _create(c: TestClient, **kw: Any) -> dict[str, Any]:
    res = c.post("/api/sessions", json={"description": "a red square", **kw})
    assert res.status_code == 201, res.text
    return res.json()


def _same_404(res: httpx.Response, missing: httpx.Response, sid: str) -> None:
    """Another owner's session answers exactly like a session that does not exist."""
    assert res.status_code == missing.status_code == 404
    assert res.json() == json.loads(missing.text.replace("AAAAAAAAAAAAAAAA", sid))


# --- sessions private to their owner -----------------------------------------------------------


def test_a_session_is_private_to_the_client_that_created_it(app: Any, index_dir: Path) -> None:
    """The acceptance check: two clients, and the second neither lists nor reads the first's."""
    alice, bob = _client(app), _client(app)
    v = _create(alice)
    sid, secret = v["id"], v["secret"]
    set_cookies = alice.post("/api/sessions", json={"description": "x"}).headers.get_list("set-cookie")
    cookie = next(c for c in set_cookies if c.startswith(f"{COOKIE}={secret};")).lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/api" in cookie

    listed = bob.get("/api/sessions").json()
    assert listed == {"sessions": [], "total": 0}
    assert sid in [s["id"] for s in alice.get("/api/sessions").json()["sessions"]]

    missing = "/api/sessions/AAAAAAAAAAAAAAAA"
    _same_404(bob.get(f"/api/sessions/{sid}"), bob.get(missing), sid)
    say = {"kind": "say", "text": "it is blue"}
    _same_404(bob.post(f"/api/sessions/{sid}/turns", json=say), bob.post(f"{missing}/turns", json=say), sid)
    _same_404(bob.get(f"/api/sessions/{sid}/images/0/0"), bob.get(f"{missing}/images/0/0"), sid)
    _same_404(bob.delete(f"/api/sessions/{sid}"), bob.delete(missing), sid)
    # a wrong (well-formed) secret is no better than none
    wrong = {HEADER: "w" * 43}
    assert bob.get(f"/api/sessions/{sid}", headers=wrong).status_code == 404
    assert bob.get("/api/sessions", headers=wrong).json()["total"] == 0

    mine = alice.get(f"/api/sessions/{sid}")
    assert mine.status_code == 200 and mine.json()["version"] == 1  # bob's turn did not land
    assert "secret" not in mine.json()  # shown once, in the create response only
    # the secret is the key: whoever holds it (another device) may continue the session
    assert bob.post(f"/api/sessions/{sid}/turns", json=say, headers={HEADER: secret}).status_code == 200

    # only a hash of the secret is stored
    db = sqlite3.connect(index_dir / "sessions.sqlite")
    (owner,) = db.execute("SELECT owner FROM sessions WHERE id=?", (sid,)).fetchone()
    assert owner == hashlib.sha256(secret.encode()).hexdigest()
    db.close()
    stored = b"".join(p.read_bytes() for p in index_dir.glob("sessions.sqlite*"))
    assert secret.encode() not in stored


def test_a_header_client_keeps_one_secret_for_all_its_sessions(app: Any) -> None:
    mine = {HEADER: _create(_client(app))["secret"]}  # minted by the server
    c = _client(app, headers=mine)
    first, second = _create(c), _create(c)
    assert first["secret"] == second["secret"] == mine[HEADER]
    res = c.post("/api/sessions", json={"description": "x"})
    assert "set-cookie" not in res.headers  # a header client manages its own secret
    listed = c.get("/api/sessions").json()
    assert listed["total"] == 4 and {first["id"], second["id"]} <= {s["id"] for s in listed["sessions"]}
    assert c.get("/api/sessions", params={"limit": 1, "offset": 1}).json()["total"] == 4

    other = _client(app)
    for bad in ("short", "has space" * 5, "!" * 40, "a" * 129):
        for res in (
            other.get("/api/sessions", headers={HEADER: bad}),
            other.post("/api/sessions", json={"description": "x"}, headers={HEADER: bad}),
        ):
            assert res.status_code == 422, (bad, res.text)
    # a malformed cookie (another app on this host?) is ignored: a new secret is issued
    res = _client(app).post(
        "/api/sessions", json={"description": "x"}, headers={"Cookie": f"{COOKIE}=not-a-secret"}
    )
    assert res.status_code == 201 and res.json()["secret"] != "not-a-secret"
    assert f"{COOKIE}={res.json()['secret']};" in res.headers["set-cookie"]


# --- owner secrets are minted by the server only (issue 26) -------------------------------------


def test_a_planted_secret_owns_nothing(app: Any) -> None:
    """Secret fixation: a value another page on this host planted as the cookie (cookies ignore
    ports), or a client made up, is not adopted when a session is created: the victim gets a new
    secret and whoever knows the planted value lists, reads and continues nothing."""
    known = "A" * 40
    attacker = _client(app, headers={HEADER: known})
    for cookie in (f"convir_session_secret={known}", f"{COOKIE}={known}"):  # before and after issue 26
        res = _client(app).post("/api/sessions", json={"description": "x"}, headers={"Cookie": cookie})
        assert res.status_code == 201 and res.json()["secret"] != known
        sid = res.json()["id"]
        assert attacker.get("/api/sessions").json() == {"sessions": [], "total": 0}
        assert attacker.get(f"/api/sessions/{sid}").status_code == 404
        set_cookies = res.headers.get_list("set-cookie")
        assert any(c.startswith(f"{COOKIE}={res.json()['secret']};") for c in set_cookies)
        # a copy planted at Path=/ is deleted (the server's own cookie lives at Path=/api)
        assert any(c.startswith(f"{COOKIE}=;") and "Path=/;" in c for c in set_cookies)
    # the same for a made-up header secret: a new one is returned (and set as the cookie)
    res = attacker.post("/api/sessions", json={"description": "x"})
    assert res.status_code == 201 and res.json()["secret"] != known
    assert attacker.get("/api/sessions").json()["total"] == 0
    # the victim's own (minted) secret keeps working: its sessions are listed together
    victim = _client(app)
    first = _create(victim)
    assert _create(victim)["secret"] == first["secret"]
    assert victim.get("/api/sessions").json()["total"] == 2


def test_a_secret_minted_for_another_user_is_not_adopted(index_dir: Path, tmp_path: Path) -> None:
    alice_t, bob_t = "alice-token-" + "a" * 30, "bob-token-" + "b" * 30
    app = create_app(
        index_dir, tokens=_tokens_file(tmp_path / "tokens", {"alice": alice_t, "bob": bob_t}), warm=False
    )
    alice = _client(app, headers={"Authorization": f"Bearer {alice_t}"})
    secret = _create(alice)["secret"]
    bob = _client(app, headers={"Authorization": f"Bearer {bob_t}", HEADER: secret})
    assert _create(bob)["secret"] != secret  # minted for alice: bob gets his own
    assert (
        alice.post("/api/sessions", json={"description": "x"}, headers={HEADER: secret}).json()["secret"]
        == secret
    )


def test_a_request_with_two_session_cookies_is_refused(app: Any) -> None:
    """A browser sends one cookie per path it holds; Starlette keeps the last. Two copies mean a
    planted one (another port's page set it at Path=/): 400, and the copies outside /api go."""
    c = _client(app)
    v = _create(c)
    both = {"Cookie": f"{COOKIE}={v['secret']}; {COOKIE}={'A' * 40}"}
    for res in (
        c.get("/api/sessions", headers=both),
        c.get(f"/api/sessions/{v['id']}", headers=both),
        c.post("/api/sessions", json={"description": "x"}, headers=both),
        c.post(f"/api/sessions/{v['id']}/turns", json={"kind": "skip"}, headers=both),
    ):
        assert res.status_code == 400 and res.json()["error"] == "duplicate_cookie", res.text
        assert f"2 {COOKIE} cookies" in res.json()["detail"]
        cleared = [c for c in res.headers.get_list("set-cookie") if c.startswith(f"{COOKIE}=;")]
        assert any("Path=/;" in c for c in cleared) and not any("Path=/api;" in c for c in cleared)
    # two Cookie headers count too; another app's cookie of another name is no problem
    two = [("cookie", f"{COOKIE}={v['secret']}"), ("cookie", f"{COOKIE}={'B' * 40}")]
    assert c.get("/api/sessions", headers=two).status_code == 400
    other = {"Cookie": f"convir_session_secret_9000={'C' * 40}; {COOKIE}={v['secret']}; theme=dark"}
    assert c.get("/api/sessions", headers=other).json()["total"] >= 1
    assert c.get("/api/health", headers=both).status_code == 200  # only session routes care


def test_session_responses_are_not_cached(app: Any) -> None:
    c = _client(app)
    res = c.post("/api/sessions", json={"description": "a blue square"})
    assert res.headers["cache-control"] == "no-store"  # it carries the owner secret
    assert c.get(f"/api/sessions/{res.json()['id']}").headers["cache-control"] == "no-store"
    assert c.get("/api/sessions").headers["cache-control"] == "no-store"


def test_old_sessions_database_gets_owner_columns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    db = sqlite3.connect(tmp_path / "sessions.sqlite")
    db.executescript(
        "CREATE TABLE sessions (id TEXT PRIMARY KEY, created REAL NOT NULL, updated REAL NOT NULL, "
        "version INTEGER NOT NULL, status TEXT NOT NULL, options TEXT NOT NULL, state TEXT NOT NULL, "
        "last TEXT NOT NULL); CREATE INDEX sessions_updated ON sessions (updated);"
        "INSERT INTO sessions VALUES ('oldsession000001', 1, 1, 3, 'open', '{}', '{}', '{}');"
    )
    db.commit()
    db.close()
    with caplog.at_level(logging.WARNING, logger="convir.server"):
        # two servers starting at once on one old database: one migrates, neither fails
        stores, errors = run_together(lambda: SessionStore(tmp_path), 2)
    assert errors == [] and len(stores) == 2
    assert "1 sessions from before owner secrets" in caplog.text
    store = stores[0]
    cols = [
        r[1] for r in sqlite3.connect(tmp_path / "sessions.sqlite").execute("PRAGMA table_info(sessions)")
    ]
    assert cols[-2:] == ["owner", "username"]
    me = Owner("", "f" * 64)
    assert store.get("oldsession000001", me) is None and store.recent(me) == []
    assert store.count() == 1 and store.count(me) == 0
    row = store.create({"k": 1}, {"description": "d"}, {}, me)
    assert store.get(row.id, me) == row and store.get(row.id, Owner("bob", me.key)) is None
    assert [r.id for r in store.recent(me)] == [row.id] and store.count(me) == 1
    assert not store.delete(row.id, Owner("", "e" * 64)) and store.delete(row.id, me)
    for s in stores:
        s.close()


def _old_database(folder: Path) -> None:
    db = sqlite3.connect(folder / "sessions.sqlite")  # rollback journal, as before WAL was used
    db.executescript(
        "CREATE TABLE sessions (id TEXT PRIMARY KEY, created REAL NOT NULL, updated REAL NOT NULL, "
        "version INTEGER NOT NULL, status TEXT NOT NULL, options TEXT NOT NULL, state TEXT NOT NULL, "
        "last TEXT NOT NULL);"
    )
    db.close()


def test_servers_starting_together_on_an_old_database_all_start(tmp_path: Path) -> None:
    # SQLite answers the switch to WAL with "database is locked" at once (no busy handler) when
    # another connection is switching too; each store must wait it out. Many rounds, because
    # one round hits the window only a few times in a hundred.
    for i in range(150):
        folder = tmp_path / str(i)
        folder.mkdir()
        _old_database(folder)
        stores, errors = run_together(lambda folder=folder: SessionStore(folder), 4)
        assert errors == [] and len(stores) == 4
        for s in stores:
            s.close()


# --- per-user tokens -----------------------------------------------------------------------------


def _tokens_file(path: Path, users: dict[str, str]) -> Path:
    path.write_text("# users\n" + "".join(f"{u} {hash_token(t)}\n" for u, t in users.items()))
    return path


def test_per_user_tokens_scope_sessions_to_their_user(index_dir: Path, tmp_path: Path) -> None:
    alice_t, bob_t = "alice-token-" + "a" * 30, "bob-token-" + "b" * 30
    app = create_app(
        index_dir, tokens=_tokens_file(tmp_path / "tokens", {"alice": alice_t, "bob": bob_t}), warm=False
    )
    anon = _client(app)
    assert anon.get("/api/health").status_code == 401
    assert anon.get("/api/health", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert (
        anon.get("/api/health", headers={"Authorization": f"Bearer {hash_token(alice_t)}"}).status_code == 401
    )
    alice = _client(app, headers={"Authorization": f"Bearer {alice_t}"})
    bob = _client(app, headers={"Authorization": f"Bearer {bob_t}"})
    v = _create(alice)
    # even with alice's owner secret, bob (another user) cannot reach her session
    stolen = {HEADER: v["secret"]}
    assert bob.get(f"/api/sessions/{v['id']}", headers=stolen).status_code == 404
    assert bob.get("/api/sessions", headers=stolen).json()["total"] == 0
    assert alice.get(f"/api/sessions/{v['id']}", headers=stolen).status_code == 200
    assert alice.get(f"/api/sessions/{v['id']}").status_code == 200  # her cookie
    with pytest.raises(ConvirError, match="not both"):
        create_app(index_dir, token="t", tokens=tmp_path / "tokens", warm=False)


def test_tokens_file_is_parsed_strictly_and_reloaded(tmp_path: Path) -> None:
    f = _tokens_file(tmp_path / "tokens", {"alice": "ta", "bob": "tb"})
    table = TokenTable(f, recheck_s=0)
    assert table.user(b"ta") == "alice" and table.user(b"tb") == "bob" and table.user(b"tc") is None
    assert table.user(b"") is None
    _tokens_file(f, {"alice": "ta", "carol": "tc"})  # bob revoked, carol added: no restart
    assert table.user(b"tb") is None and table.user(b"tc") == "carol"
    f.write_text("carol not-a-hash\n")  # a broken edit keeps the last good list
    assert table.user(b"tc") == "carol"
    for text, msg in (
        ("alice\n", "line 1"),
        ("# c\nal ice sha256:" + "0" * 64 + "\n", "line 2"),
        ("alice sha256:" + "0" * 63 + "\n", "line 1"),
        (f"alice {hash_token('x')}\nbob {hash_token('x')}\n", "already given to 'alice'"),
    ):
        f.write_text(text)
        with pytest.raises(ConvirError, match=msg):
            TokenTable(f)
    f.write_text("# nobody\n")
    with pytest.raises(ConvirError, match="lists no user"):
        TokenTable(f)
    with pytest.raises(ConvirError, match="does not exist"):
        TokenTable(tmp_path / "missing")


def test_tokens_command_and_the_documented_one_liner(tmp_path: Path, index_dir: Path) -> None:
    f = tmp_path / "tokens.txt"
    res = run_cli("tokens", "add", str(f), "alice", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    token = res.stdout.strip()
    assert len(token) >= 40 and "shown only now" in res.stderr
    assert read_tokens(f) == {hash_token(token): "alice"}
    assert oct(f.stat().st_mode & 0o777) == "0o600"
    assert run_cli("tokens", "add", str(f), "alice", cwd=tmp_path).returncode == 0  # a second device
    # the one-liner of docs/server.md, for a token you already have
    doc = (REPO / "docs" / "server.md").read_text()
    line = next(ln for ln in doc.splitlines() if "sha256sum" in ln and ">>" in ln)
    cmd = line.strip().replace("tokens.txt", str(f))
    subprocess.run(["bash", "-c", f"TOKEN=my-own-token-123; USER_NAME=bob; {cmd}"], check=True)
    assert TokenTable(f).user(b"my-own-token-123") == "bob"
    res = run_cli("tokens", "list", str(f), cwd=tmp_path)
    assert res.returncode == 0 and res.stdout.split("\n")[:2] == ["alice\t2", "bob\t1"]
    res = run_cli("tokens", "remove", str(f), "alice", cwd=tmp_path)
    assert res.returncode == 0 and "removed 2" in res.stderr
    assert set(read_tokens(f).values()) == {"bob"}

    for args, msg in (
        (("tokens", "add", str(f), "bad name"), "bad user name"),
        (("tokens", "remove", str(f), "nobody"), "no token for 'nobody'"),
        (("tokens", "list", str(tmp_path / "none")), "does not exist"),
        (("serve", str(index_dir), "--token", "x", "--tokens", str(f), "--port", "0"), "not both"),
        (("serve", str(index_dir), "--tokens", str(tmp_path / "none"), "--port", "0"), "does not exist"),
    ):
        res = run_cli(*args, cwd=tmp_path)
        assert res.returncode == 2 and msg in res.stderr and "Traceback" not in res.stderr, (args, res.stderr)


# --- hardening -------------------------------------------------------------------------------------


def test_huge_and_negative_numbers_are_a_4xx(app: Any) -> None:
    c = _client(app)
    sid = _create(c)["id"]
    for path in (
        f"/api/sessions?offset={2**63}",
        f"/api/sessions?offset={10**30}",
        "/api/sessions?offset=-1",
        f"/api/sessions?limit={2**63}",
        f"/api/search?q=red&k={2**63}",
        f"/api/thumbnails?id=b.png&size={2**63}",
        f"/api/thumbnails/b.png?size={-(2**63)}",
        f"/api/sessions/{sid}/images/{2**63}/0",
        f"/api/sessions/{sid}/images/0/{2**64}",
    ):
        res = c.get(path)
        assert 400 <= res.status_code < 500, (path, res.status_code, res.text)
        assert res.json()["detail"]
    res = c.post(f"/api/sessions/{sid}/turns", json={"kind": "say", "text": "x", "version": 2**63})
    assert res.status_code == 422


def test_numbers_in_json_must_be_integers(app: Any) -> None:
    c = _client(app)
    # 5.0 is an integer to JSON Schema (and to the server since issue 26); 5.5 is not
    for k in (True, False, "5", 5.5, "many", [5]):
        res = c.post("/api/sessions", json={"description": "a red square", "k": k})
        assert res.status_code == 422, (k, res.text)
        assert res.json()["errors"][0]["loc"] == ["body", "k"]
    v = _create(c, k=2)
    assert len(v["results"]) == 2
    for version in (True, "1", 1.5):
        res = c.post(f"/api/sessions/{v['id']}/turns", json={"kind": "say", "text": "x", "version": version})
        assert res.status_code == 422, (version, res.text)
    assert c.post(
        f"/api/sessions/{v['id']}/turns", json={"kind": "say", "text": "x", "version": 1}
    ).is_success


def test_thumbnails_and_generated_images_carry_pixels_only(
    app: Any, index_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from io import BytesIO

    from PIL import Image

    c = _client(app)
    res = c.get("/api/thumbnails", params={"id": "meta.jpg", "size": 64})
    assert res.status_code == 200 and res.headers["content-type"] == "image/jpeg"
    # SOI, then only JFIF (APP0), tables, frame and scan: no APP1 (EXIF/XMP), APP2 (ICC), COM
    markers = jpeg_markers(res.content)
    assert set(markers) <= {0xE0, 0xDB, 0xC0, 0xC2, 0xC4, 0xDD, 0xDA}, [hex(m) for m in markers]
    assert not any(s in res.content for s in SECRETS_IN_FILES)
    with Image.open(BytesIO(res.content)) as im:
        assert im.size == (30, 60)  # the EXIF orientation was applied to the 60x30 pixels
        assert not {"exif", "icc_profile", "comment", "xmp"} & set(im.info)
    res = c.get("/api/thumbnails", params={"id": "text.png"})
    assert res.status_code == 200 and SECRETS_IN_FILES[3] not in res.content

    # a generated image (e.g. from a remote image API) is re-encoded too
    monkeypatch.setenv("CONVIR_CACHE", str(tmp_path / "cache"))
    made = metadata_jpeg(tmp_path / "cache" / "images" / "gen.jpg")
    v = _create(c)
    db = sqlite3.connect(index_dir / "sessions.sqlite")
    state = json.loads(db.execute("SELECT state FROM sessions WHERE id=?", (v["id"],)).fetchone()[0])
    state["images"] = [[{"path": str(made), "prompt": "p"}]]
    with db:
        db.execute("UPDATE sessions SET state=? WHERE id=?", (json.dumps(state), v["id"]))
    db.close()
    res = c.get(f"/api/sessions/{v['id']}/images/0/0")
    assert res.status_code == 200 and res.headers["content-type"] == "image/png"
    assert png_chunks(res.content) == [b"IHDR", b"IDAT", b"IEND"]
    assert not any(s in res.content for s in SECRETS_IN_FILES)


def test_ids_with_dot_segments_survive_the_round_trip(app: Any) -> None:
    """httpx, like a browser, removes "." and ".." path segments from a URL: the thumbnail URLs
    the server hands out must still name the same item after that."""
    c = _client(app)
    for item_id, colour in DOT_IDS.items():
        name = {0: "blue", 1: "red", 2: "green", 3: "yellow"}[list(DOT_IDS).index(item_id)]
        out = c.get("/api/search", params={"q": f"a {name} square", "k": 10, "mode": "bm25"}).json()
        (hit,) = [r for r in out["results"] if r["id"] == item_id]
        url = hit["thumbnail"]
        assert httpx.URL("http://h" + url).params["id"] == item_id  # survives URL normalisation
        res = c.get(url + "&size=32")
        assert res.status_code == 200, (item_id, url, res.text)
        assert all(abs(a - b) < 40 for a, b in zip(median_colour(res.content), colour, strict=True)), item_id
    # the path form works for ids whose "/" is encoded (curl users)
    res = c.get("/api/thumbnails/a%2F..%2Fb.png", params={"size": 32})
    assert res.status_code == 200 and median_colour(res.content)[0] > 150  # red, not b.png's blue
    assert c.get("/api/thumbnails", params={"id": "nope"}).status_code == 404
    assert c.get("/api/thumbnails", params={"id": ""}).status_code == 422


def test_no_docs_ui_and_nothing_from_a_cdn(app: Any, index_dir: Path) -> None:
    for a in (app, create_app(index_dir, token="s3cret-token", warm=False)):
        c = _client(a)
        for path in ("/docs", "/redoc", "/docs/oauth2-redirect"):
            assert c.get(path).status_code in (401, 404), path
            authed = c.get(path, headers={"Authorization": "Bearer s3cret-token"})
            assert authed.status_code == 404, path
    c = _client(app)
    schema = c.get("/openapi.json")
    assert schema.status_code == 200 and "cdn" not in schema.text
    assert HEADER in schema.text  # the owner secret is documented in the schema
    page = c.get("/").text + "".join(c.get(f"/static/{f}").text for f in ("app.js", "style.css"))
    assert "http://" not in page and "https://" not in page and "//cdn" not in page


# --- the real server: two users over HTTP, and logs without secrets -----------------------------------


def test_real_server_keeps_sessions_private_and_logs_no_secret(index_dir: Path, tmp_path: Path) -> None:
    tokens = {"alice": "alice-" + "A" * 40, "bob": "bob-" + "B" * 40}
    f = _tokens_file(tmp_path / "tokens.txt", tokens)
    srv = Server(index_dir, tmp_path / "cache", "--tokens", str(f), bearer=tokens["alice"])
    srv.start()
    try:
        alice = httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {tokens['alice']}"})
        bob = httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {tokens['bob']}"})
        v = alice.post("/api/sessions", json={"description": "a red square"}).json()
        sid, secret = v["id"], v["secret"]
        mine = {HEADER: secret}
        assert alice.get(f"/api/sessions/{sid}").status_code == 200  # cookie
        assert bob.get("/api/sessions").json()["total"] == 0
        assert bob.get(f"/api/sessions/{sid}", headers=mine).status_code == 404
        assert bob.post(f"/api/sessions/{sid}/turns", json={"kind": "skip"}, headers=mine).status_code == 404
        assert alice.post(f"/api/sessions/{sid}/turns", json={"kind": "say", "text": "x"}).status_code == 200
        assert (
            httpx.get(f"{srv.url}/api/sessions", headers={"Authorization": "Bearer guess"}).status_code == 401
        )
        assert alice.get(f"/api/sessions/{sid}", headers={HEADER: "x" * 50}).status_code == 404
        assert alice.delete(f"/api/sessions/{sid}", headers=mine).status_code == 204
    finally:
        srv.stop()
    log = srv.log.read_text()
    assert f'"POST /api/sessions/{sid}/turns HTTP/1.1" 200' in log  # the access log was on
    for value in (*tokens.values(), secret, hash_token(tokens["alice"])[7:]):
        assert value not in log


# --- session limits, idle expiry, a damaged database, tokens and ports (issue 26) ----------------------


def _fresh_index(index_dir: Path, tmp_path: Path) -> Path:
    """A copy of the tiny index without its sessions (limits count every session in the file)."""
    ix = tmp_path / "ix"
    shutil.copytree(index_dir, ix, ignore=shutil.ignore_patterns("sessions.sqlite*"))
    return ix


def test_session_limits_per_owner_per_user_and_in_total(index_dir: Path, tmp_path: Path) -> None:
    """One client could fill the one server-wide cap and lock everyone out; now each owner secret
    and each token user has its own limit, and the 429 says which limit was hit."""
    tokens = {"alice": "alice-token-" + "a" * 30, "bob": "bob-token-" + "b" * 30}
    app = create_app(
        _fresh_index(index_dir, tmp_path),
        tokens=_tokens_file(tmp_path / "tokens", tokens),
        max_sessions=5,
        max_sessions_per_owner=2,
        max_sessions_per_user=3,
        warm=False,
    )
    alice = _client(app, headers={"Authorization": f"Bearer {tokens['alice']}"})
    first, _ = _create(alice), _create(alice)  # one owner (the cookie)
    res = alice.post("/api/sessions", json={"description": "x"})
    assert res.status_code == 429 and res.json()["error"] == "too_many_sessions"
    assert "per-owner limit" in res.json()["detail"] and "2 sessions" in res.json()["detail"]
    alice2 = _client(app, headers={"Authorization": f"Bearer {tokens['alice']}"})  # another device
    _create(alice2)
    res = alice2.post("/api/sessions", json={"description": "x"})
    assert res.status_code == 429 and "user 'alice' already has 3" in res.json()["detail"]
    assert "per-user limit" in res.json()["detail"]
    bob = _client(app, headers={"Authorization": f"Bearer {tokens['bob']}"})
    _create(bob)
    _create(_client(app, headers={"Authorization": f"Bearer {tokens['bob']}"}))
    res = _client(app, headers={"Authorization": f"Bearer {tokens['bob']}"}).post(
        "/api/sessions", json={"description": "x"}
    )
    assert res.status_code == 429 and "total limit" in res.json()["detail"], res.text
    # deleting a session frees its place
    assert alice.delete(f"/api/sessions/{first['id']}").status_code == 204
    assert alice.post("/api/sessions", json={"description": "x"}).status_code == 201

    # without per-user tokens every client is the same user: only the owner and total limits
    open_app = create_app(
        _fresh_index(index_dir, tmp_path / "open"),
        max_sessions_per_owner=1,
        max_sessions_per_user=1,
        warm=False,
    )
    one = _client(open_app)
    _create(one), _create(_client(open_app))  # two owners, both user "": no per-user limit
    res = one.post("/api/sessions", json={"description": "x"})
    assert res.status_code == 429 and "per-owner limit" in res.json()["detail"]


def test_idle_sessions_are_deleted(index_dir: Path, tmp_path: Path) -> None:
    ix = _fresh_index(index_dir, tmp_path)
    c = _client(create_app(ix, session_idle_days=1, warm=False))
    old, new = _create(c), _create(c)
    db = sqlite3.connect(ix / "sessions.sqlite")
    with db:
        db.execute("UPDATE sessions SET updated = ? WHERE id = ?", (time.time() - 2 * 86400, old["id"]))
    # kept for ever with 0; deleted by the next server started with a limit (and at requests, at
    # most once a minute, by a running one)
    c0 = _client(create_app(ix, session_idle_days=0, warm=False), headers={HEADER: old["secret"]})
    assert c0.get(f"/api/sessions/{old['id']}").status_code == 200
    c1 = _client(create_app(ix, session_idle_days=1, warm=False), headers={HEADER: old["secret"]})
    assert c1.get(f"/api/sessions/{old['id']}").status_code == 404
    assert [s["id"] for s in c1.get("/api/sessions").json()["sessions"]] == [new["id"]]
    assert db.execute("SELECT COUNT(*) FROM sessions WHERE id=?", (old["id"],)).fetchone()[0] == 0
    # a minted secret whose sessions are all gone is forgotten once it is older than the limit
    store = SessionStore(ix)
    with db:
        db.execute("DELETE FROM sessions")
        db.execute("UPDATE owners SET created = ?", (time.time() - 2 * 86400,))
    assert store.expire(86400) == 0
    assert db.execute("SELECT COUNT(*) FROM owners").fetchone()[0] == 0
    store.close()
    db.close()


def test_a_damaged_sessions_database_is_one_line_and_can_be_set_aside(
    index_dir: Path, tmp_path: Path
) -> None:
    ix = _fresh_index(index_dir, tmp_path)
    junk = b"this is not an SQLite database " * 200
    (ix / "sessions.sqlite").write_bytes(junk)
    with pytest.raises(ConvirError, match=r"damaged.*--reset-sessions"):
        SessionStore(ix)
    res = run_cli("serve", str(ix), "--port", "0", cwd=tmp_path)
    err = res.stderr.strip()
    assert res.returncode == 2 and "Traceback" not in err and len(err.splitlines()) == 1, err
    assert str(ix / "sessions.sqlite") in err and f"convir serve {ix} --reset-sessions" in err
    # the documented repair: the file is renamed aside (kept), and the server starts empty
    srv = Server(ix, tmp_path / "cache", "--reset-sessions")
    srv.start()
    try:
        assert httpx.get(f"{srv.url}/api/health").json()["sessions"] == 0
        assert httpx.post(f"{srv.url}/api/sessions", json={"description": "x"}).status_code == 201
    finally:
        srv.stop()
    aside = [p for p in ix.iterdir() if p.name.startswith("sessions.sqlite.aside-")]
    assert [p.read_bytes() for p in aside] == [junk]
    assert "moved the sessions database aside to" in srv.log.read_text()
    # the -wal and -shm files go with it, under the same new name
    from convir.server.sessions import reset_sessions

    moved = reset_sessions(ix)
    assert moved is not None and moved.exists() and not (ix / "sessions.sqlite").exists()
    assert not (ix / "sessions.sqlite-wal").exists() and not (ix / "sessions.sqlite-shm").exists()
    assert reset_sessions(ix) is None


def test_an_emptied_or_deleted_tokens_file_keeps_the_previous_list(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    f = _tokens_file(tmp_path / "tokens", {"alice": "ta"})
    table = TokenTable(f, recheck_s=0)
    with caplog.at_level(logging.WARNING, logger="convir.server"):
        for text in ("", "# nobody yet\n", "\n\n"):  # an editor mid-save, or a mistake
            f.write_text(text)
            assert table.user(b"ta") == "alice", repr(text)
        f.unlink()
        assert table.user(b"ta") == "alice"
    assert "lists no user" in caplog.text and "does not exist" in caplog.text
    _tokens_file(f, {"bob": "tb"})  # a good file again is read again
    assert table.user(b"tb") == "bob" and table.user(b"ta") is None


def test_tokens_add_refuses_a_missing_folder(tmp_path: Path) -> None:
    target = tmp_path / "nonexist" / "dir" / "t.txt"
    res = run_cli("tokens", "add", str(target), "alice", cwd=tmp_path)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert f"folder {target.parent} does not exist" in res.stderr
    assert not (tmp_path / "nonexist").exists()


def test_real_server_planted_cookie_and_max_sessions(index_dir: Path, tmp_path: Path) -> None:
    """The issue's acceptance commands against the real ``convir serve``: a planted cookie (old
    and new name) owns nothing; ``--max-sessions`` reaches the server and its 429 names it."""
    srv = Server(_fresh_index(index_dir, tmp_path), tmp_path / "cache", "--max-sessions", "2")
    srv.start()
    try:
        known = "A" * 40
        for name in ("convir_session_secret", f"convir_session_secret_{srv.port}"):
            res = httpx.post(
                f"{srv.url}/api/sessions",
                json={"description": "x"},
                headers={"Cookie": f"{name}={known}", "Content-Type": "application/json"},
            )
            assert res.status_code == 201 and res.json()["secret"] != known
            listed = httpx.get(f"{srv.url}/api/sessions", headers={HEADER: known}).json()
            assert listed == {"sessions": [], "total": 0}
        res = httpx.post(f"{srv.url}/api/sessions", json={"description": "x"})
        assert res.status_code == 429 and "--max-sessions" in res.json()["detail"]
    finally:
        srv.stop()


def test_a_busy_port_is_one_line_naming_it(index_dir: Path, tmp_path: Path) -> None:
    """Checked before any model loads: no uvicorn start-up, no traceback, exit 2."""
    with socket.socket() as held:  # another server (convir or not) listening on the port
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        res = run_cli("serve", str(index_dir), "--port", str(port), cwd=tmp_path, timeout=120)
    err = res.stderr.strip()
    assert res.returncode == 2 and len(err.splitlines()) == 1, err
    assert f"port {port} on 127.0.0.1 is in use" in err
    assert "startup" not in res.stdout + err and "Traceback" not in err
