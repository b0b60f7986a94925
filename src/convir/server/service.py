"""The HTTP service's work, without HTTP: sessions over the shared conversation loop.

Every turn rebuilds a :class:`~convir.dialog.engine.Conversation` from the stored state
(the same loop as ``convir chat``), applies the user's turn and writes the new state with a
version check. Nothing lives only in memory, so a restart, a crash mid-turn or a failed LLM
call leaves each session at its last completed turn. Methods here are blocking (encoder,
LLM, SQLite) and thread-safe; the app runs them in a thread pool.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

from convir import __version__
from convir.dialog.engine import Conversation, TurnResult
from convir.dialog.session import PROMPT_TURNS, SessionSpec, build_conversation
from convir.dialog.state import DialogState
from convir.errors import ConvirError, is_disk_full
from convir.gallery.layer import TextRanking
from convir.gallery.store import GALLERY_ROOT, repoint_command
from convir.llm.base import LLMError
from convir.llm.fair import BudgetSpent, FairLLM, llm_turn
from convir.server.media import ThumbnailCache, gallery_root, safe_generated_path, safe_item_path
from convir.server.models import SessionCreate, TurnIn
from convir.server.sessions import Owner, Quota, QuotaExceeded, SessionRow, SessionStore, VersionConflict
from convir.specs import REGISTRY, NeedsLLMError

log = logging.getLogger("convir.server")
API_VERSION = 1


class ApiError(Exception):
    """An error the client should see: HTTP status, a short code and a sentence saying why."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail


