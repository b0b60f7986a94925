"""Text-to-image generators chosen by spec, each behind the on-disk image cache.

* ``diffusers:MODEL_ID_OR_PATH`` — any diffusers text-to-image pipeline (Stable Diffusion 3,
  2.1, SDXL-Turbo, SD-Turbo, ...) loaded with ``AutoPipelineForText2Image`` (falling back to
  ``DiffusionPipeline``); options ``device``, ``dtype``, ``steps``, ``guidance``, ``width``,
  ``height`` (or ``size``), ``seed``, ``negative_prompt``, ``variant``.
* ``openai-images:BASE_URL#MODEL`` — ``POST BASE_URL/images/generations`` of any server speaking
  the OpenAI Images API (``b64_json`` or ``url`` answers); key from ``CONVIR_IMAGES_API_KEY`` or
  ``OPENAI_API_KEY``; timeouts and retries with backoff.
* ``text:`` — offline caption mode: the "image" is its prompt (path ""), embedded by the
  gallery's text encoder, so the imagination methods are measurable without any image model.

The pipeline is loaded on the first image that is not in the cache, so replaying a cached
conversation or evaluation never loads (let alone runs) a model. Heavy imports stay inside
the functions that need them.
"""

from __future__ import annotations

import base64
import errno
import importlib.util
import logging
import os
import threading
import time
from typing import Any, Protocol

from convir.dialog.engine import ImaginedImage
from convir.errors import ConvirError, SpecError
from convir.imagine.cache import ImageCache, image_key
from convir.specs import url_and_model

log = logging.getLogger("convir")


class GeneratorError(ConvirError):
    """No image could be made (model missing, library missing, server down): imagination turns
    off and the conversation continues text-only."""


class Generator(Protocol):
    spec: str
    makes_images: bool  # False for the text: generator (the "image" is its prompt)
    calls: int  # backend runs (pipeline calls / HTTP requests) in this process
    hits: int  # images answered from the cache

    def generate(self, prompt: str, seed: int = 0) -> ImaginedImage: ...


class TextGenerator:
    """``text:`` — no pixels: the prompt stands for the image (offline caption galleries)."""

    spec = "text:"
    makes_images = False

    def __init__(self) -> None:
        self.calls = 0
        self.hits = 0
        self.params: dict[str, Any] = {}

    def generate(self, prompt: str, seed: int = 0) -> ImaginedImage:
        self.calls += 1
        return ImaginedImage("", prompt)


def text_generator(rest: str = "", **options: Any) -> TextGenerator:
    """Registry factory of ``text:`` (it takes no model and no options)."""
    if rest.strip() or set(options) - {"cache"}:
        raise SpecError("the text generator takes no model and no options: use text:")
    return TextGenerator()


class CachedGenerator:
    """Shared cache logic: a hit returns the stored file and never calls :meth:`_render`.
    Misses are rendered one at a time (diffusers pipelines keep per-call scheduler state, so
    sessions of a server sharing one generator must not run it concurrently)."""

    makes_images = True
    spec: str

    def __init__(self, params: dict[str, Any], cache: ImageCache | None = None) -> None:
        self.params = params
        self.cache = cache or ImageCache()
        self.base_seed = int(params.get("seed", 0))
        self.calls = 0
        self.hits = 0
        self.render_seconds = 0.0
        self._lock = threading.Lock()

    def generate(self, prompt: str, seed: int = 0) -> ImaginedImage:
        seed = self.base_seed + int(seed)
        key = image_key(self.spec, prompt, seed, {k: v for k, v in self.params.items() if k != "seed"})
        found = self.cache.get(key)
        if found is not None:
            self.hits += 1
            return ImaginedImage(str(found), prompt)
        with self._lock:
            found = self.cache.get(key)  # another session may have made it meanwhile
            if found is not None:
                self.hits += 1
                return ImaginedImage(str(found), prompt)
            t = time.perf_counter()
            image = self._render(prompt, seed)
            self.calls += 1
            self.render_seconds += time.perf_counter() - t
            try:
                path = self.cache.put(key, image)
            except (OSError, ValueError) as exc:  # undecodable bytes from a server, or a full disk
                if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise  # the disk, not the generator: the caller reports it (the server: 507)
                raise GeneratorError(
                    f"{self.spec}: cannot decode or store the generated image: {exc}"
                ) from exc
        return ImaginedImage(str(path), prompt)

    def _render(self, prompt: str, seed: int) -> Any:
        raise NotImplementedError


# ------------------------------------------------------------------------------------ diffusers

