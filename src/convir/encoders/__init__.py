"""Encoders chosen by spec string.

* ``caption:minilm`` (offline default) or ``caption:PATH_OR_HUB_ID``: sentence-transformers text model;
* ``open_clip:ARCH/PRETRAINED``: open_clip image+text model (e.g. ``open_clip:ViT-B-32/openai``);
  PRETRAINED may be a tag, a local checkpoint file, or omitted for random weights;
* ``hf:MODEL_ID_OR_PATH``: transformers CLIP / SigLIP models;
* ``blip:MODEL_ID_OR_PATH_OR_CHECKPOINT[?options]``: BLIP retrieval (ITC) embeddings, from a
  transformers model or an original BLIP/LAVIS/ChatIR checkpoint file.

Heavy libraries are imported only when an encoder is actually loaded.
"""

from __future__ import annotations

from convir.encoders.base import (
    ImageEncoder,
    ImageReadError,
    LongTextPolicy,
    TextEncoder,
    check_dtype,
    has_image_tower,
    l2_normalize,
)
from convir.errors import SpecError
from convir.specs import REGISTRY

KINDS = REGISTRY.names("encoder")  # kind -> one-line doc, for --help and messages
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


def load_encoder(
    spec: str, long_text: LongTextPolicy = "chunk", device: str = "cpu", dtype: str = "auto"
) -> TextEncoder:
    """The encoder named by ``spec``, loaded once per process (the component registry).

    ``dtype`` (auto | float32 | float16 | bfloat16) applies to the image-text encoders; caption
    encoders always run in float32.
    """
    comp, _ = REGISTRY.parse("encoder", spec)
    dtype = check_dtype(dtype, device)
    if comp.name == "caption":
        if dtype not in ("auto", "float32"):
            raise SpecError(f"caption encoders run in float32; {dtype} is for image-text encoders")
        return REGISTRY.load("encoder", spec, long_text=long_text, device=device)
    return REGISTRY.load("encoder", spec, long_text=long_text, device=device, dtype=dtype)
