"""HTTP service and web page for conversational search (``convir serve``, ``convir[server]``).

``create_app(index_dir, token=... | tokens=FILE)`` is the FastAPI app; :func:`serve` runs it
with uvicorn. See docs/server.md for the API, curl examples and the security model (sessions
private to their owner secret, per-user tokens, what leaves the server in a thumbnail).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["check_port", "create_app", "serve"]


def create_app(index_dir: str | Path, token: str | None = None, **options: Any) -> Any:
    """The FastAPI app over ``index_dir`` (imported lazily: FastAPI is an optional extra)."""
    from convir.server.app import create_app as _create

    return _create(index_dir, token=token, **options)


def serve(
    index_dir: str | Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    token: str | None = None,
    allowed_hosts: list[str] | None = None,
    log_level: str = "info",
    tokens: str | Path | None = None,
    header_timeout: float | None = None,
    max_connections: int | None = None,
    **options: Any,
) -> None:
    """Run the app with uvicorn until interrupted.

    On a loopback address only loopback Host headers are accepted (plus ``allowed_hosts``),
    so a web page elsewhere cannot reach the server through DNS rebinding.
    ``header_timeout`` / ``max_connections``: see :mod:`convir.server.limits` (defaults there);
    ``body_timeout`` (in ``options``) goes to the app's guard."""
    import uvicorn

    from convir.server.limits import HEADER_TIMEOUT_S, MAX_CONNECTIONS, protocol_class
    from convir.server.security import LOOPBACK_HOSTS, is_loopback

    check_port(host, port)  # before any model loads
    hosts: list[str] | None = None
    if is_loopback(host):
        hosts = [*LOOPBACK_HOSTS, host, *(allowed_hosts or [])]
    elif allowed_hosts:
        hosts = list(allowed_hosts)
    app = create_app(index_dir, token=token, tokens=tokens, allowed_hosts=hosts, **options)
    http = protocol_class(
        HEADER_TIMEOUT_S if header_timeout is None else header_timeout,
        MAX_CONNECTIONS if max_connections is None else max_connections,
    )
    # the protocol refuses connections past max_connections itself (uvicorn's own
    # limit_concurrency would only answer once a whole request had arrived)
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_keep_alive=5, http=http)


def check_port(host: str, port: int) -> None:
    """A one-line :class:`~convir.errors.ConvirError` if ``host:port`` cannot be listened on
    (another server has it, an address not on this machine, a privileged port), found by
    binding it the way uvicorn will (SO_REUSEADDR, which still refuses a port in use)."""
    import errno
    import socket

    from convir.errors import ConvirError

    if not port:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConvirError(
                    f"port {port} on {host} is in use; stop the server that holds it or pick another "
                    "with --port"
                ) from None
            raise ConvirError(f"cannot listen on port {port} of {host}: {exc.strerror or exc}") from None
