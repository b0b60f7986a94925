"""The ``vlm`` answerer: a simulated user who LOOKS at the target image.

The ``captions`` simulator only knows what a few held-out sentences say; a vision-language
model answers from the pixels, as a person would (ChatIR/PlugIR use BLIP-2 this way), and
can also say how a generated image differs from the target (DIR-TIR's Image Refiner).

VLMs are chosen by spec (``--vlm SPEC``):

* ``hf:MODEL_ID_OR_PATH`` — a transformers image-text-to-text model (SmolVLM, Idefics3,
  LLaVA, Qwen2-VL, PaliGemma, ...) through ``AutoProcessor`` + ``AutoModelForImageTextToText``
  and the processor's chat template; greedy decoding, so answers are repeatable.
* ``openai:BASE_URL#MODEL`` — any OpenAI-compatible server with vision (vLLM, Ollama, llama.cpp
  server with mmproj, OpenAI): ``POST BASE_URL/chat/completions`` with an ``image_url`` part
  holding a ``data:image/png;base64,...`` URL. Same HTTP client as the openai LLM backend:
  timeouts, retries with backoff, a clear error naming the URL when the server is down.

Messages are the prompt files ``vlm_*.chat.txt`` with the images as content parts
``{"type": "image", "path": ..., "sha256": ...}`` in front of the user text; each backend turns
them into its own format. Every call goes through the same SQLite cache as the LLMs (the key
holds the images' sha256, so a changed file is never answered from the cache).
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import re
from pathlib import Path
from typing import Any

from convir.errors import ConvirError
from convir.llm.base import GenParams, LLMError
from convir.llm.hf import HFTextModel
from convir.simulate.answerers import UNKNOWN, Answer, short_answer
from convir.specs import REGISTRY, local_or_hub

KINDS = REGISTRY.names("vlm")  # kind -> one-line doc, for --help and messages
OPTIONS: dict[str, frozenset[str]] = {n: c.options for n, c in REGISTRY.families["vlm"].members.items()}
ImagePart = dict[str, str]  # {"type": "image", "path": "/abs/file.jpg", "sha256": "..."}


def image_part(path: str | Path) -> ImagePart:
    """A message content part for an image file (read now, so a missing file fails early)."""
    p = Path(path).expanduser()
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise ConvirError(f"cannot read image {p}: {exc.strerror or exc}") from exc
    return {"type": "image", "path": str(p.resolve()), "sha256": hashlib.sha256(data).hexdigest()}


def _open_rgb(path: str) -> Any:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            return im.convert("RGB")
    except (OSError, UnidentifiedImageError) as exc:
        raise ConvirError(f"cannot decode image {path}: {exc}") from exc


def png_data_url(path: str, max_side: int = 1024) -> str:
    """``data:image/png;base64,...`` of the image, downscaled so its longer side <= ``max_side``."""
    im = _open_rgb(path)
    if max_side and max(im.size) > max_side:
        im.thumbnail((max_side, max_side))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def vlm_messages(name: str, images: list[ImagePart], **values: str) -> list[dict[str, Any]]:
    """Prompt ``NAME.chat.txt`` as content-part messages, the images before the last user text."""
    from convir.llm.prompts import chat_messages

    msgs: list[dict[str, Any]] = [
        {"role": m["role"], "content": [{"type": "text", "text": m["content"]}]}
        for m in chat_messages(name, **values)
    ]
    last_user = max(i for i, m in enumerate(msgs) if m["role"] == "user")
    msgs[last_user]["content"] = [*images, *msgs[last_user]["content"]]
    return msgs


def _merge_system(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """For chat templates without a system role (Gemma, PaliGemma): system text -> first user turn."""
    system = [p for m in messages if m["role"] == "system" for p in m["content"]]
    rest = [dict(m) for m in messages if m["role"] != "system"]
    if system and rest:
        rest[0]["content"] = [*system, *rest[0]["content"]]
    return rest


class OpenAIVLM:
    """An OpenAI-compatible vision chat endpoint; images travel as base64 PNG data URLs."""

    instruct = True

    def __init__(
        self,
        target: str,
        timeout: float = 120.0,
        retries: int = 3,
        backoff: float = 0.5,
        api_key: str | None = None,
        max_side: int = 1024,
    ) -> None:
        from convir.llm.openai import OpenAILLM

        self._http = OpenAILLM(target, timeout=timeout, retries=retries, backoff=backoff, api_key=api_key)
        self.spec = f"vlm:{self._http.spec}"
        self.max_side = int(max_side)

    @property
    def last_seconds(self) -> float:
        return self._http.last_seconds

    def _part(self, part: dict[str, Any]) -> dict[str, Any]:
        if part.get("type") == "image":
            return {"type": "image_url", "image_url": {"url": png_data_url(part["path"], self.max_side)}}
        return {"type": "text", "text": part["text"]}

    def chat(self, messages: list[dict[str, Any]], params: GenParams | None = None) -> str:
        body = [{"role": m["role"], "content": [self._part(p) for p in m["content"]]} for m in messages]
        return self._http.chat(body, params)  # type: ignore[arg-type]  # content parts, not plain text

    def complete(self, prompt: str, params: GenParams | None = None) -> str:
        raise LLMError("vision-language models are prompted with chat messages, not complete()")

    def close(self) -> None:
        self._http.close()


class HFVLM(HFTextModel):
    """A transformers image-text-to-text model; one generation at a time.

    ``last_inputs`` keeps the processor's output of the last call (``pixel_values`` etc.), so
    a caller can check what the model was actually shown."""

    instruct = True

    def __init__(self, name: str, device: str = "cpu") -> None:
        from convir._compat import ensure_torchvision

        ensure_torchvision()
        path, local = local_or_hub(
            name, "hf", "hf:HuggingFaceTB/SmolVLM-256M-Instruct or hf:/path/to/folder", LLMError
        )
        if local:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.spec = f"vlm:hf:{path}"
        where = "local folder" if local else "hub id (needs network the first time)"
        dtype: Any = torch.float32 if device == "cpu" else "auto"
        try:
            self.processor = AutoProcessor.from_pretrained(path)
            model = AutoModelForImageTextToText.from_pretrained(path, dtype=dtype)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise LLMError(
                f"cannot load hf:{path} as a vision-language model ({where}): {type(exc).__name__}: {exc}"
            ) from exc
        if not getattr(self.processor, "chat_template", None):
            raise LLMError(f"hf:{path} has no chat template in its processor; use an instruction-tuned VLM")
        self.tokenizer = getattr(self.processor, "tokenizer", None) or self.processor
        self.device = device
        self.model = model.to(device).eval()
        super().__init__()

    def _inputs(self, messages: list[dict[str, Any]]) -> Any:
        conv = [
            {
                "role": m["role"],
                "content": [
                    {"type": "image", "image": _open_rgb(p["path"])}
                    if p.get("type") == "image"
                    else {"type": "text", "text": p["text"]}
                    for p in m["content"]
                ],
            }
            for m in messages
        ]
        kwargs = dict(add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt")
        try:
            return self.processor.apply_chat_template(conv, **kwargs)
        except Exception as exc:  # jinja raises TemplateError for e.g. "System role not supported"
            if not any(m["role"] == "system" for m in conv):
                raise LLMError(f"{self.spec}: cannot build the model input: {exc}") from exc
            try:
                return self.processor.apply_chat_template(_merge_system(conv), **kwargs)
            except Exception as exc2:
                raise LLMError(f"{self.spec}: cannot build the model input: {exc2}") from exc2

    def chat(self, messages: list[dict[str, Any]], params: GenParams | None = None) -> str:
        params = params or GenParams()
        inputs = self._inputs(messages).to(self.device)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        return self._generate_new(inputs, params, tuple(params.stop))

    def complete(self, prompt: str, params: GenParams | None = None) -> str:
        raise LLMError("vision-language models are prompted with chat messages, not complete()")


def load_vlm(spec: str, cache: Path | bool | None = True, **options: Any) -> Any:
    """The VLM named by ``spec`` (loaded once per process), behind the LLM disk cache unless
    ``cache`` is False. ``options``: ``device`` for hf; ``timeout``, ``retries``, ``backoff``,
    ``api_key``, ``max_side`` for openai."""
    from convir.llm import cached_model

    return cached_model("vlm", spec, cache, **options)


class VLMAnswerer:
    """Answers the system's questions by looking at the target image.

    ``strict`` (default): a model failure (server down, timeout, load error) raises
    :class:`LLMError`, so an evaluation stops with a clear message instead of silently
    recording "unknown" for every target (finished targets are kept; rerun to resume).
    ``strict=False`` answers "unknown" and counts ``failures``, like the captions answerer."""

    name = "vlm"

    def __init__(self, vlm: Any, image_paths_by_id: dict[str, str], strict: bool = True) -> None:
        self.vlm, self.image_paths_by_id, self.strict = vlm, image_paths_by_id, strict
        self.failures = 0

    def _target(self, target_id: str) -> ImagePart:
        path = self.image_paths_by_id.get(target_id)
        if not path:
            raise ConvirError(f"the vlm answerer has no image for target {target_id!r}")
        return image_part(path)

    def _ask(self, name: str, images: list[ImagePart], params: GenParams, **values: str) -> str | None:
        try:
            return self.vlm.chat(vlm_messages(name, images, **values), params)
        except LLMError:
            if self.strict:
                raise
            self.failures += 1
            return None

    def answer(self, question: str, target_id: str) -> Answer:
        out = self._ask(
            "vlm_answer", [self._target(target_id)], GenParams(max_tokens=24, stop=("\n",)), question=question
        )
        return Answer(UNKNOWN if out is None else short_answer(out))

    def choose(self, option_vectors: Any, target_id: str, option_ids: list[str] | None = None) -> int | None:
        """The image-choice answer from the pixels: the model sees the target and the options'
        images (in order) and names the closest by number; None for "none", a reply that names
        no option, or options without images (caption-only galleries have nothing to look at)."""
        from convir.dialog.engine import parse_choice

        paths = [self.image_paths_by_id.get(o) for o in option_ids or []]
        if not paths or not all(paths):
            return None
        images = [self._target(target_id), *(image_part(p) for p in paths if p)]
        out = self._ask("vlm_choose", images, GenParams(max_tokens=8, stop=("\n",)), n=str(len(paths)))
        if out is None:
            return None
        numbers = [str(i + 1) for i in range(len(paths))]
        try:
            picked = parse_choice(short_answer(out), numbers)
        except ConvirError:
            return None
        return None if picked is None else numbers.index(picked)

    def differences(self, image_prompt: str, target_id: str, image_path: str = "") -> str:
        """How a generated image differs from the target, in one short sentence; "" when the
        model states none (same rule as the captions answerer). With ``image_path`` the model
        sees both images (target first); without, the target and the image's prompt."""
        target = self._target(target_id)
        params = GenParams(max_tokens=48, stop=("\n",))
        if image_path:
            out = self._ask("vlm_differences", [target, image_part(image_path)], params, prompt=image_prompt)
        else:
            out = self._ask("vlm_differences_text", [target], params, prompt=image_prompt)
        line = re.sub(r"^\s*differences?\s*:\s*", "", short_answer(out or "", max_words=40), flags=re.I)
        if line == UNKNOWN or re.fullmatch(r"\W*(none|nothing|no differences?)\W*", line, re.I):
            return ""
        return line
