"""``hf:MODEL_ID_OR_PATH``: transformers dual encoders (CLIP, SigLIP, ...) via AutoModel.

Any model exposing ``get_text_features`` / ``get_image_features`` works. A local folder (as
written by ``save_pretrained``) is loaded with the hub switched off; anything else is a hub id
that transformers downloads and caches when the machine is online.

Text is tokenised the way each family was trained: CLIP pads to the longest text (its causal
mask makes padding irrelevant), SigLIP pools the LAST position and so must always be padded to
its fixed length (64), otherwise a query's vector would depend on what else is in the batch.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from convir.encoders.base import (
    ImageReadError,
    ImageTextEncoder,
    LongTextPolicy,
    l2_normalize,
    resolve_device,
    torch_dtype,
)
from convir.errors import SpecError
from convir.specs import local_or_hub

if TYPE_CHECKING:
    import torch
    from PIL import Image

# Families whose text tower pools the last token and was trained on max_length padding.
_PAD_TO_MAX = ("siglip", "siglip2")
_HUGE = 1_000_000  # transformers' "no limit" model_max_length is ~1e30


def _resolve(name: str) -> tuple[str, bool]:
    """Return (path or hub id, is local)."""
    return local_or_hub(name, "hf", "hf:openai/clip-vit-base-patch32 or hf:/path/to/folder")


def _features(out: Any) -> torch.Tensor:
    """transformers 4.x returns a tensor, 5.x a ModelOutput whose pooler_output is the embedding."""
    import torch

    if isinstance(out, torch.Tensor):
        return out
    for key in ("pooler_output", "text_embeds", "image_embeds"):
        value = getattr(out, key, None)
        if isinstance(value, torch.Tensor):
            return value
    raise TypeError(f"unexpected feature output {type(out).__name__} (no pooler_output)")


def _load_processing(path: str) -> tuple[Any, Any, dict[str, Any]]:
    """Tokenizer, image processor and the processor's declared text defaults.

    AutoProcessor is preferred because it carries the family's conventions; some repos only
    ship the two parts separately, hence the fallback.
    """
    from transformers import AutoImageProcessor, AutoProcessor, AutoTokenizer

    try:
        processor = AutoProcessor.from_pretrained(path)
    except (OSError, ValueError, KeyError, TypeError):
        processor = None
    tokenizer = getattr(processor, "tokenizer", None)
    image_processor = getattr(processor, "image_processor", None)
    defaults: dict[str, Any] = {}
    if processor is not None:
        # Same precedence as ProcessorMixin._merge_kwargs: processor attribute, then legacy _defaults.
        declared = getattr(processor, "text_kwargs", None)
        defaults.update(declared if isinstance(declared, dict) else {})
        legacy = getattr(getattr(processor, "valid_processor_kwargs", None), "_defaults", None)
        if isinstance(legacy, dict):
            defaults.update(legacy.get("text_kwargs", {}))
    if tokenizer is None:
        tokenizer = AutoTokenizer.from_pretrained(path)
    if image_processor is None:
        image_processor = AutoImageProcessor.from_pretrained(path)
    return tokenizer, image_processor, defaults


def offline_if_local(local: bool) -> None:
    """A local model folder never needs the hub: switch it off so nothing is looked up."""
    if local:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


class HFEncoder(ImageTextEncoder):
    """Joint text/image encoder backed by a transformers model.

    Subclasses (BLIP) load their model their own way, then call :meth:`_setup` and override
    :meth:`_text_features` / :meth:`_image_features`; batching, long text, dtype and device
    handling stay here.
    """

    supports_images = True

    def __init__(
        self, name: str, long_text: LongTextPolicy = "chunk", device: str = "cpu", dtype: str = "auto"
    ) -> None:
        from convir._compat import ensure_torchvision

        ensure_torchvision()
        name = name.strip()
        path, local = _resolve(name)
        offline_if_local(local)
        from transformers import AutoModel

        self.device = resolve_device(device)
        self.long_text = long_text
        self.spec = f"hf:{path}"
        where = "local folder" if local else "hub id (needs network the first time)"
        try:
            model = AutoModel.from_pretrained(path, dtype=torch_dtype(dtype, self.device) or "auto")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SpecError(f"cannot load {self.spec} as a {where}: {type(exc).__name__}: {exc}") from exc
        if getattr(model.config, "model_type", "") == "blip":
            # AutoModel gives BlipModel, whose projections are not the retrieval checkpoints' ITC ones.
            raise SpecError(f"{self.spec} is a BLIP model: use blip:{name} (BLIP's retrieval embeddings)")
        if not (hasattr(model, "get_text_features") and hasattr(model, "get_image_features")):
            raise SpecError(
                f"{self.spec} loads as {type(model).__name__}, which has no joint text/image embedding "
                "(get_text_features/get_image_features); use a CLIP or SigLIP model"
            )
        tokenizer, image_processor, defaults = self._processing(path)
        config = model.config
        text_cfg = getattr(config, "text_config", config)
        max_len = int(defaults.get("max_length") or getattr(text_cfg, "max_position_embeddings", 0) or 0)
        tok_max = int(getattr(tokenizer, "model_max_length", _HUGE) or _HUGE)
        if tok_max < _HUGE:
            max_len = min(max_len, tok_max) if max_len else tok_max
        if not max_len:
            raise SpecError(f"{self.spec}: cannot tell the text context length (no max_position_embeddings)")
        pad_to_max = getattr(config, "model_type", "") in _PAD_TO_MAX
        padding = defaults.get("padding") or ("max_length" if pad_to_max else "longest")
        self._setup(model, tokenizer, image_processor, max_len, padding)

    def _processing(self, path: str) -> tuple[Any, Any, dict[str, Any]]:
        try:
            return _load_processing(path)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SpecError(
                f"cannot load the tokenizer/image processor of {self.spec}: {type(exc).__name__}: {exc}"
            ) from exc

    def _setup(
        self, model: Any, tokenizer: Any, image_processor: Any, max_length: int, padding: str = "longest"
    ) -> None:
        """Move the model to the device and fix the text settings; ``dim`` comes from one real call."""
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.context_length = int(max_length)
        self._text_kwargs: dict[str, Any] = {"padding": padding, "truncation": True, "max_length": max_length}
        self.max_tokens = max_length - int(tokenizer.num_special_tokens_to_add())
        self.dim = int(self._encode_text_batch([""]).shape[1])

    # -- model hooks ---------------------------------------------------------------------------
    def _text_features(self, inputs: Any) -> torch.Tensor:
        return _features(self.model.get_text_features(**inputs))

    def _image_features(self, inputs: Any) -> torch.Tensor:
        return _features(self.model.get_image_features(**inputs))

    # -- text ---------------------------------------------------------------------------------
    def count_tokens(self, text: str) -> int:
        """Tokens the model would see for ``text``, excluding special tokens."""
        return len(self.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])

    def _encode_text_batch(self, texts: list[str]) -> np.ndarray:
        import torch

        inputs = self.tokenizer(texts, return_tensors="pt", **self._text_kwargs).to(self.device)
        with torch.inference_mode():
            feats = self._text_features(inputs)
        return l2_normalize(feats.float().cpu().numpy())

    def encode_pil(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Encode already-decoded images with the model's own image processor."""
        import torch

        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        inputs = self.image_processor(images=list(images), return_tensors="pt")
        inputs = inputs.to(self.device).to(self.model.dtype)  # .to(dtype) casts float tensors only
        with torch.inference_mode():
            feats = self._image_features(inputs)
        return l2_normalize(feats.float().cpu().numpy())


__all__ = ["HFEncoder", "ImageReadError"]
