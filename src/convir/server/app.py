"""The FastAPI app: JSON API under ``/api``, the web page at ``/``, OpenAPI at ``/openapi.json``.

``create_app(index_dir, token=...)`` builds everything; ``convir serve`` runs it with uvicorn.
Sessions are private: ``POST /api/sessions`` returns an owner secret (and sets it as an
HttpOnly, SameSite=Strict cookie for the page); every other session route needs it back
(``X-Session-Secret`` header or that cookie) and answers 404 without it. No docs UI is
served (Swagger UI and ReDoc load their code from a CDN); the schema is ``/openapi.json``.
Blocking work (encoder, LLM, SQLite) runs in the thread pool; turns of one session wait
for each other on an asyncio lock (first come, first applied), other sessions run in
parallel (sharing the one LLM fairly: :mod:`convir.llm.fair`). Errors are JSON
``{"error": code, "detail": sentence}``: 4xx for anything a client sent, 503 when the LLM
failed, 507 when the disk is full, 500 only for a bug.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from convir import __version__
from convir.dialog.defaults import PROMPT_TURNS
from convir.errors import ConvirError, is_disk_full
from convir.server import models as m
from convir.server.security import (
    COOKIE_MAX_AGE,
    SECRET_HEADER,
    SECRET_PATTERN,
    USER_KEY,
    Guard,
    clear_foreign_cookies,
    cookie_name,
    cookie_values,
    new_secret,
    secret_key,
    valid_secret,
)
from convir.server.service import ApiError, Service, disk_full_error
from convir.server.sessions import Owner, Quota

log = logging.getLogger("convir.server")
STATIC = Path(__file__).parent / "static"
SessionId = Annotated[str, PathParam(pattern=r"^[A-Za-z0-9_-]{1,64}$", description="session id")]
ERRORS: dict[int | str, dict[str, Any]] = {
    s: {"model": m.ErrorOut} for s in (400, 401, 404, 408, 409, 413, 415, 422, 429, 503, 507)
}


class Caller:
    """The client behind a request: its token's user and the owner secret it sent, if any."""

    def __init__(self, user: str, secret: str | None, from_cookie: bool) -> None:
        self.user, self.secret, self.from_cookie = user, secret, from_cookie

    @property
    def owner(self) -> Owner:
        return Owner(self.user, secret_key(self.secret) if self.secret else None)


# typed ``str`` with a None default (not ``str | None``): a header is absent or a string, and
# the schema then says just that (a nullable header would be fuzzed with the text "null")
SecretHeader = Annotated[
    str,
    Header(
        alias=SECRET_HEADER,
        pattern=SECRET_PATTERN,
        description="owner secret from the create response (browsers send the cookie instead)",
    ),
]


def caller(
    request: Request,
    header: SecretHeader = None,  # type: ignore[assignment]
) -> Caller:
    """The header wins over the cookie ``convir_session_secret_PORT`` (read from the raw
    header: its name depends on the port, and the Guard already refused a request carrying it
    twice); a malformed cookie (another app's?) is ignored."""
    user = str(request.scope.get(USER_KEY, ""))
    if header is not None:
        return Caller(user, header, False)
    cookies = cookie_values(request.scope, cookie_name(request.scope))
    if cookies and valid_secret(cookies[0]):
        return Caller(user, cookies[0], True)
    return Caller(user, None, False)


Who = Annotated[Caller, Depends(caller)]
Size = Annotated[int, Query(ge=32, le=1024, description="longest edge in pixels")]


