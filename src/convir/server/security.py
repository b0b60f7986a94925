"""ASGI guards in front of every route: Host check, bearer token, request size, page headers.

Plain ASGI (not Starlette ``BaseHTTPMiddleware``) so a rejected request is answered before
its body is read and nothing is buffered beyond the limit.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

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
    every non-public path, request body limit (413), and security headers."""

    def __init__(
        self,
        app: ASGIApp,
        token: str | None = None,
        allowed_hosts: Iterable[str] | None = None,
        max_body: int = 64 * 1024,
    ) -> None:
        self.app = app
        self.token = token.encode() if token else None
        self.allowed_hosts = {h.lower().strip("[]") for h in allowed_hosts} if allowed_hosts else None
        self.max_body = max_body

    def _authorised(self, scope: Scope) -> bool:
        if self.token is None:
            return True
        value = _header(scope, b"authorization") or b""
        scheme, _, given = value.partition(b" ")
        return scheme.lower() == b"bearer" and secrets.compare_digest(given.strip(), self.token)

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
        if not public and not self._authorised(scope):
            await send_json(
                send,
                401,
                "unauthorized",
                "this server needs a bearer token: send 'Authorization: Bearer TOKEN'",
                [(b"www-authenticate", b'Bearer realm="convir"')],
            )
            return
        extra = COMMON_HEADERS + (PAGE_HEADERS if public else [])

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *extra]}
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
            messages: list[Message] = []
            size = 0
            while True:  # also catches chunked bodies and a lying Content-Length
                msg = await receive()
                messages.append(msg)
                if msg["type"] != "http.request":
                    break
                size += len(msg.get("body", b""))
                if size > self.max_body:
                    await send_json(send, 413, "too_large", f"request body over {self.max_body} bytes")
                    return
                if not msg.get("more_body"):
                    break

            async def replay() -> Message:
                return messages.pop(0) if messages else await receive()

            await self.app(scope, replay, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)
