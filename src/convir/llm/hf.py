"""``hf:MODEL_ID_OR_PATH``: a transformers causal LM (AutoModelForCausalLM + AutoTokenizer).

For models that have no GGUF build or to run on a GPU. A tokenizer with a chat template
marks an instruction-tuned model (``chat`` renders the template); otherwise prompts are
few-shot text for ``complete``. Temperature 0 means greedy decoding, so answers are
reproducible and cacheable. Stop strings end generation early (transformers'
``stop_strings``) and are also cut from the decoded text, which is what guarantees them.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from typing import Any

from convir.llm import complete_stops
from convir.llm.base import GenParams, LLMError, Message, check_one_token_options, softmax_options
from convir.specs import local_or_hub


def _resolve(name: str) -> tuple[str, bool]:
    """(path or hub id, is local folder)."""
    return local_or_hub(name, "hf", "hf:HuggingFaceTB/SmolLM2-135M-Instruct or hf:/path", LLMError)


def cut_at_stops(text: str, stops: tuple[str, ...]) -> str:
    """``text`` up to the earliest stop string (stop excluded), as OpenAI servers do."""
    cut = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=len(text))
    return text[:cut]


class HFTextModel:
    """What the transformers backends (:class:`HFLLM`, the ``hf`` VLM) share: one seeded
    ``generate`` at a time (the lock also guards the RNG seeding), timed, decoded, cut at stops.

    Subclasses set ``spec``, ``model`` and ``tokenizer``; ``last_inputs`` keeps the model input
    of the last call, so a caller can check what the model was actually shown.
    """

    spec: str
    model: Any
    tokenizer: Any

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.last_seconds = 0.0
        self.last_inputs: Any = None

    def _generate_new(self, inputs: Any, params: GenParams, stops: tuple[str, ...]) -> str:
        """The text generated after ``inputs`` (a tokenizer/processor output on the model's device)."""
        import torch

        tok = self.tokenizer
        n_in = int(inputs["input_ids"].shape[1])
        kwargs: dict[str, Any] = {"max_new_tokens": params.max_tokens}
        pad = getattr(tok, "pad_token_id", None)
        pad = pad if pad is not None else getattr(tok, "eos_token_id", None)
        if pad is not None:
            kwargs["pad_token_id"] = pad
        if params.temperature > 0:
            kwargs.update(do_sample=True, temperature=params.temperature, top_p=params.top_p)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if stops:
            kwargs.update(stop_strings=list(stops), tokenizer=tok)
        with self._lock:
            self.last_inputs = inputs
            start = time.perf_counter()
            try:
                # fork_rng keeps the caller's global torch RNG untouched by our per-call seed.
                with torch.random.fork_rng(devices=[]), torch.inference_mode():
                    torch.manual_seed(params.seed)
                    out = self.model.generate(**inputs, **kwargs)
            except (RuntimeError, ValueError, IndexError) as exc:  # e.g. prompt longer than the context
                raise LLMError(f"{self.spec} failed to generate: {type(exc).__name__}: {exc}") from exc
            finally:
                self.last_seconds = time.perf_counter() - start
        decoded = tok.decode(out[0, n_in:], skip_special_tokens=True)
        return cut_at_stops(decoded, stops)


class HFLLM(HFTextModel):
    """A transformers causal LM."""

    def __init__(self, name: str, device: str = "cpu", instruct: bool | None = None) -> None:
        from convir._compat import ensure_torchvision

        ensure_torchvision()
        path, local = _resolve(name)
        if local:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.spec = f"hf:{path}"
        where = "local folder" if local else "hub id (needs network the first time)"
        dtype: Any = torch.float32 if device == "cpu" else "auto"  # half precision on CPU is slow
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise LLMError(f"cannot load {self.spec} as a {where}: {type(exc).__name__}: {exc}") from exc
        self.device = device
        self.model = model.to(device).eval()
        has_template = bool(getattr(self.tokenizer, "chat_template", None))
        self.instruct = has_template if instruct is None else bool(instruct)
        if self.instruct and not has_template:
            raise LLMError(f"{self.spec} has no chat template; load it with instruct=False")
        super().__init__()

    def _generate(self, text: str, params: GenParams, stops: tuple[str, ...], specials: bool) -> str:
        inputs = self.tokenizer(text, return_tensors="pt", add_special_tokens=specials).to(self.device)
        return self._generate_new(inputs, params, stops)

    def chat(self, messages: list[Message], params: GenParams | None = None) -> str:
        params = params or GenParams()
        if not getattr(self.tokenizer, "chat_template", None):
            raise LLMError(f"{self.spec} has no chat template; use complete() with a few-shot prompt")
        text = self.tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
        # The template already adds BOS etc., so the tokenizer must not add them again.
        return self._generate(str(text), params, tuple(params.stop), specials=False)

    def complete(self, prompt: str, params: GenParams | None = None) -> str:
        params = params or GenParams()
        return self._generate(prompt, params, complete_stops(params), specials=True)

    def option_probs(self, prompt: str, options: Sequence[str]) -> dict[str, float]:
        """Probability of each one-token option as the next token after ``prompt`` (one
        forward pass), renormalised over the options."""
        import torch

        tok = self.tokenizer
        ids = check_one_token_options(
            lambda t: tok(t, add_special_tokens=True)["input_ids"], prompt, options, self.spec
        )
        inputs = tok(prompt, return_tensors="pt", add_special_tokens=True).to(self.device)
        with self._lock:
            self.last_inputs = inputs
            start = time.perf_counter()
            try:
                with torch.inference_mode():
                    logits = self.model(**inputs).logits[0, -1, ids].double().cpu().numpy()
            except (RuntimeError, ValueError, IndexError) as exc:
                raise LLMError(f"{self.spec} failed: {type(exc).__name__}: {exc}") from exc
            finally:
                self.last_seconds = time.perf_counter() - start
        return softmax_options(options, logits)

    def __repr__(self) -> str:
        return f"HFLLM({self.spec!r}, instruct={self.instruct})"