_DTYPES = {"fp32": "float32", "float32": "float32", "fp16": "float16", "float16": "float16"}
_DTYPES |= {"bf16": "bfloat16", "bfloat16": "bfloat16", "auto": "auto"}


def _size(value: Any) -> tuple[int, int]:
    text = str(value).lower().strip()
    w, sep, h = text.partition("x")
    try:
        width, height = int(w), int(h if sep else w)
    except ValueError:
        raise SpecError(f"size must be N or WxH (e.g. 512 or 768x512), got {value!r}") from None
    return width, height


class DiffusersGenerator(CachedGenerator):
    """A diffusers text-to-image pipeline; loaded lazily on the first cache miss."""

    def __init__(self, name: str, cache: ImageCache | None = None, **options: Any) -> None:
        from convir.specs import local_or_hub

        name = name.strip()
        if not name:
            raise SpecError(
                "diffusers spec needs a model, e.g. diffusers:stabilityai/sd-turbo "
                "or diffusers:/path/to/folder"
            )
        if importlib.util.find_spec("diffusers") is None:
            raise GeneratorError("diffusers is not installed: pip install 'convir[diffusion]'")
        self.model, self.local = local_or_hub(
            name, "diffusers", "diffusers:stabilityai/sd-turbo", error=GeneratorError
        )
        self.spec = f"diffusers:{self.model}"
        device = str(options.pop("device", "cpu"))
        dtype = _DTYPES.get(str(options.pop("dtype", "auto")).lower())
        if dtype is None:
            raise SpecError(f"dtype must be one of {', '.join(sorted(_DTYPES))}")
        if dtype == "auto":
            dtype = "float16" if device.startswith("cuda") else "float32"
        turbo = "turbo" in self.model.lower()  # distilled: one step, no classifier-free guidance
        width = options.pop("width", None)
        height = options.pop("height", None)
        if "size" in options:
            width, height = _size(options.pop("size"))
        params = {
            "steps": int(options.pop("steps", 1 if turbo else 25)),
            "guidance": float(options.pop("guidance", 0.0 if turbo else 7.0)),
            "width": int(width) if width else None,
            "height": int(height) if height else None,
            "dtype": dtype,
            "device": device.split(":")[0],  # the noise differs between CPU and GPU generators
            "negative_prompt": options.pop("negative_prompt", None),
            "variant": options.pop("variant", None),
            "seed": int(options.pop("seed", 0)),
        }
        if self.local:  # a re-trained or replaced local model must not hit the old images
            params["model_files"] = _fingerprint(self.model)
        if options:
            raise SpecError(f"diffusers generators do not take option(s) {', '.join(sorted(options))}")
        if params["steps"] < 1:
            raise SpecError("steps must be at least 1")
        super().__init__(params, cache)
        self.device = device
        self._pipe: Any = None

    def _pipeline(self) -> Any:
        if self._pipe is not None:
            return self._pipe
        from convir._compat import ensure_torchvision

        ensure_torchvision()
        if self.local:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
        try:
            import torch
            from diffusers import AutoPipelineForText2Image, DiffusionPipeline
            from diffusers.utils import logging as dlogging

            from convir.encoders.base import resolve_device

            dlogging.set_verbosity_error()
            dlogging.disable_progress_bar()
            try:  # the text encoders load through transformers, with their own progress bars
                from transformers.utils import logging as tlogging

                tlogging.disable_progress_bar()
            except ImportError:
                pass
            device = resolve_device(self.device)
        except (ImportError, RuntimeError, ConvirError) as exc:
            raise GeneratorError(f"cannot load {self.spec}: {exc}") from exc
        kwargs: dict[str, Any] = {_dtype_keyword(): getattr(torch, self.params["dtype"])}
        if self.params["variant"]:
            kwargs["variant"] = self.params["variant"]
        where = "local folder" if self.local else "hub id (needs network or the HF cache)"
        try:
            try:
                pipe = AutoPipelineForText2Image.from_pretrained(self.model, **kwargs)
            except ValueError:  # a pipeline class AutoPipeline does not map: load it as it is
                pipe = DiffusionPipeline.from_pretrained(self.model, **kwargs)
            pipe = pipe.to(device)
        except Exception as exc:  # anything from hub/IO/config errors to OOM: report, go text-only
            raise GeneratorError(
                f"cannot load {self.spec} as a {where}: {type(exc).__name__}: {exc}"
            ) from exc
        pipe.set_progress_bar_config(disable=True)
        self._pipe = pipe
        return pipe

    def _render(self, prompt: str, seed: int) -> Any:
        import torch

        pipe = self._pipeline()
        gen_device = self.device if self.device.startswith("cuda") else "cpu"
        kwargs: dict[str, Any] = {
            "prompt": prompt,
            "num_inference_steps": self.params["steps"],
            "guidance_scale": self.params["guidance"],
            "generator": torch.Generator(gen_device).manual_seed(seed),
        }
        for key in ("width", "height", "negative_prompt"):
            if self.params[key]:
                kwargs[key] = self.params[key]
        try:
            with torch.inference_mode():
                return pipe(**kwargs).images[0]
        except Exception as exc:
            raise GeneratorError(f"{self.spec} failed to generate: {type(exc).__name__}: {exc}") from exc


