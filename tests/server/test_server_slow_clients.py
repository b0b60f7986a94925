"""Slow and greedy clients against the real ``convir serve`` (uvicorn, subprocess) over real
sockets: unfinished headers, a header trickled byte by byte, a body that never completes,
and more connections than ``--max-connections``. Short limits keep the test fast; every wait
is bounded (a server that never closes fails the test instead of hanging it)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import httpx
import pytest

pytest.importorskip("uvicorn")

from server_helpers import Server, tiny_index

LIMIT_S = 2  # --header-timeout and --body-timeout
MAX_CONNECTIONS = 4
BOUND_S = 60  # how long a test waits for the server before failing (not a timing assertion)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    ix = tiny_index(tmp_path_factory)
    srv = Server(
        ix,
        tmp_path_factory.mktemp("slow") / "cache",
        "--header-timeout",
        str(LIMIT_S),
        "--body-timeout",
        str(LIMIT_S),
        "--max-connections",
        str(MAX_CONNECTIONS),
    )
    srv.start()
    yield srv
    srv.stop()


def _connect(server: Server) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=BOUND_S)


def _read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (socket.timeout if never)."""
    out = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return out
        if not chunk:
            return out
        out += chunk


def _wait_until_serving(server: Server) -> None:
    """Until a new connection is served again (closed ones may take a moment to count)."""
    deadline = time.monotonic() + BOUND_S
    while True:
        try:
            if httpx.get(f"{server.url}/api/health", timeout=BOUND_S).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "the server did not serve again"
        time.sleep(0.1)


@pytest.fixture(autouse=True)
def idle_server(server: Server) -> None:
    _wait_until_serving(server)


def test_unfinished_headers_are_answered_408_and_closed(server: Server) -> None:
    with _connect(server) as sock:
        sock.sendall(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        answer = _read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert b"headers did not arrive" in answer
    with _connect(server) as sock:  # a connection that never sends a byte is closed too
        assert _read_until_closed(sock).startswith(b"HTTP/1.1 408 ")


def test_a_header_trickled_byte_by_byte_is_cut_off(server: Server) -> None:
    """Slowloris: each byte resets no timer; the whole header has LIMIT_S seconds."""
    closed = False
    with _connect(server) as sock:
        sock.sendall(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        for _ in range(int(BOUND_S / 0.2)):
            try:
                sock.sendall(b"X-A: b\r\n")
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            sock.settimeout(0.2)
            try:
                if sock.recv(65536) is not None:  # the 408, or b"" at close
                    closed = True
                    break
            except TimeoutError:
                pass
    assert closed, "the server kept a trickling header open"


def test_a_slow_body_gets_408(server: Server) -> None:
    head = (
        b"POST /api/sessions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\n\r\n"
    )
    with _connect(server) as sock:
        sock.sendall(head + b'{"description": ')  # and the rest never comes
        answer = _read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert b"body did not arrive" in answer


def test_connections_over_the_limit_are_refused_with_503(server: Server) -> None:
    held = [_connect(server) for _ in range(MAX_CONNECTIONS)]
    try:
        # each held connection completes one request and stays open (keep-alive), so the
        # count is the server's own and no header timer runs on them meanwhile
        for sock in held:
            sock.sendall(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
        with _connect(server) as extra:
            answer = _read_until_closed(extra)
        assert answer.startswith(b"HTTP/1.1 503 "), answer
        assert b"too_many_connections" in answer
    finally:
        for sock in held:
            sock.close()
    _wait_until_serving(server)  # the freed slots serve again