class SessionLocks:
    """One asyncio lock per session id, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}
        self._users: Counter[str] = Counter()

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock = self._locks.setdefault(key, asyncio.Lock())
        self._users[key] += 1
        try:
            async with lock:
                yield
        finally:
            self._users[key] -= 1
            if not self._users[key]:
                del self._users[key], self._locks[key]


def create_app(
    index_dir: str | Path,
    token: str | None = None,
    tokens: str | Path | None = None,
    llm: str | Any | None = None,
    strategy: str = "concat",
    questioner: str | None = None,
    k: int = 8,
    imagine: str | None = None,
    generator: str | None = None,
    generators: list[str] | None = None,
    allowed_hosts: list[str] | None = None,
    max_body: int = 64 * 1024,
    max_sessions: int = 10_000,
    max_turns: int = 100,
    warm: bool = True,
    prompt_turns: int = PROMPT_TURNS,
    body_timeout: float | None = 30.0,
    llm_budget: float | None = None,
    max_sessions_per_owner: int = 500,
    max_sessions_per_user: int = 2_000,
    session_idle_days: float = 30,
) -> FastAPI:
    """The app for ``index_dir``. ``token``: one bearer token every API call must send;
    ``tokens``: a file of per-user hashed tokens instead (see :mod:`convir.server.tokens`).
    ``allowed_hosts``: Host header values to accept (None = any; ``convir serve`` on a
    loopback address passes the loopback names so DNS rebinding cannot reach it).
    ``body_timeout``: seconds a request body may take to arrive (408 after; None = no limit);
    ``llm_budget``: seconds of LLM time (waiting included) one turn may use before it falls
    back to the LLM-free path (None = no limit; see :mod:`convir.llm.fair`).
    ``max_sessions`` (all owners), ``max_sessions_per_owner`` (one owner secret),
    ``max_sessions_per_user`` (one user of ``tokens``) bound new sessions (429 past one; 0 = no
    limit), and a session idle ``session_idle_days`` is deleted (0 = kept for ever)."""
    from convir.server.tokens import TokenTable

    if token and tokens:
        raise ConvirError("give --token or --tokens, not both")
    table = TokenTable(tokens) if tokens else None  # a bad file fails before any model loads
    try:
        service = Service(
            Path(index_dir),
            llm,
            strategy,
            questioner,
            k,
            imagine,
            generator,
            generators,
            max_sessions,
            max_turns,
            warm,
            prompt_turns,
            llm_budget=llm_budget,
            quota=Quota(
                max_sessions, max_sessions_per_owner, max_sessions_per_user, session_idle_days * 86400
            ),
        )
    except ApiError as exc:  # a bad default (e.g. --questioner plain without --llm)
        raise ConvirError(exc.detail) from exc
    limits = {
        "max_body_bytes": max_body,
        "max_description": m.MAX_DESCRIPTION,
        "max_text": m.MAX_TEXT,
        "max_turns": max_turns,
        "max_k": 50,
    }

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        service.sessions.ensure_open()
        yield
        service.close()

    api = FastAPI(
        title="convir",
        version=__version__,
        summary="Conversational image retrieval over HTTP: describe, answer, refine, find.",
        lifespan=lifespan,
        # Swagger UI and ReDoc load their scripts from a CDN: no docs UI; /openapi.json
        # (behind the token) can be opened in any local OpenAPI tool
        docs_url=None,
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
    )
    api.state.service = service
    locks = SessionLocks()
    _error_handlers(api)
    r = APIRouter(prefix="/api", responses=ERRORS)

    @r.get("/health", response_model=m.Health, tags=["status"])
    def health() -> dict[str, Any]:
        return service.health()

    @r.get("/version", response_model=m.Version, tags=["status"])
    def version() -> dict[str, Any]:
        return service.version()

    @r.get("/options", response_model=m.ServerOptions, tags=["status"])
    def options() -> dict[str, Any]:
        """Strategies, questioners and imagination methods a session may use, and the limits."""
        return service.options(limits)

    @r.get("/search", response_model=m.SearchOut, tags=["search"])
    def search(
        q: Annotated[str, Query(min_length=1, max_length=m.MAX_DESCRIPTION, description="text query")],
        k: Annotated[int, Query(ge=1, le=100)] = 10,
        mode: Literal["dense", "bm25", "hybrid"] = "dense",
    ) -> dict[str, Any]:
        """One-shot search, no session."""
        import time

        t0 = time.perf_counter()
        results = service.search(q, k, mode)
        return {"query": q, "mode": mode, "took_ms": (time.perf_counter() - t0) * 1000, "results": results}

    @r.post("/sessions", response_model=m.SessionCreated, status_code=201, tags=["sessions"])
    async def create_session(
        body: m.SessionCreate, request: Request, response: Response, who: Who
    ) -> dict[str, Any]:
        """Start a conversation with the first description; returns the first ranking and
        question, and the owner secret (``secret``, shown only here) that every later call on
        this session must send as ``X-Session-Secret`` (a browser gets it as an HttpOnly
        cookie). Secrets are minted by the server only: a client that sends one this server
        gave it (to the same token user) keeps it for all its sessions, and then
        ``GET /api/sessions`` lists them together; any other value is replaced by a new one."""
        secret = await run_in_threadpool(_secret_for_create, service, who)
        view = await run_in_threadpool(service.create, body, Owner(who.user, secret_key(secret)))
        if who.from_cookie or secret != who.secret:  # a header client keeps its own secret
            name = cookie_name(request.scope)
            for k, v in clear_foreign_cookies(name, "/"):  # a copy planted at Path=/ goes
                response.headers.append(k.decode(), v.decode())
            response.set_cookie(
                name,
                secret,
                max_age=COOKIE_MAX_AGE,
                path="/api",
                httponly=True,
                samesite="strict",
                secure=request.url.scheme == "https",
            )
        return {**view, "secret": secret}

    @r.get("/sessions", response_model=m.SessionList, tags=["sessions"])
    def list_sessions(
        who: Who,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
        offset: Annotated[int, Query(ge=0, le=m.MAX_OFFSET)] = 0,
    ) -> dict[str, Any]:
        """The caller's sessions (those created with its owner secret), most recently updated first."""
        return service.list_sessions(limit, offset, who.owner)

    @r.get("/sessions/{session_id}", response_model=m.SessionView, tags=["sessions"])
    def get_session(session_id: SessionId, who: Who) -> dict[str, Any]:
        """Current ranking, pending question, generated images and history."""
        return service.view(service.get(session_id, who.owner))

    @r.post("/sessions/{session_id}/turns", response_model=m.SessionView, tags=["sessions"])
    async def post_turn(session_id: SessionId, body: m.TurnIn, who: Who) -> dict[str, Any]:
        """Answer the question, add a detail, skip the question, or mark the wanted image."""
        async with locks.hold(session_id):
            return await run_in_threadpool(service.turn, session_id, body, who.owner)

    @r.delete("/sessions/{session_id}", status_code=204, tags=["sessions"])
    async def delete_session(session_id: SessionId, who: Who) -> Response:
        async with locks.hold(session_id):
            await run_in_threadpool(service.delete, session_id, who.owner)
        return Response(status_code=204)

    @r.get(
        "/sessions/{session_id}/images/{turn}/{index}",
        response_class=Response,
        tags=["media"],
        responses={200: {"content": {"image/png": {}}}},
    )
    def generated_image(
        session_id: SessionId,
        turn: Annotated[int, PathParam(ge=0, le=10_000)],
        index: Annotated[int, PathParam(ge=0, le=100)],
        who: Who,
    ) -> Response:
        """An image generated in this session (only files the session recorded), as a PNG
        re-encoded from its pixels."""
        data = service.generated_image(session_id, turn, index, who.owner)
        return Response(data, media_type="image/png", headers={"cache-control": "private, max-age=3600"})

    def thumbnail_response(item_id: str, size: int) -> Response:
        data = service.thumbnail(item_id, size)
        return Response(data, media_type="image/jpeg", headers={"cache-control": "private, max-age=3600"})

    @r.get(
        "/thumbnails",
        response_class=Response,
        tags=["media"],
        responses={200: {"content": {"image/jpeg": {}}}},
    )
    def thumbnail(
        id: Annotated[str, Query(min_length=1, max_length=m.MAX_ID, description="item id")],
        size: Size = 256,
    ) -> Response:
        """JPEG thumbnail of a gallery item, by id (never by path), re-encoded from its pixels
        only. The id is a query parameter so any id survives URL normalisation (the
        ``thumbnail`` URLs in results use this form)."""
        return thumbnail_response(id, size)

    @r.get(
        "/thumbnails/{item_id:path}",
        response_class=Response,
        tags=["media"],
        responses={200: {"content": {"image/jpeg": {}}}},
    )
    def thumbnail_by_path(
        item_id: Annotated[str, PathParam(max_length=m.MAX_ID)],
        size: Size = 256,
    ) -> Response:
        """The same thumbnail with the id in the path (handy with curl; a browser rewrites ids
        with "." or ".." segments, so the page uses ``/api/thumbnails?id=``)."""
        return thumbnail_response(item_id, size)

    api.include_router(r)
    _link_session_operations(api)

    @api.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"cache-control": "no-cache"})

    api.mount("/static", StaticFiles(directory=STATIC), name="static")
    api.add_middleware(AllowOptions, routes=api.router.routes)  # type: ignore[arg-type]
    api.add_middleware(
        Guard,  # type: ignore[arg-type]
        token=token,
        tokens=table,
        allowed_hosts=allowed_hosts,
        max_body=max_body,
        body_timeout=body_timeout,
    )
    return api


