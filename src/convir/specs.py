"""Component specs and the one registry that names every swappable part of convir.

A spec is ``kind:rest`` for components that take a value (``caption:minilm``,
``llamacpp:smollm2``, ``open_clip:ViT-B-32/openai``) or a bare name (``concat``, ``plain``).
Every component family (encoders, LLMs, strategies, questioners, ...) registers its names,
one-line docs, accepted options and factory here, once, in the style of open_clip's model
registry: CLI flags, config files and HTTP requests then all resolve the same string the
same way, and ``--help`` texts and "unknown X; available: ..." errors come from one table.

Factories are ``"module:attribute"`` strings imported on first use, so naming, checking and
listing components imports nothing heavy (``convir --help`` stays instant). Components that
hold a model (``shared=True``: encoders, LLMs, VLMs, generators, cross-encoders) are built
once per process per (spec, options) behind a lock; everything else is built fresh per call
(strategies and questioners are cheap and carry no state between sessions).
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from convir.errors import ConvirError, SpecError


@dataclass(frozen=True)
class Spec:
    kind: str
    rest: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.rest}" if self.rest else self.kind


def parse_spec(text: str, known: dict[str, str] | None = None) -> Spec:
    """Split ``kind:rest``; ``known`` maps kind -> one-line description for error messages."""
    text = (text or "").strip()
    kind, sep, rest = text.partition(":")
    if not kind or (not sep and known is not None and kind not in known):
        raise SpecError(_bad(text, known))
    if known is not None and kind not in known:
        raise SpecError(_bad(text, known))
    return Spec(kind, rest)


def _bad(text: str, known: dict[str, str] | None) -> str:
    msg = f"cannot understand spec {text!r}: expected KIND:VALUE"
    if known:
        msg += "; known kinds:\n" + "\n".join(f"  {k}: {d}" for k, d in known.items())
    return msg


class NeedsLLMError(ConvirError):
    """A component that generates text was chosen but no LLM was given."""


@dataclass(frozen=True)
class Component:
    """One registered name of a component family."""

    family: str  # "encoder", "llm", "strategy", ...
    name: str  # "caption", "concat", ...
    doc: str
    factory: str  # "package.module:callable", imported on first load
    options: frozenset[str] = frozenset()
    takes_value: bool = False  # spec is NAME:VALUE (a model path, a URL) rather than a bare name
    needs_llm: bool = False  # the component generates text with the session's LLM
    shared: bool = False  # holds a model: one instance per (spec, options) per process
    example: str = ""
    check: str = ""  # "module:callable" validating the value (its ?options) before anything loads

    def resolve(self) -> Callable[..., Any]:
        module, _, attr = self.factory.partition(":")
        return getattr(importlib.import_module(module), attr)


@dataclass
class Family:
    name: str  # singular, as in messages: "encoder", "strategy"
    flag: str  # the CLI flag that chooses it, for messages: "--encoder"
    members: dict[str, Component] = field(default_factory=dict)


class Registry:
    """Families of named components; see the module docstring."""

    def __init__(self) -> None:
        self.families: dict[str, Family] = {}
        self._shared: dict[tuple[Any, ...], Any] = {}
        self._lock = threading.RLock()
        self._loading: dict[tuple[Any, ...], threading.Lock] = {}

    # declaring ------------------------------------------------------------------------------
    def family(self, name: str, flag: str) -> None:
        self.families.setdefault(name, Family(name, flag))

    def register(
        self,
        family: str,
        name: str,
        doc: str,
        factory: str,
        *,
        options: Iterable[str] = (),
        takes_value: bool = False,
        needs_llm: bool = False,
        shared: bool = False,
        example: str = "",
        check: str = "",
    ) -> Component:
        """Add (or replace: a plugin may override a built-in) one component."""
        if family not in self.families:
            raise ValueError(f"unknown component family {family!r}")
        comp = Component(
            family, name, doc, factory, frozenset(options), takes_value, needs_llm, shared, example, check
        )
        self.families[family].members[name] = comp
        return comp

    # looking up -----------------------------------------------------------------------------
    def _family(self, family: str) -> Family:
        try:
            return self.families[family]
        except KeyError:
            raise ValueError(f"unknown component family {family!r}") from None

    def names(self, family: str) -> dict[str, str]:
        """name -> one-line doc, in registration order."""
        return {n: c.doc for n, c in self._family(family).members.items()}

    def choices(self, family: str, sep: str = " | ") -> str:
        """``concat | rewrite | ...`` for --help texts (value kinds shown as ``name:...``)."""
        return sep.join(f"{n}:..." if c.takes_value else n for n, c in self._family(family).members.items())

    def describe(self, family: str) -> str:
        """One line per member (name: doc), for error messages and long help."""
        fam = self._family(family)
        return "\n".join(
            f"  {c.example or (c.name + ':...' if c.takes_value else c.name)}: {c.doc}"
            for c in fam.members.values()
        )

    def parse(self, family: str, text: str | None) -> tuple[Component, str]:
        """(component, value) for a spec; an unknown name is a :class:`SpecError` listing the
        available ones. Nothing is imported or loaded."""
        fam = self._family(family)
        raw = (text or "").strip()
        name, sep, rest = raw.partition(":")
        comp = fam.members.get(name)
        if comp is None:
            what = fam.name
            raise SpecError(
                f"unknown {what} {raw!r} ({fam.flag}); available:\n{self.describe(family)}"
                if raw
                else f"no {what} given ({fam.flag}); available:\n{self.describe(family)}"
            )
        if comp.takes_value and not sep and not rest:
            # a value kind named without a value: let the factory say what it needs
            rest = ""
        if not comp.takes_value and sep:
            raise SpecError(f"{fam.name} {name!r} takes no value (got {raw!r}); use {name}")
        if comp.check:
            module, _, attr = comp.check.partition(":")
            getattr(importlib.import_module(module), attr)(rest.strip())
        return comp, rest.strip()

    def check(self, family: str, text: str | None, options: Iterable[str] = ()) -> Component:
        """Validate a spec and option names without loading anything."""
        comp, _ = self.parse(family, text)
        check_options(options, comp.options, f"{comp.name} {family}s")
        return comp

    def needs_llm(self, family: str, text: str | None) -> bool:
        return self.parse(family, text)[0].needs_llm

    def require_llm(self, family: str, text: str | None, have_llm: bool) -> None:
        """The one needs-an-LLM rule: a text-generating component without an LLM is an error."""
        comp, _ = self.parse(family, text)
        if comp.needs_llm and not have_llm:
            fam = self._family(family)
            raise NeedsLLMError(
                f"{fam.name} {comp.name!r} needs an LLM: pass --llm (e.g. llamacpp:smollm2)"
                + self._without_llm_hint(family)
            )

    def _without_llm_hint(self, family: str) -> str:
        free = [n for n, c in self._family(family).members.items() if not c.needs_llm]
        return f", or use {' / '.join(free)}" if free else ""

    # loading --------------------------------------------------------------------------------
    def load(self, family: str, text: str | None, /, *args: Any, **kwargs: Any) -> Any:
        """Build the component named by ``text``. Value kinds get the value as first argument;
        ``kwargs`` are the factory's keyword arguments (option names are checked against the
        registered ones for value kinds, where they are user-facing). Shared components are
        built once per process per (spec, arguments), thread-safely."""
        comp, rest = self.parse(family, text)
        if comp.takes_value:
            check_options(kwargs, comp.options, f"{comp.name} {family}s")
            args = (rest, *args)
        if not comp.shared:
            return comp.resolve()(*args, **kwargs)
        key = (family, comp.name, rest, freeze(args[1:] if comp.takes_value else args), freeze(kwargs))
        return self.shared(key, lambda: comp.resolve()(*args, **kwargs))

    def shared(self, key: tuple[Any, ...], make: Callable[[], Any]) -> Any:
        """One object per ``key`` per process: ``make()`` runs once even when threads race
        (each key has its own lock, so two different models load in parallel)."""
        with self._lock:
            if key in self._shared:
                return self._shared[key]
            gate = self._loading.setdefault(key, threading.Lock())
        with gate:
            with self._lock:
                if key in self._shared:
                    return self._shared[key]
            obj = make()
            with self._lock:
                self._shared[key] = obj
                self._loading.pop(key, None)
            return obj

    def forget(self, family: str | None = None) -> None:
        """Drop shared instances (tests; freeing models)."""
        with self._lock:
            for key in [k for k in self._shared if family is None or k[0] == family]:
                del self._shared[key]


def freeze(value: Any) -> Any:
    """A hashable, order-independent stand-in for arguments (objects by identity)."""
    if isinstance(value, dict):
        return tuple(sorted((str(k), freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    try:
        hash(value)
    except TypeError:
        return ("id", id(value))
    return value


REGISTRY = Registry()


def _declare_builtins(r: Registry) -> None:
    """Every built-in component, in one table. Docs are the --help texts."""
    r.family("encoder", "--encoder")
    r.register(
        "encoder",
        "caption",
        "sentence-transformers text model over captions, e.g. caption:minilm (offline default); "
        "caption:minilm?backend=onnx[&quant=int8] runs it in ONNX Runtime",
        "convir.encoders.caption:CaptionEncoder",
        options={"long_text", "device"},
        takes_value=True,
        shared=True,
        example="caption:minilm",
        check="convir.encoders.onnx:check_caption",
    )
    r.register(
        "encoder",
        "open_clip",
        "open_clip model, e.g. open_clip:ViT-B-32/openai (ARCH/PRETRAINED tag or checkpoint path)",
        "convir.encoders.openclip:OpenClipEncoder",
        options={"long_text", "device", "dtype"},
        takes_value=True,
        shared=True,
        example="open_clip:ViT-B-32/openai",
    )
    r.register(
        "encoder",
        "hf",
        "transformers CLIP/SigLIP model, e.g. hf:openai/clip-vit-base-patch32 or hf:/path/to/model",
        "convir.encoders.hf:HFEncoder",
        options={"long_text", "device", "dtype"},
        takes_value=True,
        shared=True,
        example="hf:openai/clip-vit-base-patch32",
    )
    r.register(
        "encoder",
        "blip",
        "BLIP retrieval (ITC) model, e.g. blip:Salesforce/blip-itm-base-coco, or an original "
        "checkpoint: blip:/path/chatir_weights.ckpt?image_size=224",
        "convir.encoders.blip:BlipEncoder",
        options={"long_text", "device", "dtype"},
        takes_value=True,
        shared=True,
        example="blip:MODEL_OR_CHECKPOINT",
    )

    r.family("llm", "--llm")
    r.register(
        "llm",
        "llamacpp",
        "local GGUF model via llama-cpp-python: llamacpp:smollm2, llamacpp:gemma3-270m "
        "or llamacpp:/path/model.gguf",
        "convir.llm.llamacpp:LlamaCppLLM",
        options={"n_ctx", "n_threads", "instruct", "chat_format", "prefix_cache", "prefix_slots"},
        takes_value=True,
        shared=True,
        example="llamacpp:smollm2",
    )
    r.register(
        "llm",
        "openai",
        "OpenAI-compatible server: openai:BASE_URL#MODEL, e.g. openai:http://localhost:8000/v1#MODEL",
        "convir.llm.openai:OpenAILLM",
        options={"timeout", "retries", "backoff", "api_key"},
        takes_value=True,
        shared=True,
        example="openai:BASE_URL#MODEL",
    )
    r.register(
        "llm",
        "hf",
        "transformers causal LM: hf:MODEL_ID or hf:/path/to/folder",
        "convir.llm.hf:HFLLM",
        options={"device", "instruct"},
        takes_value=True,
        shared=True,
        example="hf:MODEL_ID_OR_PATH",
    )

    r.family("vlm", "--vlm")
    r.register(
        "vlm",
        "hf",
        "transformers vision-language model: hf:HuggingFaceTB/SmolVLM-256M-Instruct or hf:/path/to/folder",
        "convir.simulate.vlm:HFVLM",
        options={"device"},
        takes_value=True,
        shared=True,
        example="hf:MODEL_ID_OR_PATH",
    )
    r.register(
        "vlm",
        "openai",
        "OpenAI-compatible server with vision: openai:BASE_URL#MODEL, "
        "e.g. openai:http://localhost:8000/v1#Qwen/Qwen2-VL-2B-Instruct",
        "convir.simulate.vlm:OpenAIVLM",
        options={"timeout", "retries", "backoff", "api_key", "max_side"},
        takes_value=True,
        shared=True,
        example="openai:BASE_URL#MODEL",
    )

    r.family("captioner", "--captioner")
    r.register(
        "captioner",
        "hf",
        "transformers image-to-text model (BLIP, BLIP-2, GIT, Florence-2): hf:MODEL_ID or hf:/path/to/folder",
        "convir.gallery.captioner:HFCaptioner",
        options={"device", "max_new_tokens"},
        takes_value=True,
        shared=True,
        example="hf:MODEL_ID_OR_PATH",
        check="convir.gallery.captioner:check_hf",
    )
    r.register(
        "captioner",
        "openai",
        "OpenAI-compatible vision server (vLLM, Ollama, llama.cpp with mmproj): openai:BASE_URL#MODEL",
        "convir.gallery.captioner:OpenAICaptioner",
        options={"timeout", "retries", "max_side"},
        takes_value=True,
        shared=True,
        example="openai:BASE_URL#MODEL",
        check="convir.gallery.captioner:check_openai",
    )

    r.family("strategy", "--strategy")
    for name, doc, factory, needs in (
        ("concat", "ChatIR baseline: ', '.join(dialogue so far), dense", "ConcatStrategy", False),
        (
            "rewrite",
            "LLM rewrites the dialogue into one caption-style query (ReCQR / DAR R1)",
            "RewriteStrategy",
            True,
        ),
        (
            "expand",
            "rewrite + LLM query expansion with adaptive term weights, weighted BM25 + dense (QueryFormer)",
            "ExpandStrategy",
            True,
        ),
        (
            "rerank",
            "hybrid top-100 on the rewrite, re-scores the top 10 (Mario; --reranker llm|llm-list|cross:M)",
            "RerankStrategy",
            False,  # the re-ranker decides: cross:MODEL needs no LLM
        ),
    ):
        r.register("strategy", name, doc, f"convir.dialog.strategies:{factory}", needs_llm=needs)

    r.family("reranker", "--reranker")
    r.register(
        "reranker",
        "llm",
        "the LLM rates each candidate 0-9, fused with the first-stage order (Mario)",
        "convir.dialog.rerankers:LLMPointwiseReranker",
        needs_llm=True,
    )
    r.register(
        "reranker",
        "llm-list",
        "the LLM orders the numbered candidates in one reply (listwise)",
        "convir.dialog.rerankers:LLMListwiseReranker",
        needs_llm=True,
    )
    r.register(
        "reranker",
        "cross",
        "cross-encoder over (query, caption) pairs, e.g. cross:cross-encoder/ms-marco-MiniLM-L-6-v2",
        "convir.dialog.rerankers:CrossEncoderReranker",
        options={"device", "batch_size"},
        takes_value=True,
        shared=True,
        example="cross:PATH_OR_ID",
    )

    r.family("questioner", "--questioner")
    r.register(
        "questioner",
        "plain",
        "ChatIR-style question from the dialogue so far",
        "convir.dialog.questioners:PlainQuestioner",
        needs_llm=True,
    )
    r.register(
        "questioner",
        "candidates",
        "DIR-TIR/PlugIR: question grounded in KMeans-selected distinctive candidates, "
        "answerable and repeated questions dropped",
        "convir.dialog.questioners:CandidateQuestioner",
        needs_llm=True,
    )
    r.register(
        "questioner",
        "infogain",
        "yes/no question about the candidates' keyphrase that most reduces the expected entropy "
        "of the posterior over the top 50 (no LLM)",
        "convir.dialog.infogain:InfoGainQuestioner",
    )
    r.register(
        "questioner",
        "infogain-open",
        "infogain, plus an open question ('What is in the background?') whenever a yes/no question "
        "found nothing the target has (no LLM)",
        "convir.dialog.infogain:InfoGainOpenQuestioner",
    )
    r.register(
        "questioner",
        "choice",
        "infogain + image choice: 'which of these is closest?' over 4 cluster representatives when "
        "that is the more informative question (no LLM)",
        "convir.dialog.infogain:ChoiceQuestioner",
    )
    r.register(
        "questioner",
        "none",
        "never ask (the user volunteers details)",
        "convir.dialog.questioners:NoQuestioner",
    )

    r.family("answerer", "--answerer")
    r.register(
        "answerer",
        "captions",
        "offline simulator: the LLM answers only from the target's held-out captions",
        "convir.simulate.answerers:CaptionAnswerer",
        needs_llm=True,
    )
    r.register(
        "answerer",
        "facts",
        "offline, no LLM (default without --llm): yes / no / don't know and open answers by rule "
        "from the target's held-out captions",
        "convir.simulate.answerers:FactAnswerer",
    )
    r.register(
        "answerer",
        "vlm",
        "answers from the target image with a vision-language model (--vlm hf:MODEL or openai:URL#MODEL)",
        "convir.simulate.vlm:VLMAnswerer",
    )
    r.register("answerer", "human", "the person at the terminal", "convir.simulate.answerers:HumanAnswerer")

    r.family("generator", "--generator")
    r.register(
        "generator",
        "diffusers",
        "diffusers text-to-image pipeline: diffusers:stabilityai/sd-turbo or diffusers:/path/to/folder",
        "convir.imagine.generators:DiffusersGenerator",
        options={
            "device",
            "dtype",
            "steps",
            "guidance",
            "size",
            "seed",
            "negative_prompt",
            "variant",
            "width",
            "height",
            "cache",
        },
        takes_value=True,
        example="diffusers:MODEL_ID_OR_PATH",
    )
    r.register(
        "generator",
        "openai-images",
        "OpenAI Images API server: openai-images:BASE_URL#MODEL, e.g. "
        "openai-images:https://api.openai.com/v1#gpt-image-1",
        "convir.imagine.generators:OpenAIImagesGenerator",
        options={
            "size",
            "timeout",
            "retries",
            "backoff",
            "api_key",
            "response_format",
            "quality",
            "seed",
            "cache",
        },
        takes_value=True,
        example="openai-images:BASE_URL#MODEL",
    )
    r.register(
        "generator",
        "text",
        "offline caption mode (text:): the image is represented by its prompt",
        "convir.imagine.generators:text_generator",
        options={"cache"},
        takes_value=True,
        example="text:",
    )

    r.family("imagination", "--imagine")
    r.register(
        "imagination",
        "dar",
        "DAR: K diffusion prompts -> K images, fused query a*text + b*sum(images)",
        "convir.imagine.dar:DARImagination",
    )
    r.register(
        "imagination",
        "refiner",
        "DIR-TIR Image Refiner: image -> stated differences -> refined prompt; 7 dialogue + 3 image results",
        "convir.imagine.refiner:RefinerImagination",
    )


_declare_builtins(REGISTRY)


def local_or_hub(
    name: str, kind: str, example: str, error: type[ConvirError] = SpecError
) -> tuple[str, bool]:
    """(absolute folder or hub id, is local) for a model reference given as ``kind:name``.

    Shared by every transformers-style loader so paths resolve the same way everywhere and a
    typo in a path is reported as a missing folder rather than a failed hub download.
    """
    name = name.strip()
    if not name:
        raise error(f"{kind} spec needs a model, e.g. {example}")
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise error(f"{kind}:{name} is a file; give the folder written by save_pretrained()")
        return str(path.resolve()), True
    if name.startswith((".", "/", "~")):
        raise error(f"{kind} model folder {name!r} does not exist")
    return name, False


def url_and_model(
    rest: str, kind: str, example: str, error: type[ConvirError] = SpecError
) -> tuple[str, str]:
    """``BASE_URL#MODEL`` -> (base url without trailing slash, model).

    Shared by the OpenAI-style clients (chat, vision, images) so their specs read the same way;
    ``kind`` and ``example`` make the error say which flag was wrong and how to write it.
    """
    url, sep, model = rest.strip().rpartition("#")
    url = url.strip().rstrip("/")
    if not sep or not url or not model.strip():
        raise error(f"{kind} spec needs BASE_URL#MODEL, got {rest!r}; e.g. {example}")
    if not url.startswith(("http://", "https://")):
        raise error(f"{kind} base URL {url!r} must start with http:// or https://")
    return url, model.strip()


def check_options(options: Iterable[str], known: Iterable[str], what: str) -> None:
    """Reject option names not in ``known`` (a typo must fail, not be silently ignored)."""
    known = set(known)
    unknown = set(options) - known
    if unknown:
        raise SpecError(
            f"{what} do not take option(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}"
        )
