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

from functools import lru_cache

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
from convir.specs import parse_spec

KINDS = {
    "caption": "sentence-transformers text model over captions, e.g. caption:minilm (offline default)",
    "open_clip": "open_clip model, e.g. open_clip:ViT-B-32/openai (ARCH/PRETRAINED tag or checkpoint path)",
    "hf": "transformers CLIP/SigLIP model, e.g. hf:openai/clip-vit-base-patch32 or hf:/path/to/model",
    "blip": "BLIP retrieval (ITC) model, e.g. blip:Salesforce/blip-itm-base-coco, or an original "
    "checkpoint: blip:/path/chatir_weights.ckpt?image_size=224",
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
def load_encoder(
    spec: str, long_text: LongTextPolicy = "chunk", device: str = "cpu", dtype: str = "auto"
) -> TextEncoder:
    """Load (once per process) the encoder named by ``spec``.

    ``dtype`` (auto | float32 | float16 | bfloat16) applies to the image-text encoders; caption
    encoders always run in float32.
    """
    s = parse_spec(spec, KINDS)
    dtype = check_dtype(dtype, device)
    if s.kind == "caption":
        if dtype not in ("auto", "float32"):
            raise SpecError(f"caption encoders run in float32; {dtype} is for image-text encoders")
        from convir.encoders.caption import CaptionEncoder

        return CaptionEncoder(s.rest or "minilm", long_text=long_text, device=device)
    if s.kind == "open_clip":
        from convir.encoders.openclip import OpenClipEncoder

        return OpenClipEncoder(s.rest, long_text=long_text, device=device, dtype=dtype)
    if s.kind == "blip":
        from convir.encoders.blip import BlipEncoder

        return BlipEncoder(s.rest, long_text=long_text, device=device, dtype=dtype)
    from convir.encoders.hf import HFEncoder

    return HFEncoder(s.rest, long_text=long_text, device=device, dtype=dtype)
