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

from pathlib import Path
from typing import Any

from convir.llm.base import LLM, GenParams, LLMError, Message
from convir.llm.cache import CachedLLM, default_cache_path
from convir.specs import REGISTRY

KINDS = REGISTRY.names("llm")  # kind -> one-line doc, for --help and messages
# Options each kind accepts through ``load_llm(spec, **options)``; anything else is a user error.
OPTIONS: dict[str, frozenset[str]] = {n: c.options for n, c in REGISTRY.families["llm"].members.items()}

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


def complete_stops(params: GenParams) -> tuple[str, ...]:
    """Stop strings for ``complete``: the caller's, or a blank line when none were given."""
    return tuple(params.stop) or BLANK_LINE_STOP


def load_llm(spec: str, cache: Path | bool | None = True, **options: Any) -> LLM:
    """The LLM named by ``spec``, loaded once per process per (spec, options).

    ``cache``: ``True``/``None`` = the default SQLite file (``$CONVIR_CACHE/llm.sqlite`` or
    ``~/.cache/convir/llm.sqlite``), a path = that file, ``False`` = no caching.
    ``options`` go to the backend (see :data:`OPTIONS`), e.g. ``timeout=10`` for ``openai``.
    """
    return cached_model("llm", spec, cache, **options)


def cached_model(family: str, spec: str, cache: Path | bool | None = True, **options: Any) -> Any:
    """A text-generating model of ``family`` ("llm" or "vlm") from the registry (one backend
    per process per spec and options), behind one disk-cache wrapper per (backend, cache file).
    LLMs and VLMs share this so both are cached the same way and loaded only once."""
    backend = REGISTRY.load(family, spec, **options)
    if cache is False:
        return backend
    path = default_cache_path() if cache is True or cache is None else Path(cache).expanduser()
    return REGISTRY.shared(("cache", id(backend), str(path.resolve())), lambda: CachedLLM(backend, path))
