"""Encoders chosen by spec string.

* ``caption:minilm`` (offline default) or ``caption:PATH_OR_HUB_ID``: sentence-transformers text model;
* ``open_clip:ARCH/PRETRAINED``: open_clip image+text model (e.g. ``open_clip:ViT-B-32/openai``);
  PRETRAINED may be a tag, a local checkpoint file, or omitted for random weights;
* ``hf:MODEL_ID_OR_PATH``: transformers CLIP / SigLIP / BLIP retrieval models.

Heavy libraries are imported only when an encoder is actually loaded.
"""

from __future__ import annotations

from functools import lru_cache

from convir.encoders.base import (
    ImageEncoder,
    ImageReadError,
    LongTextPolicy,
    TextEncoder,
    has_image_tower,
    l2_normalize,
)
from convir.specs import parse_spec

KINDS = {
    "caption": "sentence-transformers text model over captions, e.g. caption:minilm (offline default)",
    "open_clip": "open_clip model, e.g. open_clip:ViT-B-32/openai (ARCH/PRETRAINED tag or checkpoint path)",
    "hf": "transformers CLIP/SigLIP/BLIP model, e.g. hf:openai/clip-vit-base-patch32 or hf:/path/to/model",
}
DEFAULT_ENCODER = "caption:minilm"

__all__ = [
    "DEFAULT_ENCODER",
    "KINDS",
    "ImageEncoder",
    "ImageReadError",
    "TextEncoder",
    "has_image_tower",
    "l2_normalize",
    "load_encoder",
]


@lru_cache(maxsize=8)
def load_encoder(spec: str, long_text: LongTextPolicy = "chunk", device: str = "cpu") -> TextEncoder:
    """Load (once per process) the encoder named by ``spec``."""
    s = parse_spec(spec, KINDS)
    if s.kind == "caption":
        from convir.encoders.caption import CaptionEncoder

        return CaptionEncoder(s.rest or "minilm", long_text=long_text, device=device)
    if s.kind == "open_clip":
        from convir.encoders.openclip import OpenClipEncoder

        return OpenClipEncoder(s.rest, long_text=long_text, device=device)
    from convir.encoders.hf import HFEncoder

    return HFEncoder(s.rest, long_text=long_text, device=device)
