"""Tiny random image-text models built from configs (shared by the encoder, index and
training tests): an open_clip architecture and transformers CLIP / SigLIP folders."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from convir._compat import ensure_torchvision

ensure_torchvision()  # as convir's encoders do: PyPI's CUDA torchvision beside a CPU torch

TINY_ARCH = "ConvirTinyTestArch"
TINY_OPEN_CLIP = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "patch_size": 16, "width": 32, "layers": 1, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def _byte_vocab() -> dict[str, int]:
    """Byte-level BPE vocab without merges: every byte is a token, enough for a real tokenizer."""
    from tokenizers.pre_tokenizers import ByteLevel

    alphabet = sorted(ByteLevel.alphabet())
    vocab = {ch: i for i, ch in enumerate(alphabet)}
    vocab.update({ch + "</w>": len(alphabet) + i for i, ch in enumerate(alphabet)})
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    return vocab


def _tiny_tokenizer() -> Any:
    from transformers import CLIPTokenizer

    return CLIPTokenizer(vocab=_byte_vocab(), merges=[])


def _build_hf(folder: Path, family: str) -> None:
    """Save a tiny random model + tokenizer + image processor as a loadable folder."""
    tok = _tiny_tokenizer()
    ids = {
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.pad_token_id,
    }
    text = dict(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        **ids,
    )
    vision = dict(
        image_size=32,
        patch_size=16,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
    )
    torch.manual_seed(0)
    if family == "clip":
        from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

        config = CLIPConfig(
            text_config={**text, "max_position_embeddings": 77}, vision_config=vision, projection_dim=16
        )
        CLIPModel(config).save_pretrained(folder)
        image_processor = CLIPImageProcessor(
            size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
        )
        CLIPProcessor(image_processor=image_processor, tokenizer=tok).save_pretrained(folder)
    else:
        from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel, SiglipProcessor

        config = SiglipConfig(
            text_config={**text, "max_position_embeddings": 64, "projection_size": 32}, vision_config=vision
        )
        SiglipModel(config).save_pretrained(folder)
        image_processor = SiglipImageProcessor(size={"height": 32, "width": 32})
        SiglipProcessor(image_processor=image_processor, tokenizer=tok).save_pretrained(folder)
