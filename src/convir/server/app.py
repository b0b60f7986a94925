"""The FastAPI app: JSON API under ``/api``, the web page at ``/``, OpenAPI at ``/openapi.json``.

``create_app(index_dir, token=...)`` builds everything; ``convir serve`` runs it with uvicorn.
Blocking work (encoder, LLM, SQLite) runs in the thread pool; turns of one session wait
for each other on an asyncio lock (first come, first applied), other sessions run in
parallel. Errors are JSON ``{"error": code, "detail": sentence}``: 4xx for anything a
client sent, 503 when the LLM failed, 500 only for a bug.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from convir import __version__
from convir.errors import ConvirError
from convir.server import models as m
from convir.server.security import Guard
from convir.server.service import ApiError, Service

log = logging.getLogger("convir.server")
STATIC = Path(__file__).parent / "static"
SessionId = Annotated[str, PathParam(pattern=r"^[A-Za-z0-9_-]{1,64}$", description="session id")]
ERRORS: dict[int | str, dict[str, Any]] = {
    s: {"model": m.ErrorOut} for s in (400, 401, 404, 409, 413, 415, 422, 429, 503)
}


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
) -> FastAPI:
    """The app for ``index_dir``. ``token``: bearer token every API call must send.
    ``allowed_hosts``: Host header values to accept (None = any; ``convir serve`` on a
    loopback address passes the loopback names so DNS rebinding cannot reach it)."""
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
        yield
        service.close()

    api = FastAPI(
        title="convir",
        version=__version__,
        summary="Conversational image retrieval over HTTP: describe, answer, refine, find.",
        lifespan=lifespan,
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

    @r.post("/sessions", response_model=m.SessionView, status_code=201, tags=["sessions"])
    async def create_session(body: m.SessionCreate) -> dict[str, Any]:
        """Start a conversation with the first description; returns the first ranking and question."""
        return await run_in_threadpool(service.create, body)

    @r.get("/sessions", response_model=m.SessionList, tags=["sessions"])
    def list_sessions(
        limit: Annotated[int, Query(ge=1, le=500)] = 100, offset: Annotated[int, Query(ge=0)] = 0
    ) -> dict[str, Any]:
        """Sessions, most recently updated first."""
        return service.list_sessions(limit, offset)

    @r.get("/sessions/{session_id}", response_model=m.SessionView, tags=["sessions"])
    def get_session(session_id: SessionId) -> dict[str, Any]:
        """Current ranking, pending question, generated images and history."""
        return service.view(service.get(session_id))

    @r.post("/sessions/{session_id}/turns", response_model=m.SessionView, tags=["sessions"])
    async def post_turn(session_id: SessionId, body: m.TurnIn) -> dict[str, Any]:
        """Answer the question, add a detail, skip the question, or mark the wanted image."""
        async with locks.hold(session_id):
            return await run_in_threadpool(service.turn, session_id, body)

    @r.delete("/sessions/{session_id}", status_code=204, tags=["sessions"])
    async def delete_session(session_id: SessionId) -> Response:
        async with locks.hold(session_id):
            await run_in_threadpool(service.delete, session_id)
        return Response(status_code=204)

    @r.get(
        "/sessions/{session_id}/images/{turn}/{index}",
        response_class=FileResponse,
        tags=["media"],
        responses={200: {"content": {"image/png": {}}}},
    )
    def generated_image(
        session_id: SessionId,
        turn: Annotated[int, PathParam(ge=0, le=10_000)],
        index: Annotated[int, PathParam(ge=0, le=100)],
    ) -> FileResponse:
        """An image generated in this session (only files the session recorded)."""
        return FileResponse(service.generated_image(session_id, turn, index))

    @r.get(
        "/thumbnails/{item_id:path}",
        response_class=Response,
        tags=["media"],
        responses={200: {"content": {"image/jpeg": {}}}},
    )
    def thumbnail(
        item_id: Annotated[str, PathParam(max_length=m.MAX_ID)],
        size: Annotated[int, Query(ge=32, le=1024, description="longest edge in pixels")] = 256,
    ) -> Response:
        """JPEG thumbnail of a gallery item, by id (never by path)."""
        data = service.thumbnail(item_id, size)
        return Response(data, media_type="image/jpeg", headers={"cache-control": "private, max-age=3600"})

    api.include_router(r)

    @api.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"cache-control": "no-cache"})

    api.mount("/static", StaticFiles(directory=STATIC), name="static")
    api.add_middleware(Guard, token=token, allowed_hosts=allowed_hosts, max_body=max_body)  # type: ignore[arg-type]
    return api


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
        log.exception("internal error", exc_info=exc)
        return JSONResponse(
            {"error": "internal", "detail": "internal error (logged); no session was changed"},
            status_code=500,
        )
