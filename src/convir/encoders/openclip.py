"""``open_clip:ARCH/PRETRAINED``: open_clip image+text models (CLIP, SigLIP, EVA, ...).

PRETRAINED is one of open_clip's tags for ARCH (``ViT-B-32/openai``, downloaded once by
open_clip), a local checkpoint file (``ViT-B-32//data/ckpt.pt``: only the FIRST ``/`` splits,
so the path may contain more), or empty / ``none`` for random weights. ``hf-hub:org/name`` and
``local-dir:/path`` as the whole value use open_clip's own config+weights bundles.

Random weights are seeded, so ``open_clip:ARCH`` gives the same encoder in every process and an
index built with it can be reopened (useful for tests and pipeline dry runs, not for search).
"""

from __future__ import annotations

import difflib
import inspect
import pickle
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from convir.encoders.base import (
    ImageReadError,
    ImageTextEncoder,
    LongTextPolicy,
    check_dtype,
    l2_normalize,
    resolve_device,
)
from convir.errors import SpecError

if TYPE_CHECKING:
    import torch
    from PIL import Image

_SCHEMAS = ("hf-hub:", "local-dir:")
_RANDOM = ("", "none", "random")
_SEED = 0
# Loading errors that mean "this spec/checkpoint is wrong", not a bug in convir.
_LOAD_ERRORS = (RuntimeError, OSError, ValueError, KeyError, EOFError, pickle.UnpicklingError)


def _parse(rest: str) -> tuple[str, str | None]:
    """Split ``ARCH/PRETRAINED`` at the first ``/``; schemas are kept whole. None = random weights."""
    rest = rest.strip()
    if not rest:
        raise SpecError("open_clip spec needs an architecture, e.g. open_clip:ViT-B-32/openai")
    if rest.startswith(_SCHEMAS):
        return rest, None
    arch, _, pretrained = rest.partition("/")
    pretrained = pretrained.strip()
    return arch.strip(), (None if pretrained.lower() in _RANDOM else pretrained)


