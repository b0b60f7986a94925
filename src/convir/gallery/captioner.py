"""Generated captions: ``convir index --captioner SPEC`` describes every photo at index time.

A photo library rarely has captions; BM25, the questioners and the answer reading need text.
A captioner writes one sentence per image; it is stored apart from the user's captions
(:meth:`convir.gallery.store.Store.put_generated`, with the spec that made it and the content
hash it was made from), so user text is never overwritten and a changed image or captioner
is captioned again. Captioners are chosen by the same spec grammar as ``--vlm``:

* ``hf:MODEL_ID_OR_PATH`` — a transformers image-to-text model (BLIP, BLIP-2, GIT,
  Florence-2, ...) through ``AutoProcessor`` + ``AutoModelForImageTextToText``; a batch of
  images per ``generate`` call, greedy decoding, so captions are repeatable.
* ``openai:BASE_URL#MODEL`` — an OpenAI-compatible vision endpoint (vLLM, Ollama, llama.cpp
  server with an mmproj), one request per image, the same client as ``--vlm openai:...``;
  this is also how llama.cpp multimodal models are used.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from convir.errors import ConvirError
from convir.specs import REGISTRY, local_or_hub, url_and_model

CAPTIONER_SETTING = "captioner"  # the recorded --captioner: later runs keep captioning with it
CAPTION_PROMPT = "Describe this photo in one short sentence."
MAX_NEW_TOKENS = 30


class CaptionerError(ConvirError):
    """A captioner cannot be loaded or reached."""


def check_hf(value: str) -> None:
    """Spec check before anything loads: the folder exists (or it is a hub id)."""
    local_or_hub(value, "hf captioner", "hf:Salesforce/blip-image-captioning-base or hf:/path/to/folder")


def check_openai(value: str) -> None:
    url_and_model(value, "openai captioner", "openai:http://localhost:8080/v1#llava")


def canonical(spec: str) -> str:
    """The spec as stored (a local model folder made absolute), known without loading it, so an
    unchanged captioner is recognised and a changed one re-captions every photo."""
    comp, value = REGISTRY.parse("captioner", spec)
    if comp.name == "hf":
        return f"hf:{local_or_hub(value, 'hf captioner', 'hf:/path/to/folder')[0]}"
    return f"{comp.name}:{value}"


def _one_line(text: str) -> str:
    return " ".join(str(text).split()).strip()


class HFCaptioner:
    """A transformers image-to-text model captioning a batch of images per call."""

    def __init__(self, name: str, device: str | None = None, max_new_tokens: int = MAX_NEW_TOKENS) -> None:
        from convir._compat import ensure_torchvision

        ensure_torchvision()
        path, local = local_or_hub(
            name, "hf", "hf:Salesforce/blip-image-captioning-base or hf:/path/to/folder", CaptionerError
        )
        if local:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.spec = f"hf:{path}"
        where = "local folder" if local else "hub id (needs network the first time)"
        try:
            self.processor = AutoProcessor.from_pretrained(path)
            model = AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CaptionerError(
                f"cannot load hf:{path} as an image captioning model ({where}): {type(exc).__name__}: {exc}"
            ) from exc
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")  # a GPU when there is one
        self.model = model.to(self.device).eval()
        self.max_new_tokens = max_new_tokens

    def caption(self, paths: list[Path]) -> list[str]:
        """One caption per image (decoded images in, greedy decoding)."""
        import torch

        from convir.simulate.vlm import _open_rgb

        images = [_open_rgb(str(p)) for p in paths]
        inputs = self.processor(images=images, return_tensors="pt").to(self.device)
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
        texts = self.processor.batch_decode(out, skip_special_tokens=True)
        return [_one_line(t) for t in texts]

    def close(self) -> None:
        pass


class OpenAICaptioner:
    """An OpenAI-compatible vision endpoint (the ``--vlm openai:`` client), one image per request."""

    def __init__(self, target: str, timeout: float = 120.0, retries: int = 3, max_side: int = 768) -> None:
        from convir.llm.base import GenParams
        from convir.simulate.vlm import OpenAIVLM

        self._vlm = OpenAIVLM(target, timeout=timeout, retries=retries, max_side=max_side)
        self.spec = f"openai:{target.strip()}"
        self._params = GenParams(max_tokens=60, temperature=0.0)

    def caption(self, paths: list[Path]) -> list[str]:
        from convir.llm.base import LLMError

        out = []
        for p in paths:
            msg = [
                {
                    "role": "user",
                    "content": [{"type": "image", "path": str(p)}, {"type": "text", "text": CAPTION_PROMPT}],
                }
            ]
            try:
                out.append(_one_line(self._vlm.chat(msg, self._params)))
            except LLMError as exc:
                raise CaptionerError(f"captioner {self.spec}: {exc}") from exc
        return out

    def close(self) -> None:
        self._vlm.close()


def load_captioner(spec: str, **options: Any) -> Any:
    """The captioner named by ``spec``, loaded once per process."""
    return REGISTRY.load("captioner", spec, **options)


def caption_items(
    store: Any,
    spec: str,
    items: list[tuple[Any, str]],
    batch_size: int,
    report: Any,
    before_write: Callable[[], None],
    checkpoint: Callable[[str], None],
) -> set[str]:
    """Give every photo of ``items`` (source item, content hash) whose generated caption is
    missing or was made from other content or by another captioner a new one, ``batch_size``
    per model call and one SQLite transaction per batch (a killed run loses at most a batch and
    the next run resumes). The model loads only when something needs captioning. Returns the
    ids captioned; an image that cannot be decoded is a warning (the item stays indexed)."""
    import time

    spec = canonical(spec)
    report.captioner = spec
    have = store.generated_state()
    todo = [(it, h) for it, h in items if it.image is not None and have.get(it.id) != (spec, h)]
    if store.get(CAPTIONER_SETTING) != spec:
        store.set(CAPTIONER_SETTING, spec)
    if not todo:
        return set()
    t0 = time.perf_counter()
    model = load_captioner(spec)
    done: set[str] = set()
    for start in range(0, len(todo), batch_size):
        batch = todo[start : start + batch_size]
        try:
            texts: list[str | None] = list(model.caption([it.image for it, _ in batch]))
        except CaptionerError:
            raise
        except ConvirError:  # an undecodable image: caption one at a time to find it
            texts = []
            for it, _ in batch:
                try:
                    texts.append(model.caption([it.image])[0])
                except CaptionerError:
                    raise
                except ConvirError as exc:
                    report.warnings.append((it.id, f"no generated caption: {exc}"))
                    texts.append(None)
        rows = [(it.id, spec, t, h) for (it, h), t in zip(batch, texts, strict=True) if t is not None]
        before_write()
        store.put_generated(rows)
        done.update(r[0] for r in rows)
        report.captioned += len(rows)
        checkpoint("caption")
    report.caption_seconds = time.perf_counter() - t0
    return done
