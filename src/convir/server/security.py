"""ASGI guards in front of every route: Host check, bearer token(s), request size, headers;
and the owner secrets that make each session private to the client that created it.

Plain ASGI (not Starlette ``BaseHTTPMiddleware``) so a rejected request is answered before
its body is read and nothing is buffered beyond the limit. The guard records the token's
user in the scope (``USER_KEY``); the routes combine it with the owner secret.
Neither a token nor a secret is ever logged: both travel in headers (or an HttpOnly
cookie), never in a URL, so uvicorn's access log (request line and status) cannot show them.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import secrets
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from convir.server.tokens import TokenTable

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
# the page shell and its static files carry no data; a browser cannot attach a header to a
# navigation, so they load without the token and the page then sends it on every API call
PUBLIC_PATHS = ("/", "/favicon.ico")
PUBLIC_PREFIXES = ("/static/",)
PAGE_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
        b"connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
    ),
    (b"x-frame-options", b"DENY"),
]
COMMON_HEADERS = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer")]
# session views (and the create response, which carries the owner secret) must not be kept
# by a browser or proxy cache; routes that set their own cache-control (thumbnails) keep it
NO_STORE = (b"cache-control", b"no-store")
USER_KEY = "convir.user"  # scope key: the bearer token's user ("" without per-user tokens)

# owner secrets: minted by POST /api/sessions, sent back in this header or cookie. The cookie's
# name carries the server's port (convir_session_secret_8000): cookies are shared by every port
# of a host, and two convir servers on one machine must not overwrite each other's secret
SECRET_HEADER = "X-Session-Secret"
SECRET_COOKIE = "convir_session_secret"
SECRET_PATTERN = r"^[A-Za-z0-9_-]{32,128}$"
_SECRET_RE = re.compile(SECRET_PATTERN)
COOKIE_MAX_AGE = 400 * 24 * 3600  # the most browsers keep a cookie


def new_secret() -> str:
    """An owner secret: 256 random bits, URL-safe."""
    return secrets.token_urlsafe(32)


def valid_secret(value: str | None) -> bool:
    return bool(value) and _SECRET_RE.match(value or "") is not None


def cookie_name(scope: Scope) -> str:
    """The owner-secret cookie's name for this server: ``convir_session_secret_PORT``, PORT being
    the port the server listens on (behind a reverse proxy: the backend's port)."""
    server = scope.get("server") or (None, None)
    return f"{SECRET_COOKIE}_{server[1]}" if server[1] else SECRET_COOKIE


def cookie_values(scope: Scope, name: str) -> list[str]:
    """Every value of cookie ``name`` in the request, in order, from all Cookie headers. A browser
    sends one per (path, domain) it holds, so more than one means another page on this host (a
    sibling port, path or subdomain) planted one; Starlette's own parser keeps only the last."""
    out = []
    for k, v in scope.get("headers", []):
        if k != b"cookie":
            continue
        for part in v.decode("latin-1").split(";"):
            key, eq, value = part.strip().partition("=")
            if eq and key.strip() == name:
                out.append(value.strip().strip('"'))
    return out


def clear_foreign_cookies(name: str, path: str) -> list[tuple[bytes, bytes]]:
    """Set-Cookie headers that delete ``name`` at ``/`` and at each prefix of ``path`` below
    ``/api`` (the server sets its own only at ``Path=/api``), so a planted copy goes away."""
    paths = ["/"]
    parts = [p for p in path.split("/") if p]
    for n in range(2, len(parts) + 1):
        paths.append("/" + "/".join(parts[:n]))
    return [
        (b"set-cookie", f"{name}=; Max-Age=0; Path={p}; HttpOnly; SameSite=Strict".encode("latin-1"))
        for p in paths
        if p != "/api"
    ]


def secret_key(secret: str) -> str:
    """What the session store keeps of a secret: its SHA-256 (a random 256-bit secret needs
    no slow hash; the database alone gives no access)."""
    return hashlib.sha256(secret.encode()).hexdigest()


async def send_json(
    send: Send, status: int, error: str, detail: str, extra: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    body = json.dumps({"error": error, "detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": [*headers, *extra]})
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> bytes | None:
    for k, v in scope.get("headers", []):
        if k == name:
            return v
    return None


def host_without_port(host: str) -> str:
    host = host.strip().lower()
    if host.startswith("["):  # [::1]:8000
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def is_loopback(host: str) -> bool:
    import ipaddress

    if host in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Guard:
    """Host allow-list (DNS-rebinding protection for a loopback server), bearer token on
    every non-public path (one shared ``token``, or per-user ``tokens``), request body limit
    (413) and deadline (408: a body trickled in byte by byte must not hold a worker), and
    security headers."""

    def __init__(
        self,
        app: ASGIApp,
        token: str | None = None,
        allowed_hosts: Iterable[str] | None = None,
        max_body: int = 64 * 1024,
        tokens: TokenTable | None = None,
        body_timeout: float | None = 30.0,
    ) -> None:
        if token and tokens is not None:
            raise ValueError("give a shared token or a tokens table, not both")
        self.app = app
        self.token = token.encode() if token else None
        self.tokens = tokens
        self.allowed_hosts = {h.lower().strip("[]") for h in allowed_hosts} if allowed_hosts else None
        self.max_body = max_body
        self.body_timeout = body_timeout

    def _user(self, scope: Scope) -> str | None:
        """The caller's user ("" for an open server or the shared token), None if refused."""
        if self.token is None and self.tokens is None:
            return ""
        value = _header(scope, b"authorization") or b""
        scheme, _, given = value.partition(b" ")
        given = given.strip()
        if scheme.lower() != b"bearer" or not given:
            return None
        if self.tokens is not None:
            return self.tokens.user(given)
        assert self.token is not None
        return "" if secrets.compare_digest(given, self.token) else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        if self.allowed_hosts is not None:
            host = host_without_port((_header(scope, b"host") or b"").decode("latin-1"))
            if host not in self.allowed_hosts:
                await send_json(send, 400, "bad_host", f"host {host!r} is not served here")
                return
        public = path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)
        user = self._user(scope)
        if not public and user is None:
            await send_json(
                send,
                401,
                "unauthorized",
                "this server needs a bearer token: send 'Authorization: Bearer TOKEN'",
                [(b"www-authenticate", b'Bearer realm="convir"')],
            )
            return
        scope[USER_KEY] = user or ""
        extra = COMMON_HEADERS + (PAGE_HEADERS if public else [])
        api = path.startswith("/api/")
        if path.startswith("/api/sessions"):
            name = cookie_name(scope)
            copies = len(cookie_values(scope, name))
            if copies > 1:  # which one is ours cannot be told: refuse, and clear the planted ones
                await send_json(
                    send,
                    400,
                    "duplicate_cookie",
                    f"this request carries {copies} {name} cookies: another page on this host (another "
                    "port, path or subdomain) set one; the copies outside /api were cleared, reload "
                    "(or clear this site's cookies)",
                    [*COMMON_HEADERS, NO_STORE, *clear_foreign_cookies(name, path)],
                )
                return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", []), *extra]
                if api and not any(k.lower() == b"cache-control" for k, _ in headers):
                    headers.append(NO_STORE)
                message = {**message, "headers": headers}
            await send(message)

        if scope.get("method") in ("POST", "PUT", "PATCH"):
            declared = _header(scope, b"content-length")
            if declared is not None:
                try:
                    too_big = int(declared) > self.max_body
                except ValueError:
                    await send_json(send, 400, "bad_request", "invalid Content-Length header")
                    return
                if too_big:
                    await send_json(send, 413, "too_large", f"request body over {self.max_body} bytes")
                    return
            try:
                messages = await self._read_body(receive)
            except TimeoutError:
                await send_json(
                    send,
                    408,
                    "timeout",
                    f"the request body did not arrive within {self.body_timeout:g} s",
                    [(b"connection", b"close")],
                )
                return
            if messages is None:
                await send_json(send, 413, "too_large", f"request body over {self.max_body} bytes")
                return

            async def replay() -> Message:
                return messages.pop(0) if messages else await receive()

            await self.app(scope, replay, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)

    async def _read_body(self, receive: Receive) -> list[Message] | None:
        """The body's messages, None past ``max_body`` (also catches chunked bodies and a lying
        Content-Length); ``TimeoutError`` when the whole body takes over ``body_timeout``."""
        messages: list[Message] = []
        size = 0
        async with asyncio.timeout(self.body_timeout):
            while True:
                msg = await receive()
                messages.append(msg)
                if msg["type"] != "http.request":
                    return messages
                size += len(msg.get("body", b""))
                if size > self.max_body:
                    return None
                if not msg.get("more_body"):
                    return messages