def _check_arch(open_clip: Any, arch: str) -> None:
    models = open_clip.list_models()
    if arch in models:
        return
    close = difflib.get_close_matches(arch, models, n=5, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    examples = [m for m in ("ViT-B-32", "ViT-B-16", "ViT-L-14", "ViT-B-16-SigLIP", "RN50") if m in models]
    raise SpecError(
        f"unknown open_clip architecture {arch!r}; {hint}e.g. {', '.join(examples)} "
        f"({len(models)} known; see open_clip.list_models())"
    )


def _resolve_pretrained(open_clip: Any, arch: str, pretrained: str) -> tuple[str, dict[str, Any]]:
    """Return (tag or absolute checkpoint path, tag config or {})."""
    tag_cfg = open_clip.get_pretrained_cfg(arch, pretrained)
    if tag_cfg:
        return pretrained, tag_cfg
    path = Path(pretrained).expanduser()
    if path.is_file():
        return str(path.resolve()), {}
    tags = open_clip.list_pretrained_tags_by_model(arch)
    what = "checkpoint file not found" if ("/" in pretrained or "." in pretrained) else "unknown tag"
    shown = ", ".join(tags[:8]) + (f", ... ({len(tags)} in all)" if len(tags) > 8 else "")
    known = f"known tags for {arch}: {shown}" if tags else f"{arch} has no published weights"
    raise SpecError(
        f"open_clip:{arch}/{pretrained}: {what}; {known}; or give a checkpoint path "
        f"(open_clip:{arch}//abs/path.pt) or 'none' for random weights"
    )


def _load_failed(spec: str, exc: BaseException) -> SpecError:
    return SpecError(
        f"cannot load {spec}: {type(exc).__name__}: {exc}. If this needs a download, run once with "
        "network access (open_clip caches the weights) or point to a local checkpoint file."
    )


class OpenClipEncoder(ImageTextEncoder):
    """Joint text/image encoder: both towers map into one space, so text queries find images."""

    supports_images = True

    def __init__(
        self, rest: str, long_text: LongTextPolicy = "chunk", device: str = "cpu", dtype: str = "auto"
    ) -> None:
        from convir._compat import ensure_torchvision

        ensure_torchvision()
        import open_clip
        import torch

        self.device = resolve_device(device)
        self.long_text = long_text
        name, pretrained = _parse(rest)
        # Never download a pretrained HF text tower behind the user's back (random init stays offline);
        # open_clip 3 calls the flag pretrained_text, 2.x pretrained_hf.
        params = inspect.signature(open_clip.create_model_and_transforms).parameters
        flag = "pretrained_text" if "pretrained_text" in params else "pretrained_hf"
        kwargs: dict[str, Any] = {flag: False}
        precision = {"float16": "fp16", "bfloat16": "bf16"}.get(check_dtype(dtype, self.device))
        if precision:
            kwargs["precision"] = precision
        if name.startswith(_SCHEMAS):
            if name.startswith("local-dir:") and not Path(name[len("local-dir:") :]).expanduser().is_dir():
                raise SpecError(f"open_clip {name}: folder does not exist")
            self.spec = f"open_clip:{name}"
        else:
            _check_arch(open_clip, name)
            if pretrained is None:
                self.spec = f"open_clip:{name}"
            else:
                pretrained, tag_cfg = _resolve_pretrained(open_clip, name, pretrained)
                model_cfg = open_clip.get_model_config(name) or {}
                # open_clip only warns when a tag was trained with QuickGELU but the arch config
                # uses GELU (e.g. ViT-B-32/openai); the embeddings are then silently worse.
                if tag_cfg.get("quick_gelu", False) and not model_cfg.get("quick_gelu", False):
                    kwargs["force_quick_gelu"] = True
                kwargs["pretrained"] = pretrained
                self.spec = f"open_clip:{name}/{pretrained}"
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(_SEED)  # reproducible random init without touching the caller's RNG
                model, _, preprocess = open_clip.create_model_and_transforms(
                    name, device=self.device, **kwargs
                )
            tokenizer = open_clip.get_tokenizer(name)
        except _LOAD_ERRORS as exc:
            raise _load_failed(self.spec, exc) from exc
        self.model = model.eval()
        self.preprocess: Callable[[Image.Image], torch.Tensor] = preprocess  # the model's eval transform
        self.tokenizer = tokenizer
        self.context_length = int(getattr(tokenizer, "context_length", None) or model.context_length)
        self.max_tokens = self.context_length - self._n_special_tokens()
        self.dim = int(self._encode_text_batch([""]).shape[1])

    # -- text ---------------------------------------------------------------------------------
    def _n_special_tokens(self) -> int:
        """SimpleTokenizer adds start+end; HF-backed tokenizers say how many they add."""
        hf_tok = getattr(self.tokenizer, "tokenizer", None)
        if hf_tok is not None and hasattr(hf_tok, "num_special_tokens_to_add"):
            return int(hf_tok.num_special_tokens_to_add())
        return 2

    def count_tokens(self, text: str) -> int:
        """Tokens the model would see for ``text``, excluding start/end markers."""
        hf_tok = getattr(self.tokenizer, "tokenizer", None)
        if hf_tok is not None:
            return len(hf_tok(text, add_special_tokens=False, verbose=False)["input_ids"])
        return len(self.tokenizer.encode(text))

    def _encode_text_batch(self, texts: list[str]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            tokens = self.tokenizer(texts).to(self.device)  # truncates to the context length
            feats = self.model.encode_text(tokens)
        return l2_normalize(feats.float().cpu().numpy())

    def prepare_image(self, image: Image.Image) -> torch.Tensor:
        """The model's input for one decoded image (its eval transform); thread-safe, so the
        decoding threads of :mod:`convir.encoders.pipeline` run it ahead of the model."""
        return self.preprocess(image)

    def encode_prepared(self, pixels: Sequence[torch.Tensor]) -> np.ndarray:
        """Encode the outputs of :meth:`prepare_image`, one model call."""
        import torch

        if not pixels:
            return np.zeros((0, self.dim), dtype=np.float32)
        with torch.inference_mode():
            dtype = next(self.model.parameters()).dtype
            feats = self.model.encode_image(torch.stack(list(pixels)).to(self.device, dtype))
        return l2_normalize(feats.float().cpu().numpy())

    def encode_pil(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Encode already-decoded images with the model's own eval preprocessing."""
        return self.encode_prepared([self.prepare_image(img) for img in images])


__all__ = ["ImageReadError", "OpenClipEncoder"]
