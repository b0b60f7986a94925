"""Tiny random BLIP retrieval models saved the way users have them (no pretrained weights here).

* :func:`build_blip_folder`: a ``save_pretrained`` folder (model + BERT tokenizer + BLIP image
  processor), what ``blip:Salesforce/blip-itm-base-coco`` downloads, in miniature;
* :func:`export_original_checkpoint`: the same weights renamed into the original salesforce/BLIP
  layout (``{"model": state_dict}``), what ChatIR's ``chatir_weights.ckpt`` is, in miniature.

Also a straightforward re-implementation of ChatIR's BLIP baseline (``baselines.py``) straight on
the transformers modules, independent of convir's encoder code, for the protocol tests.
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

from convir._compat import ensure_torchvision

ensure_torchvision()

_SENTENCES = (
    "a the is on in of and with what it there are yes no color colour red blue green white black",
    "dog cat man woman car bus tree sky water beach street table room people sitting standing",
    "how many where does do you see any one two three picture photo image",
)
WORDS = [w for line in _SENTENCES for w in line.split()]
IMAGE_SIZE = 32
PATCH = 16


def _vocab() -> list[str]:
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    return specials + chars + [f"##{c}" for c in string.ascii_lowercase + string.digits] + WORDS


def tiny_tokenizer() -> Any:
    """A real BERT WordPiece tokenizer over a small vocabulary, with BLIP's [DEC]/[ENC] tokens."""
    from transformers import BertTokenizerFast

    vocab = {token: i for i, token in enumerate(_vocab())}
    tok = BertTokenizerFast(vocab=vocab, do_lower_case=True, model_max_length=512)
    tok.add_special_tokens({"bos_token": "[DEC]", "additional_special_tokens": ["[ENC]"]})
    return tok


def tiny_config(
    vocab_size: int, image_size: int = IMAGE_SIZE, max_positions: int = 512, vit_eps: float = 1e-6
) -> Any:
    """A two-layer BLIP; ``vit_eps`` 1e-6 as salesforce/BLIP's ViT (transformers' default is 1e-5)."""
    from transformers import BlipConfig

    return BlipConfig(
        text_config=dict(
            vocab_size=vocab_size,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=max_positions,
            encoder_hidden_size=32,
            pad_token_id=0,
            bos_token_id=vocab_size - 2,
            sep_token_id=3,
        ),
        vision_config=dict(
            image_size=image_size,
            patch_size=PATCH,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            layer_norm_eps=vit_eps,
        ),
        image_text_hidden_size=16,
    )


def build_blip_folder(folder: Path, seed: int = 0, image_size: int = IMAGE_SIZE) -> Path:
    """Save a tiny random BlipForImageTextRetrieval + tokenizer + image processor to ``folder``."""
    import torch
    from transformers import BlipForImageTextRetrieval, BlipImageProcessor, BlipProcessor

    tok = tiny_tokenizer()
    torch.manual_seed(seed)
    model = BlipForImageTextRetrieval(tiny_config(len(tok), image_size)).eval()
    with torch.no_grad():
        # transformers initialises BLIP's ViT with std 1e-10 and the text side with 0.02: a random
        # two-layer model would give every input the same vector. Fan-in scaled weights, random
        # biases and layer-norm gains make outputs depend on the input (and a dropped bias show).
        for name, p in model.named_parameters():
            if "norm" in name.lower():
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.1 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.normal_(0, 0.1)
            elif p.dim() >= 2 and "embedding" not in name:
                p.normal_(0, p[0].numel() ** -0.5)
            else:
                p.normal_(0, 1.0)
    model.save_pretrained(folder)
    image_processor = BlipImageProcessor(size={"height": image_size, "width": image_size})
    BlipProcessor(image_processor=image_processor, tokenizer=tok).save_pretrained(folder)
    return folder


def export_original_checkpoint(folder: Path, out: Path, extra: bool = True) -> Path:
    """The folder's weights in salesforce/BLIP's layout, saved as BLIP saves them."""
    import torch
    from transformers import BlipForImageTextRetrieval

    from convir.encoders.blip_layout import hf_to_original

    model = BlipForImageTextRetrieval.from_pretrained(folder)
    state = hf_to_original(model.state_dict())
    if extra:  # what BLIP_Retrieval checkpoints carry besides the ITM weights
        state["temp"] = torch.tensor(0.07)
        state["visual_encoder_m.cls_token"] = state["visual_encoder.cls_token"].clone()
        state["text_encoder.embeddings.position_ids"] = torch.arange(512).expand((1, -1))
    torch.save({"model": state, "epoch": 3}, out)
    return out


# -- ChatIR's BLIP baseline, re-implemented on the bare transformers modules ------------------------
def official_transform(size: int) -> Any:
    """ChatIR's ``transform_test`` for BLIP (baselines.py), with torchvision."""
    from torchvision import transforms
    from torchvision.transforms.functional import InterpolationMode

    return transforms.Compose(
        [
            transforms.Resize((size, size), interpolation=InterpolationMode.BICUBIC),
            transforms.ToTensor(),
            transforms.Normalize((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
        ]
    )


def reference_blip(folder: Path, image_size: int | None = None) -> tuple[Any, Any]:
    """(dialog_encoder(list[str]) -> tensor, image_embedder(paths) -> tensor) as ChatIR's
    ``BLIP_BASELINE``: tokenizer(padding='longest', truncation=True, max_length=200), text CLS ->
    text_proj; Resize((s, s), bicubic) + ToTensor + Normalize(CLIP mean/std), ViT CLS -> vision_proj;
    both L2-normalised."""
    import torch
    import torch.nn.functional as F
    from PIL import Image
    from transformers import AutoTokenizer, BlipForImageTextRetrieval

    model = BlipForImageTextRetrieval.from_pretrained(folder).float().eval()
    tok = AutoTokenizer.from_pretrained(folder)
    size = image_size or model.config.vision_config.image_size
    transform = official_transform(size)

    @torch.no_grad()
    def dialog_encoder(texts: list[str]) -> torch.Tensor:
        t = tok(texts, padding="longest", truncation=True, max_length=200, return_tensors="pt")
        out = model.text_encoder(t.input_ids, attention_mask=t.attention_mask, return_dict=True)
        return F.normalize(model.text_proj(out.last_hidden_state[:, 0, :]), dim=-1)

    @torch.no_grad()
    def image_embedder(paths: list[Path]) -> torch.Tensor:
        pixels = torch.stack([transform(Image.open(p).convert("RGB")) for p in paths])
        out = model.vision_model(
            pixel_values=pixels, interpolate_pos_encoding=size != model.config.vision_config.image_size
        )
        return F.normalize(model.vision_proj(out.last_hidden_state[:, 0, :]), dim=-1)

    return dialog_encoder, image_embedder
