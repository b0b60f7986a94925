"""Tiny random image-captioning models saved the way users have them (no pretrained weights here):
a BLIP captioner (``BlipForConditionalGeneration``, what ``Salesforce/blip-image-captioning-base``
is) and a GIT captioner (``GitForCausalLM``, what ``microsoft/git-base-coco`` is), in miniature,
built from configs and written with ``save_pretrained``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from blip_helpers import IMAGE_SIZE, tiny_config, tiny_tokenizer


def _spread(model: Any, seed: int) -> None:
    """Fan-in scaled random weights, so generated text depends on the image (transformers'
    init gives BLIP's ViT std 1e-10: every photo would get the same caption)."""
    import torch

    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name.lower():
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.1 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.normal_(0, 0.1)
            elif p.dim() >= 2 and "embedding" not in name:
                p.normal_(0, p[0].numel() ** -0.5)
            else:
                p.normal_(0, 1.0)


def build_blip_captioner(folder: Path, seed: int = 0, config: Any = None) -> Path:
    """Save a tiny random BlipForConditionalGeneration + BERT tokenizer + image processor;
    ``config``: another BlipConfig (e.g. the default, BLIP-base-sized, for timings)."""
    from transformers import BlipForConditionalGeneration, BlipImageProcessor, BlipProcessor

    tok = tiny_tokenizer()
    config = config or tiny_config(len(tok))
    config.text_config.vocab_size = max(config.text_config.vocab_size, len(tok))
    config.text_config.bos_token_id = tok.bos_token_id
    config.text_config.sep_token_id = tok.sep_token_id
    config.text_config.pad_token_id = tok.pad_token_id
    model = BlipForConditionalGeneration(config).eval()
    model.config.decoder_start_token_id = tok.bos_token_id  # type: ignore[attr-defined]
    _spread(model, seed)
    model.save_pretrained(folder)
    size = config.vision_config.image_size
    image_processor = BlipImageProcessor(size={"height": size, "width": size})
    BlipProcessor(image_processor=image_processor, tokenizer=tok).save_pretrained(folder)
    return folder


def build_git_captioner(folder: Path, seed: int = 0) -> Path:
    """Save a tiny random GitForCausalLM + BERT tokenizer + CLIP image processor."""
    from transformers import CLIPImageProcessor, GitConfig, GitForCausalLM, GitProcessor

    tok = tiny_tokenizer()
    config = GitConfig(
        vision_config=dict(
            image_size=IMAGE_SIZE, patch_size=16, hidden_size=32, intermediate_size=64,
            num_hidden_layers=2, num_attention_heads=2,
        ),
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, max_position_embeddings=64, bos_token_id=tok.cls_token_id,
        eos_token_id=tok.sep_token_id, pad_token_id=tok.pad_token_id,
    )  # fmt: skip
    model = GitForCausalLM(config).eval()
    _spread(model, seed)
    model.save_pretrained(folder)
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    )
    GitProcessor(image_processor=image_processor, tokenizer=tok).save_pretrained(folder)
    return folder