def _fingerprint(folder: str) -> str:
    """Digest of the file names, sizes and modification times under a local model folder."""
    import hashlib
    from pathlib import Path

    h = hashlib.sha256()
    root = Path(folder)
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        st = f.stat()
        h.update(f"{f.relative_to(root)}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()[:16]


def _dtype_keyword() -> str:
    """diffusers renamed ``torch_dtype`` to ``dtype`` (0.36); use whichever this one takes."""
    try:
        from diffusers.utils import deprecation_utils

        return "dtype" if hasattr(deprecation_utils, "_TORCH_DTYPE_DEPRECATION_MESSAGE") else "torch_dtype"
    except ImportError:
        return "torch_dtype"


# ------------------------------------------------------------------------------- openai-images

API_KEY_ENV = ("CONVIR_IMAGES_API_KEY", "OPENAI_API_KEY")


def parse_images_target(rest: str) -> tuple[str, str]:
    """``BASE_URL#MODEL`` -> (base url without trailing slash, model)."""
    return url_and_model(rest, "openai-images", "openai-images:https://api.openai.com/v1#gpt-image-1")


class OpenAIImagesGenerator(CachedGenerator):
    """``POST {BASE_URL}/images/generations``; connection errors, timeouts, 429 and 5xx are
    retried with exponential backoff, other 4xx fail at once (the request itself is wrong)."""

    def __init__(
        self,
        target: str,
        cache: ImageCache | None = None,
        size: str = "1024x1024",
        timeout: float = 120.0,
        retries: int = 2,
        backoff: float = 0.5,
        api_key: str | None = None,
        response_format: str = "b64_json",
        quality: str | None = None,
        seed: int = 0,
    ) -> None:
        self.base_url, self.model = parse_images_target(target)
        self.spec = f"openai-images:{self.base_url}#{self.model}"
        w, h = _size(size)
        fmt = None if str(response_format).lower() in ("", "none") else str(response_format)
        super().__init__(
            {"size": f"{w}x{h}", "quality": quality, "response_format": fmt, "seed": seed}, cache
        )
        self.timeout, self.retries, self.backoff = float(timeout), max(0, int(retries)), float(backoff)
        self._api_key = api_key
        self._client: Any = None

    def _headers(self) -> dict[str, str]:
        key = self._api_key or next((os.environ[n] for n in API_KEY_ENV if os.environ.get(n)), None)
        return {"Authorization": f"Bearer {key}"} if key else {}

    def _request(self, method: str, url: str, **kwargs: Any) -> Any:
        import httpx

        from convir.llm.openai import request_with_retries

        if self._client is None:
            self._client = httpx.Client(timeout=self.timeout, follow_redirects=True)
        return request_with_retries(
            self._client,
            method,
            url,
            server="image server",
            error=GeneratorError,
            timeout=self.timeout,
            retries=self.retries,
            backoff=self.backoff,
            **kwargs,
        )

    def _render(self, prompt: str, seed: int) -> bytes:
        body: dict[str, Any] = {"model": self.model, "prompt": prompt, "n": 1, "size": self.params["size"]}
        if self.params["response_format"]:
            body["response_format"] = self.params["response_format"]
        if self.params["quality"]:
            body["quality"] = self.params["quality"]
        url = f"{self.base_url}/images/generations"
        resp = self._request("POST", url, json=body, headers=self._headers())
        try:
            item = resp.json()["data"][0]
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise GeneratorError(f"unexpected answer from {url}: {resp.text[:200]!r}") from exc
        if item.get("b64_json"):
            try:
                return base64.b64decode(item["b64_json"], validate=True)
            except ValueError as exc:
                raise GeneratorError(f"{url} sent an image that is not valid base64") from exc
        if item.get("url"):
            return self._request("GET", item["url"]).content
        raise GeneratorError(f"{url} answered without b64_json or url: {str(item)[:200]}")