class _LockedEncoder:
    """The text encoder behind a lock: HF fast tokenizers fail ("Already borrowed") when two
    threads use one tokenizer at once. Encoding a query takes milliseconds, so this is cheap."""

    def __init__(self, inner: Any, lock: threading.Lock) -> None:
        self._inner, self._lock = inner, lock

    def encode_text(self, texts: list[str], *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return self._inner.encode_text(texts, *args, **kwargs)

    def encode_images(self, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return self._inner.encode_images(*args, **kwargs)

    def encode_pil(self, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return self._inner.encode_pil(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class ServerGallery(TextRanking):
    """A :class:`~convir.search.SearchIndex` shared by request threads. faiss and numpy
    searches are safe to run concurrently; the tokenizer and the index's SQLite connection
    are not, so those go through locks. Anything else is the index's own attribute."""

    def __init__(self, idx: Any) -> None:
        self._idx = idx
        self.ids: list[str] = idx.ids
        self.position: dict[str, int] = idx.position
        self.ranker = idx.ranker
        self._db_lock = threading.Lock()
        self._enc_lock = threading.Lock()
        self._encoder: _LockedEncoder | None = None

    @property
    def encoder(self) -> Any:
        if self._encoder is None:
            with self._enc_lock:
                inner = self._idx.encoder
            self._encoder = _LockedEncoder(inner, self._enc_lock)
        return self._encoder

    def captions(self, positions: Any) -> list[list[str]]:
        with self._db_lock:
            return self._idx.captions(positions)

    def items(self, ids: list[str]) -> dict[str, Any]:
        with self._db_lock:
            return self._idx.store.items(ids)

    def generated(self, ids: list[str]) -> dict[str, tuple[str, str]]:
        """id -> (generated caption, captioner spec) (``convir index --captioner``)."""
        with self._db_lock:
            return self._idx.store.generated(ids)

    def vectors(self, ids: list[str]) -> dict[str, Any]:
        with self._db_lock:
            return self._idx.store.vectors(ids)

    def setting(self, key: str) -> str | None:
        with self._db_lock:
            return self._idx.store.get(key)

    def __len__(self) -> int:
        return len(self.ids)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._idx, name)


class Service:
    """Sessions over one index directory; see the module docstring."""

    def __init__(
        self,
        index_dir: Path,
        llm: str | Any | None = None,
        strategy: str = "concat",
        questioner: str | None = None,
        k: int = 8,
        imagine: str | None = None,
        generator: str | None = None,
        generators: list[str] | None = None,
        max_sessions: int = 10_000,
        max_turns: int = 100,
        warm: bool = True,
        prompt_turns: int = PROMPT_TURNS,
        quota: Quota | None = None,
        *,
        llm_budget: float | None = None,
    ) -> None:
        from convir.search import open_index

        self.index_dir = Path(index_dir)
        self.gallery = ServerGallery(open_index(self.index_dir))
        self.root = self._gallery_root()
        if self.root is not None and not self.root.is_dir():
            log.warning("%s", self._root_missing())
        self.sessions = SessionStore(self.index_dir)
        self.quota = quota if quota is not None else Quota(total=max_sessions)
        self._expire()  # sessions idle past the limit while the server was down
        self.thumbs = ThumbnailCache()
        self.llm: Any = _fair_llm(llm)
        self.llm_budget = llm_budget
        self.llm_spec: str | None = getattr(self.llm, "spec", None) if self.llm is not None else None
        self.max_sessions, self.max_turns = max_sessions, max_turns
        self.prompt_turns = prompt_turns
        # generator specs a client may pick (a spec can name a model path or a server URL, so
        # clients never pass arbitrary ones); the offline text: generator is always allowed
        self.generators = sorted({"text:", *(generators or []), *([generator] if generator else [])})
        self.defaults = self._resolve(
            SessionCreate(
                description="-",
                strategy=strategy,
                questioner=questioner,
                k=k,
                imagine=imagine,
                generator=generator,
            )
        )
        self._conversation(self.defaults)  # every default part loads now, not at the first request
        if warm:  # load the encoder and BM25 now: the first user should not wait for them
            self.gallery.encoder.encode_text(["warm up"])
            _ = self.gallery.ranker.bm25

    # options and components ---------------------------------------------------------------
    def _resolve(self, body: SessionCreate) -> SessionSpec:
        """The session's spec from the request and the server defaults; 400 for unknown names
        or options, and for parts that need an LLM when the server runs without one."""
        d: SessionSpec | None = getattr(self, "defaults", None)
        generator = body.generator if body.generator is not None else (d.generator if d else None)
        if generator is not None and generator not in self.generators:
            raise ApiError(
                400,
                "bad_option",
                f"generator {generator!r} is not enabled on this server; "
                f"enabled: {', '.join(self.generators)}",
            )
        spec = SessionSpec(
            strategy=body.strategy or (d.strategy if d else "concat"),
            questioner=body.questioner or (d.questioner if d else None),
            answers=body.answers or (d.answers if d else "aware"),
            k=body.k or (d.k if d else 8),
            llm=self.llm_spec,
            imagine=body.imagine if body.imagine is not None else (d.imagine if d else None),
            generator=generator,
            prompt_turns=getattr(self, "prompt_turns", PROMPT_TURNS),
        )
        try:
            return spec.validate(have_llm=self.llm is not None)
        except NeedsLLMError as exc:
            raise ApiError(
                400, "needs_llm", f"{exc} (this server runs without one: start it with --llm)"
            ) from exc
        except ConvirError as exc:
            raise ApiError(400, "bad_option", str(exc)) from exc

    def _conversation(
        self, spec: SessionSpec | dict[str, Any], state: DialogState | None = None
    ) -> Conversation:
        """The shared conversation builder over this server's gallery and LLM (stored sessions
        keep their options as a spec dict; older rows hold a subset of its keys)."""
        try:
            spec = spec if isinstance(spec, SessionSpec) else SessionSpec.from_dict(spec)
            conv = build_conversation(spec, self.gallery, llm=self.llm, state=state)
        except NeedsLLMError as exc:
            raise ApiError(503, "needs_llm", f"{exc}: restart the server with --llm") from exc
        except ConvirError as exc:
            raise ApiError(400, "bad_option", str(exc)) from exc
        if spec.imagine and conv.imagination is None:
            raise ApiError(
                503,
                "no_generator",
                f"the image generator {spec.generator!r} cannot be used on this server "
                "(see its log); start the session without imagination",
            )
        return conv

    # sessions -------------------------------------------------------------------------------
    # Every session method takes the caller's Owner; a session of another owner is a 404 with
    # the same sentence as one that does not exist, so its existence is not revealed.
    def create(self, body: SessionCreate, owner: Owner) -> dict[str, Any]:
        spec = self._resolve(body)
        self._expire()
        try:
            self.sessions.check_quota(owner, self.quota)  # before the turn's work, and again on insert
        except QuotaExceeded as exc:
            raise ApiError(429, "too_many_sessions", str(exc)) from exc

        def start(conv: Conversation) -> dict[str, Any]:
            def begin(description: str) -> TurnResult:
                from convir.dialog.reference import like_reference

                ref = like_reference(conv.gallery, body.like) if body.like is not None else None
                return conv.start(description, ref)

            res = _run_turn(begin, body.description)
            assert conv.state is not None
            return self._last(res, conv.state, conv.k)

        with self._disk_full(_images_dir()):
            state, last = self._within_budget(spec, None, start)
        try:
            with self._disk_full(self.sessions.path):
                row = self.sessions.create(spec.to_dict(), state.to_dict(), last, owner, self.quota)
        except QuotaExceeded as exc:
            raise ApiError(429, "too_many_sessions", str(exc)) from exc
        return self.view(row)

    def _within_budget(
        self,
        spec: SessionSpec | dict[str, Any],
        stored: dict[str, Any] | None,
        apply: Callable[[Conversation], dict[str, Any]],
    ) -> tuple[DialogState, dict[str, Any]]:
        """``apply`` a turn to the state ``stored`` (None: a new session) within this server's
        per-turn LLM budget. When the budget runs out before the turn is done, the turn is
        applied again from the stored state without the LLM (:func:`llm_free`), and its
        ``notice`` says so; the session keeps its options, so the next turn uses the LLM again."""
        try:
            with llm_turn(self.llm_budget) as used:
                conv = self._conversation(spec, DialogState.from_dict(stored) if stored is not None else None)
                last = apply(conv)
            if not used.spent:
                assert conv.state is not None
                return conv.state, last
        except BudgetSpent:
            pass
        free = llm_free(spec if isinstance(spec, SessionSpec) else SessionSpec.from_dict(spec))
        log.info("LLM budget (%s s) spent: turn applied without the LLM", self.llm_budget)
        state = DialogState.from_dict(stored) if stored is not None else None
        conv = build_conversation(free, self.gallery, llm=None, state=state)
        last = apply(conv)
        last["notice"] = (
            f"the LLM time budget of a turn ({self.llm_budget:g} s) was spent (the model is busy with "
            f"other sessions): this turn ranked with '{free.strategy}' and asked "
            f"{'no question' if free.questioner == 'none' else 'with ' + repr(free.questioner)}; "
            "the next turn uses the LLM again"
        )
        assert conv.state is not None
        return conv.state, last

    @staticmethod
    def _disk_full(path: Path) -> Any:
        return disk_full_as_507(path)

    def _expire(self) -> None:
        """Delete idle sessions (at most once a minute, at the next request)."""
        self.sessions.expire(self.quota.idle_s, every_s=60)

    def get(self, session_id: str, owner: Owner) -> SessionRow:
        self._expire()
        row = self.sessions.get(session_id, owner)
        if row is None:
            raise _no_session(session_id)
        return row

    def turn(self, session_id: str, body: TurnIn, owner: Owner) -> dict[str, Any]:
        """Apply one user turn. Callers serialise turns per session (the app holds a lock per
        id); the version check additionally catches a second process on the same index,
        in which case the turn is re-applied to the newer state rather than lost."""
        for _ in range(5):
            row = self.get(session_id, owner)
            if body.version is not None and body.version != row.version:
                raise ApiError(
                    409,
                    "version_conflict",
                    f"the session is at version {row.version}, not {body.version}: reload it",
                )
            if row.status == "found":
                raise ApiError(
                    409, "finished", f"the session is finished: {row.state.get('found')} was found"
                )
            state = DialogState.from_dict(row.state)
            if len(state.exchanges) >= self.max_turns:
                raise ApiError(409, "too_many_turns", f"a session holds at most {self.max_turns} turns")
            with self._disk_full(_images_dir()):  # a generated image that could not be stored
                state, last = self._within_budget(
                    row.options, row.state, lambda conv, row=row: self._apply(conv, body, row)
                )
            status = "found" if state.found else "open"
            try:
                with self._disk_full(self.sessions.path):
                    row = self.sessions.save(row, state.to_dict(), last, status)
            except VersionConflict:
                log.info("session %s changed under this turn (another process?); re-applying", session_id)
                continue
            return self.view(row)
        raise ApiError(409, "conflict", "the session kept changing during this turn; try again")

    def _apply(self, conv: Conversation, body: TurnIn, row: SessionRow) -> dict[str, Any]:
        """One user turn on ``conv`` (built over the stored state); the ``last`` record to store."""
        state = conv.state
        assert state is not None
        text, feedback = (body.text or "").strip(), body.image_feedback
        if body.kind in ("found", "more", "less") and not body.item_id:
            raise ApiError(422, "invalid_request", f"kind {body.kind!r} needs item_id")
        if body.item_id and body.item_id not in self.gallery.position:
            raise ApiError(400, "unknown_item", f"{body.item_id!r} is not in this gallery")
        if body.kind == "found":
            conv.mark_found(body.item_id)  # type: ignore[arg-type]
            last = {key: v for key, v in row.last.items() if key != "notice"}
        elif body.kind in ("choose", "more", "less"):
            if body.kind == "choose":
                if not state.pending_options:
                    raise ApiError(409, "no_choice", "there is no image-choice question to answer")
                if body.item_id is not None and body.item_id not in state.pending_options:
                    raise ApiError(400, "not_an_option", f"{body.item_id!r} is not one of the options")
                res = _run_turn(conv.choose, body.item_id, feedback)
            else:
                res = _run_turn(conv.more if body.kind == "more" else conv.less, body.item_id)
            last = self._last(res, state, conv.k)
        else:
            if body.kind in ("answer", "skip") and state.pending_question is None:
                raise ApiError(409, "no_question", "there is no pending question: add a detail (kind 'say')")
            if body.kind in ("answer", "say") and not text:
                raise ApiError(422, "invalid_request", f"kind {body.kind!r} needs a non-empty text")
            if body.kind == "say":
                res = _run_turn(conv.say, text, feedback)
            else:
                res = _run_turn(conv.reply, text if body.kind == "answer" else "", feedback)
            last = self._last(res, state, conv.k)
        return last

    def delete(self, session_id: str, owner: Owner) -> None:
        with self._disk_full(self.sessions.path):
            deleted = self.sessions.delete(session_id, owner)
        if not deleted:
            raise _no_session(session_id)

    def list_sessions(self, limit: int, offset: int, owner: Owner) -> dict[str, Any]:
        """Only the caller's sessions (none when it sent no owner secret)."""
        self._expire()
        rows = self.sessions.recent(owner, limit, offset)
        return {
            "sessions": [
                {
                    "id": r.id,
                    "version": r.version,
                    "status": r.status,
                    "description": r.state.get("description", ""),
                    "turn": len(r.state.get("exchanges", [])),
                    "updated": r.updated,
                }
                for r in rows
            ],
            "total": self.sessions.count(owner),
        }

    # views ---------------------------------------------------------------------------------
    def _last(self, res: TurnResult, state: DialogState, k: int) -> dict[str, Any]:
        """What a client needs of the last turn beyond the state: scores, images, timings."""
        pos = res.ranking.positions[:k]
        recorded = state.images
        return {
            "ids": [self.gallery.ids[int(p)] for p in pos],
            "scores": [float(s) for s in res.ranking.scores[: len(pos)]],
            "query": res.ranking.query,
            "images": [{"path": i.path, "prompt": i.prompt} for i in res.images],
            "images_turn": len(recorded) - 1 if res.images else None,
            "image_question": res.image_question,
            "timings": {k: round(float(v), 4) for k, v in res.timings.items()},
        }

    def results(self, ids: list[str], scores: list[float | None]) -> list[dict[str, Any]]:
        from convir.index.duplicates import duplicate_of

        found = self.gallery.items(ids)
        generated = self.gallery.generated(ids)
        dups = duplicate_of(ids, self.gallery.vectors(ids), {i: it.path for i, it in found.items()})
        out = []
        for rank, (item_id, score) in enumerate(zip(ids, scores, strict=True), 1):
            item = found.get(item_id)
            if item is None:  # removed from the gallery by a later `convir index`
                continue
            out.append(
                {
                    "rank": rank,
                    "id": item_id,
                    "score": score,
                    "caption": item.captions[0] if item.captions else generated.get(item_id, ("",))[0],
                    "captions": item.captions[:5],
                    "generated": {"caption": g[0], "captioner": g[1]}
                    if (g := generated.get(item_id))
                    else None,
                    # the id as a query parameter, every character encoded: an id with "." or
                    # ".." segments would be rewritten by the browser's URL normalisation in a path
                    "thumbnail": f"/api/thumbnails?id={quote(item_id, safe='')}" if item.path else None,
                    "meta": item.meta,  # a manifest's and the photo's own (taken, place, camera, ...)
                    "duplicate_of": dups.get(item_id),
                }
            )
        return out

    def view(self, row: SessionRow) -> dict[str, Any]:
        st = DialogState.from_dict(row.state)
        last = row.last
        history = [
            {
                "turn": 0,
                "question": None,
                "text": st.description,
                "query": st.queries[0] if st.queries else None,
                "top": st.rankings[0][:3] if st.rankings else [],
            }
        ]
        for n, ex in enumerate(st.exchanges, 1):
            history.append(
                {
                    "turn": n,
                    "question": ex.question,
                    "text": ex.answer,
                    "query": st.queries[n] if n < len(st.queries) else None,
                    "top": st.rankings[n][:3] if n < len(st.rankings) else [],
                }
            )
        images = []
        for i, im in enumerate(last.get("images", [])):
            url = f"/api/sessions/{row.id}/images/{last['images_turn']}/{i}" if im.get("path") else None
            images.append({"url": url, "prompt": im.get("prompt", "")})
        finished = st.found is not None
        return {
            "id": row.id,
            "version": row.version,
            "status": row.status,
            "created": row.created,
            "updated": row.updated,
            "options": _public_options(row.options),
            "description": st.description,
            "turn": len(st.exchanges),
            "query": last.get("query"),
            "question": None if finished else st.pending_question,
            "choices": [] if finished else self.choices_view(st.pending_options),
            "image_question": None if finished else last.get("image_question"),
            "results": self.results(last.get("ids", []), last.get("scores", [])),
            "images": images,
            "history": history,
            "found": st.found,
            "timings": last.get("timings", {}),
            "notice": last.get("notice"),
        }

    def choices_view(self, ids: list[str]) -> list[dict[str, Any]]:
        """An image-choice question's options: number, id, caption, thumbnail."""
        shown = self.results(list(ids), [None] * len(ids))
        return [
            {"number": n, "id": r["id"], "caption": r["caption"], "thumbnail": r["thumbnail"]}
            for n, r in enumerate(shown, 1)
        ]

    # search, media, status ---------------------------------------------------------------
    def search(self, q: str, k: int, mode: str) -> list[dict[str, Any]]:
        q = q.strip()
        if not q:
            raise ApiError(422, "invalid_request", "the query is empty")
        try:
            pos, scores = self.gallery.rank_text(q, k, mode)
        except ConvirError as exc:
            raise ApiError(400, "bad_search", str(exc)) from exc
        return self.results([self.gallery.ids[int(p)] for p in pos], [float(s) for s in scores])

    def thumbnail(self, item_id: str, size: int) -> bytes:
        if item_id not in self.gallery.position:
            raise ApiError(404, "no_item", f"no item {item_id!r} in this gallery")
        item = self.gallery.items([item_id]).get(item_id)
        root = self._gallery_root()
        path = safe_item_path(item.path, root) if item is not None and item.path else None
        if path is None:
            if item is not None and item.path and root is not None and not root.is_dir():
                raise ApiError(404, "no_image", f"item {item_id!r} has no image file: {self._root_missing()}")
            raise ApiError(404, "no_image", f"item {item_id!r} has no image file")
        try:
            return self.thumbs.get(path, size)
        except Exception as exc:  # Pillow: OSError, ValueError, DecompressionBombError, ...
            raise ApiError(
                415, "bad_image", f"cannot read the image of {item_id!r}: {type(exc).__name__}"
            ) from exc

    def _gallery_root(self) -> Path | None:
        """Read per request: a re-pointed index serves the new root without a restart."""
        return gallery_root(self.gallery.setting(GALLERY_ROOT), self.gallery.setting("source"))

    def _root_missing(self) -> str:
        cmd = repoint_command(self.index_dir, self.gallery.setting("source"))
        return (
            f"the gallery root {self._gallery_root()} does not exist (moved or not mounted?); "
            f"if the gallery moved, `{cmd}` re-points the index without re-encoding"
        )

    def generated_image(self, session_id: str, turn: int, index: int, owner: Owner) -> bytes:
        """The PNG of an image this session recorded, re-encoded from its pixels."""
        from convir.paths import cache_dir

        row = self.get(session_id, owner)
        per_turn = DialogState.from_dict(row.state).images
        try:
            stored = per_turn[turn][index]["path"]
        except (IndexError, KeyError, TypeError):
            raise ApiError(404, "no_image", "no such generated image in this session") from None
        path = safe_generated_path(stored, cache_dir() / "images")
        if path is None:
            raise ApiError(404, "no_image", "the generated image is no longer available")
        try:
            return self.thumbs.get(path, 0)
        except Exception as exc:  # Pillow: OSError, ValueError, DecompressionBombError, ...
            raise ApiError(
                415, "bad_image", f"cannot read the generated image: {type(exc).__name__}"
            ) from exc

    def health(self) -> dict[str, Any]:
        return {"status": "ok", "items": len(self.gallery), "sessions": self.sessions.count()}

    def version(self) -> dict[str, Any]:
        return {
            "convir": __version__,
            "api": API_VERSION,
            "encoder": self.gallery.encoder_spec,
            "items": len(self.gallery),
            "llm": self.llm_spec,
        }

    def options(self, limits: dict[str, int]) -> dict[str, Any]:
        return {
            "strategies": REGISTRY.names("strategy"),
            "questioners": REGISTRY.names("questioner"),
            "defaults": _public_options(self.defaults.to_dict()),
            "llm": self.llm_spec,
            "imagination": sorted(REGISTRY.names("imagination")),
            "needs_llm": {
                "strategies": [n for n in REGISTRY.names("strategy") if REGISTRY.needs_llm("strategy", n)],
                "questioners": [
                    n for n in REGISTRY.names("questioner") if REGISTRY.needs_llm("questioner", n)
                ],
            },
            "generators": self.generators,
            "limits": limits,
        }

    def close(self) -> None:
        self.sessions.close()


PUBLIC_OPTIONS = ("strategy", "questioner", "k", "llm", "imagine", "generator", "answers")


def _public_options(spec: dict[str, Any]) -> dict[str, Any]:
    """What the API shows of a session's spec (models.Options)."""
    return {key: spec.get(key, "aware" if key == "answers" else None) for key in PUBLIC_OPTIONS}


def _no_session(session_id: str) -> ApiError:
    """The one answer for a missing session and for another owner's: nothing tells them apart."""
    return ApiError(
        404,
        "no_session",
        f"no session {session_id!r} for this client: deleted, never created, or created with another "
        "owner secret (send the X-Session-Secret the create response gave)",
    )


def _run_turn(fn: Any, *args: Any) -> TurnResult:
    """LLM failures become 503 (the stored session is untouched: nothing was saved)."""
    try:
        return fn(*args)
    except BudgetSpent:
        raise  # the service finishes the turn without the LLM
    except LLMError as exc:
        raise ApiError(
            503, "llm_unavailable", f"the language model failed: {exc}; the session is unchanged, try again"
        ) from exc
    except ConvirError as exc:
        raise ApiError(400, "bad_turn", str(exc)) from exc


def _fair_llm(llm: str | Any | None) -> Any:
    """The server's LLM behind a :class:`~convir.llm.fair.FairLLM`, under the disk cache (a
    cached answer never waits for the model)."""
    from convir.llm.cache import CachedLLM

    if llm is None:
        return None
    if isinstance(llm, str):
        from convir.llm import load_llm

        llm = load_llm(llm)
    if isinstance(llm, CachedLLM):
        return CachedLLM(FairLLM(llm.inner), llm.path)
    return FairLLM(llm)


def llm_free(spec: SessionSpec) -> SessionSpec:
    """``spec`` with every part that calls the LLM replaced by its LLM-free counterpart: the
    strategy by concat, the questioner by none, imagination off (for a turn over budget)."""
    strategy = spec.strategy
    if REGISTRY.needs_llm("strategy", strategy) or (
        strategy == "rerank" and REGISTRY.needs_llm("reranker", spec.reranker or "llm")
    ):
        strategy = "concat"
    questioner = spec.questioner or "none"
    if REGISTRY.needs_llm("questioner", questioner):
        questioner = "none"
    free = replace(
        spec,
        strategy=strategy,
        reranker=spec.reranker if strategy == "rerank" else None,
        questioner=questioner,
        llm=None,
        imagine=None,
    )
    return free.resolved(have_llm=False)


DISK_FULL = 507


def _images_dir() -> Path:
    from convir.paths import cache_dir

    return cache_dir() / "images"


@contextmanager
def disk_full_as_507(path: Path) -> Iterator[None]:
    """Turns "no space left" (``OSError`` ENOSPC, SQLite's "database or disk is full") inside
    the block into a 507 naming the device's path. SQLite rolls the transaction back and an
    image is written to a temporary name first, so the session stays as it was."""
    try:
        yield
    except (OSError, sqlite3.Error) as exc:
        if is_disk_full(exc):
            raise disk_full_error(getattr(exc, "filename", None) or path) from exc
        raise


def disk_full_error(path: Path | str | None) -> ApiError:
    where = f"the device holding {path}" if path else "the server's disk"
    return ApiError(
        DISK_FULL,
        "disk_full",
        f"no space left on {where}; free space and retry (the session is unchanged)",
    )
