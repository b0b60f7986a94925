"""Parameter names of original BLIP checkpoints (salesforce/BLIP, LAVIS) <-> transformers' BLIP.

ChatIR's released retriever (``chatir_weights.ckpt``) and Salesforce's own ``model_*_retrieval_*.pth``
files are state dicts of ``BLIP_ITM`` / ``BLIP_Retrieval`` (usually under the key ``"model"``).
transformers' :class:`BlipForImageTextRetrieval` holds the same tensors under other names, so a
checkpoint is loaded by renaming, nothing else:

original (BLIP / LAVIS)                           transformers (BlipForImageTextRetrieval)
visual_encoder.cls_token                          vision_model.embeddings.class_embedding
visual_encoder.pos_embed                          vision_model.embeddings.position_embedding
visual_encoder.patch_embed.proj.*                 vision_model.embeddings.patch_embedding.*
visual_encoder.blocks.{i}.norm1.*                 vision_model.encoder.layers.{i}.layer_norm1.*
visual_encoder.blocks.{i}.attn.qkv.*              vision_model.encoder.layers.{i}.self_attn.qkv.*
visual_encoder.blocks.{i}.attn.proj.*             vision_model.encoder.layers.{i}.self_attn.projection.*
visual_encoder.blocks.{i}.norm2.*                 vision_model.encoder.layers.{i}.layer_norm2.*
visual_encoder.blocks.{i}.mlp.fc1.* / fc2.*       vision_model.encoder.layers.{i}.mlp.fc1.* / fc2.*
visual_encoder.norm.*                             vision_model.post_layernorm.*
text_encoder.* (BERT of med.py)                   text_encoder.* (same names)
vision_proj.* / text_proj.* / itm_head.*          same names

Dropped on the way in: the momentum copies and queues of ``BLIP_Retrieval`` (``*_m.*``,
``temp``, ``*_queue``, ``ptr_queue``), a captioning ``text_decoder``, and the ``position_ids``
buffer. The ViT position embedding is resized with bicubic interpolation (``align_corners=False``,
class token kept) when the checkpoint was trained at another resolution, as BLIP's own
``load_checkpoint`` does. Pure tensor code (torch only), so the mapping is testable both ways.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

# (original, transformers) name templates: {i} = layer index, {p} = weight | bias, {rest} = any suffix.
NAME_PAIRS: tuple[tuple[str, str], ...] = (
    ("visual_encoder.cls_token", "vision_model.embeddings.class_embedding"),
    ("visual_encoder.pos_embed", "vision_model.embeddings.position_embedding"),
    ("visual_encoder.patch_embed.proj.{p}", "vision_model.embeddings.patch_embedding.{p}"),
    ("visual_encoder.blocks.{i}.norm1.{p}", "vision_model.encoder.layers.{i}.layer_norm1.{p}"),
    ("visual_encoder.blocks.{i}.attn.qkv.{p}", "vision_model.encoder.layers.{i}.self_attn.qkv.{p}"),
    ("visual_encoder.blocks.{i}.attn.proj.{p}", "vision_model.encoder.layers.{i}.self_attn.projection.{p}"),
    ("visual_encoder.blocks.{i}.norm2.{p}", "vision_model.encoder.layers.{i}.layer_norm2.{p}"),
    ("visual_encoder.blocks.{i}.mlp.fc1.{p}", "vision_model.encoder.layers.{i}.mlp.fc1.{p}"),
    ("visual_encoder.blocks.{i}.mlp.fc2.{p}", "vision_model.encoder.layers.{i}.mlp.fc2.{p}"),
    ("visual_encoder.norm.{p}", "vision_model.post_layernorm.{p}"),
    ("text_encoder.{rest}", "text_encoder.{rest}"),
    ("vision_proj.{p}", "vision_proj.{p}"),
    ("text_proj.{p}", "text_proj.{p}"),
    ("itm_head.{p}", "itm_head.{p}"),
)
# Parts of original checkpoints that the retrieval embeddings never use.
DROPPED = re.compile(
    r"^(visual_encoder_m|text_encoder_m|vision_proj_m|text_proj_m|text_decoder)\.|"
    r"^(temp|image_queue|text_queue|idx_queue|ptr_queue)$|"
    r"(^|\.)position_ids$"
)
# What ITC embeddings need; everything else (cross-attention, ITM head) may be absent.
OPTIONAL = re.compile(r"\.crossattention\.|^itm_head\.")
_GROUPS = {"{i}": r"(?P<i>\d+)", "{p}": r"(?P<p>weight|bias)", "{rest}": r"(?P<rest>.+)"}


def _compile(template: str) -> re.Pattern[str]:
    pattern = re.escape(template)
    for key, group in _GROUPS.items():
        pattern = pattern.replace(re.escape(key), group)
    return re.compile(f"^{pattern}$")


_FORWARD = tuple((_compile(o), h) for o, h in NAME_PAIRS)
_BACKWARD = tuple((_compile(h), o) for o, h in NAME_PAIRS)


def _rename(name: str, rules: tuple[tuple[re.Pattern[str], str], ...]) -> str | None:
    for pattern, template in rules:
        m = pattern.match(name)
        if m:
            out = template
            for key, value in m.groupdict().items():
                out = out.replace("{" + key + "}", value)
            return out
    return None


def original_name_to_hf(name: str) -> str | None:
    """transformers name of an original BLIP parameter (None: not part of the mapping)."""
    return _rename(name, _FORWARD)


def hf_name_to_original(name: str) -> str | None:
    """Original BLIP name of a transformers parameter (None: not part of the mapping)."""
    return _rename(name, _BACKWARD)


def unwrap_checkpoint(obj: Any) -> dict[str, Any]:
    """The state dict inside a checkpoint file: ``{"model": sd}`` (BLIP/LAVIS/ChatIR),
    ``{"state_dict": sd}``, or a bare state dict; a DDP ``module.`` prefix is removed."""
    if isinstance(obj, Mapping):
        for key in ("model", "state_dict", "module"):
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner and all(isinstance(k, str) for k in inner):
                obj = inner
                break
    if not isinstance(obj, Mapping):
        raise ValueError(f"expected a state dict (name -> tensor), got {type(obj).__name__}")
    out: dict[str, Any] = {}
    for key, value in obj.items():
        if not hasattr(value, "shape"):
            continue  # epoch counters, configs and other bookkeeping stored next to the weights
        name = str(key)
        out[name[len("module.") :] if name.startswith("module.") else name] = value
    return out


def resize_pos_embed(pos_embed: Any, grid: int) -> Any:
    """(1, 1 + g*g, d) ViT position embedding resized to ``grid`` x ``grid`` patches (bicubic)."""
    import torch

    n = int(pos_embed.shape[1]) - 1
    old = math.isqrt(n)
    if old * old != n:
        raise ValueError(f"position embedding with {n} patch positions is not a square grid")
    if old == grid:
        return pos_embed
    cls_tok, patches = pos_embed[:, :1], pos_embed[:, 1:]
    dim = int(pos_embed.shape[-1])
    patches = patches.reshape(1, old, old, dim).permute(0, 3, 1, 2).float()
    patches = torch.nn.functional.interpolate(patches, size=(grid, grid), mode="bicubic", align_corners=False)
    patches = patches.permute(0, 2, 3, 1).reshape(1, grid * grid, dim).to(pos_embed.dtype)
    return torch.cat([cls_tok, patches], dim=1)


def original_to_hf(state: Mapping[str, Any], grid: int | None = None) -> tuple[dict[str, Any], list[str]]:
    """(transformers state dict, names that are neither mapped nor known to be droppable).

    ``grid``: patches per side of the target model; the position embedding is resized to it.
    """
    out: dict[str, Any] = {}
    unknown: list[str] = []
    for name, tensor in state.items():
        if DROPPED.search(name):
            continue
        new = original_name_to_hf(name)
        if new is None:
            unknown.append(name)
            continue
        out[new] = tensor
    pos = "vision_model.embeddings.position_embedding"
    if grid is not None and pos in out:
        out[pos] = resize_pos_embed(out[pos], grid)
    return out, unknown


def hf_to_original(state: Mapping[str, Any]) -> dict[str, Any]:
    """The inverse renaming (transformers -> original layout); buffers are left out."""
    out: dict[str, Any] = {}
    for name, tensor in state.items():
        if DROPPED.search(name):
            continue
        old = hf_name_to_original(name)
        if old is None:
            raise ValueError(f"no original BLIP name for transformers parameter {name!r}")
        out[old] = tensor
    return out


def missing_required(expected: Mapping[str, Any], given: Mapping[str, Any]) -> list[str]:
    """transformers parameters the ITC embeddings need that ``given`` does not provide."""
    return sorted(n for n in expected if n not in given and not OPTIONAL.search(n) and not DROPPED.search(n))
