"""A persistent answer cache in front of any LLM backend.

Evaluation replays the same dialogues many times (per encoder, per strategy, per seed), and
at temperature 0 the same prompt always gets the same answer, so every call is memoised in
one SQLite file. The key is a sha256 of everything that can change the answer: the backend's
spec, the call kind (chat/complete), the messages or prompt, and the generation parameters.

The file is shared by threads (one connection behind a lock) and by processes (WAL journal
plus a busy timeout, so concurrent writers wait instead of failing). The lock is never held
while the model runs, so a slow generation does not block other threads' cache hits.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from convir.llm.base import LLM, GenParams, LLMError, Message
from convir.sqlitedb import use_wal

log = logging.getLogger(__name__)

_BUSY_MS = 30_000
_SCHEMA = """
CREATE TABLE IF NOT EXISTS llm_cache (
    key TEXT PRIMARY KEY,
    spec TEXT NOT NULL,
    kind TEXT NOT NULL,
    response TEXT NOT NULL,
    seconds REAL NOT NULL,
    created REAL NOT NULL
)
"""


def default_cache_path() -> Path:
    """``llm.sqlite`` in :func:`convir.paths.cache_dir`."""
    from convir.paths import cache_dir

    return cache_dir() / "llm.sqlite"


def cache_key(spec: str, kind: str, payload: Any, params: GenParams) -> str:
    """Stable hex digest of one call; JSON with sorted keys so dict order never matters."""
    blob = json.dumps(
        {"spec": spec, "kind": kind, "input": payload, "params": params.to_dict()},
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class CachedLLM:
    """Wraps ``inner`` so identical calls are answered from ``path`` (a SQLite file).

    ``hits``/``misses`` count this instance's lookups; ``last_seconds`` is the wall time of
    the last call (tiny on a hit) and ``last_hit`` says whether it came from the cache.
    """

    def __init__(self, inner: LLM, path: Path | str) -> None:
        self.inner = inner
        self.path = Path(path).expanduser()
        self.spec: str = inner.spec
        # a backend whose evaluation path changes answers names it here (llamacpp's prefix cache)
        self.key_spec: str = str(getattr(inner, "cache_spec", inner.spec))
        self.instruct: bool = inner.instruct
        self.hits = 0
        self.misses = 0
        self.last_seconds = 0.0
        self.last_hit = False
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._conn = self._connect()

    def _connect(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                self.path, timeout=_BUSY_MS / 1000, check_same_thread=False, isolation_level=None
            )
            conn.execute(f"PRAGMA busy_timeout={_BUSY_MS}")
            use_wal(conn, _BUSY_MS / 1000)
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise LLMError(
                f"cannot open the LLM cache {self.path}: {exc}; set CONVIR_CACHE to a writable "
                "folder or disable the cache"
            ) from exc
        return conn

    def _db(self) -> sqlite3.Connection:
        """The connection, reopened in a forked child (SQLite handles must not cross fork)."""
        if os.getpid() != self._pid:
            self._pid = os.getpid()
            self._conn = self._connect()
        return self._conn

    def _get(self, key: str) -> str | None:
        with self._lock:
            try:
                row = self._db().execute("SELECT response FROM llm_cache WHERE key = ?", (key,)).fetchone()
            except sqlite3.Error as exc:  # a broken cache must not end the session
                log.warning("LLM cache read failed (%s); calling the model", exc)
                return None
            if row is not None:
                self.hits += 1
                return str(row[0])
            self.misses += 1
            return None

    def _put(self, key: str, kind: str, response: str, seconds: float) -> None:
        with self._lock:
            try:
                self._db().execute(
                    "INSERT OR REPLACE INTO llm_cache VALUES (?, ?, ?, ?, ?, ?)",
                    (key, self.spec, kind, response, seconds, time.time()),
                )
            except sqlite3.Error as exc:
                log.warning("LLM cache write failed (%s); answer not cached", exc)

    def _call(self, kind: str, payload: Any, params: GenParams, compute: Callable[[], str]) -> str:
        """The cached answer for (model, kind, payload, params), else ``compute()``, stored."""
        start = time.perf_counter()
        key = cache_key(self.key_spec, kind, payload, params)
        cached = self._get(key)
        if cached is not None:
            self.last_hit = True
            self.last_seconds = time.perf_counter() - start
            return cached
        out = compute()
        seconds = float(getattr(self.inner, "last_seconds", time.perf_counter() - start))
        self._put(key, kind, out, seconds)
        self.last_hit = False
        self.last_seconds = time.perf_counter() - start
        return out

    def chat(self, messages: list[Message], params: GenParams | None = None) -> str:
        params = params or GenParams()
        payload = [dict(m) for m in messages]
        return self._call("chat", payload, params, lambda: self.inner.chat(messages, params))

    def complete(self, prompt: str, params: GenParams | None = None) -> str:
        params = params or GenParams()
        return self._call("complete", prompt, params, lambda: self.inner.complete(prompt, params))

    def option_probs(self, prompt: str, options: Sequence[str]) -> dict[str, float]:
        """The backend's :meth:`~convir.llm.base.OptionScorer.option_probs`, cached like a
        completion (kind "options"); an :class:`LLMError` when the backend cannot score."""
        scorer = getattr(self.inner, "option_probs", None)
        if scorer is None:
            raise LLMError(
                f"{self.spec} cannot score options (token probabilities): use a llamacpp: or hf: model"
            )
        payload = {"prompt": prompt, "options": list(options)}
        out = self._call("options", payload, GenParams(), lambda: json.dumps(scorer(prompt, list(options))))
        return {str(k): float(v) for k, v in json.loads(out).items()}

    @property
    def scores_options(self) -> bool:
        return can_score_options(self.inner)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __repr__(self) -> str:
        return f"CachedLLM({self.spec!r}, {str(self.path)!r}, hits={self.hits}, misses={self.misses})"


def can_score_options(llm: Any) -> bool:
    """Whether ``llm`` (or the backend behind a cache) gives token probabilities."""
    return bool(getattr(llm, "scores_options", False)) or (
        not isinstance(llm, CachedLLM) and callable(getattr(llm, "option_probs", None))
    )