def _link_session_operations(api: FastAPI) -> None:
    """OpenAPI links from the create response (and every session view) to the operations on
    that session, with its id and owner secret, so a client generator or a stateful tester
    (schemathesis) can chain create -> turn -> read -> delete."""
    make_schema = api.openapi

    def openapi() -> dict[str, Any]:
        if api.openapi_schema:
            return api.openapi_schema
        schema = make_schema()
        paths = schema["paths"]
        one, turns = "/api/sessions/{session_id}", "/api/sessions/{session_id}/turns"
        targets = {"GetSession": (one, "get"), "PostTurn": (turns, "post"), "DeleteSession": (one, "delete")}

        def links(secret: str) -> dict[str, Any]:
            params = {"path.session_id": "$response.body#/id", f"header.{SECRET_HEADER}": secret}
            return {
                name: {"operationId": paths[path][method]["operationId"], "parameters": params}
                for name, (path, method) in targets.items()
            }

        paths["/api/sessions"]["post"]["responses"]["201"]["links"] = links("$response.body#/secret")
        for path, method in ((one, "get"), (turns, "post")):
            paths[path][method]["responses"]["200"]["links"] = links(f"$request.header.{SECRET_HEADER}")
        return schema

    api.openapi = openapi  # type: ignore[method-assign]


class AllowOptions:
    """``OPTIONS`` on a served path answers 204 with its ``Allow`` header (RFC 9110), not a
    405 without one; an unknown path stays a 404. Inside the Guard: the token is still needed."""

    def __init__(self, app: Any, routes: list[Any]) -> None:
        self.app, self.routes = app, routes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope.get("method") == "OPTIONS":
            from starlette.routing import Match, Mount

            methods: set[str] = set()
            for route in self.routes:  # ask each route (included routers too) per method
                if isinstance(route, Mount):  # the static files: read-only
                    if route.matches(scope)[0] is not Match.NONE:
                        methods |= {"GET", "HEAD"}
                    continue
                for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"):
                    if route.matches({**scope, "method": method})[0] is Match.FULL:
                        methods.add(method)
            if methods:
                allow = ", ".join(sorted(methods | {"OPTIONS"})).encode()
                await send({"type": "http.response.start", "status": 204, "headers": [(b"allow", allow)]})
                await send({"type": "http.response.body", "body": b""})
                return
        await self.app(scope, receive, send)


def _secret_for_create(service: Service, who: Caller) -> str:
    """The secret a new session gets: the caller's, if this server minted it for this user,
    else a fresh one. A cookie another page on this host planted (cookies ignore ports, and a
    sibling subdomain can set one for a parent domain) therefore owns nothing."""
    if who.secret is not None and service.sessions.minted(who.owner):
        return who.secret
    return new_secret()


def _error_handlers(api: FastAPI) -> None:
    @api.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"error": exc.code, "detail": exc.detail}, status_code=exc.status)

    @api.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {
                "loc": [str(x) for x in e.get("loc", ())],
                "msg": str(e.get("msg", "")),
                "type": str(e.get("type")),
            }
            for e in exc.errors()
        ]
        detail = "; ".join(f"{'.'.join(e['loc'])}: {e['msg']}" for e in errors) or "invalid request"
        return JSONResponse({"error": "invalid_request", "detail": detail, "errors": errors}, status_code=422)

    @api.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse(
            {"error": code, "detail": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers
        )

    @api.exception_handler(Exception)
    async def crashed(_: Request, exc: Exception) -> JSONResponse:
        if is_disk_full(exc):  # a write no route expected to fail (a cache, a temp file)
            return await api_error(_, disk_full_error(getattr(exc, "filename", None)))
        log.exception("internal error", exc_info=exc)
        return JSONResponse(
            {"error": "internal", "detail": "internal error (logged); no session was changed"},
            status_code=500,
        )
