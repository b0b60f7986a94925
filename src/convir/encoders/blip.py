"""``blip:MODEL[?OPTIONS]``: BLIP retrieval embeddings (the ITC space ChatIR and PlugIR rank with).

MODEL is one of

* a transformers BLIP retrieval model: a hub id (``blip:Salesforce/blip-itm-base-coco``,
  ``blip:Salesforce/blip-itm-large-coco`` as PlugIR) or a folder written by ``save_pretrained``;
* an original-layout checkpoint file (``.pth``/``.ckpt``/``.pt`` from salesforce/BLIP or LAVIS, or
  ChatIR's released ``chatir_weights.ckpt``), renamed onto transformers'
  :class:`BlipForImageTextRetrieval` by the documented mapping in :mod:`convir.encoders.blip_layout`.
  The architecture, tokenizer and image processor come from ``base`` (default
  ``Salesforce/blip-itm-base-coco``, BLIP ViT-B; a folder works offline).

Embeddings are BLIP's image-text-contrastive ones, as in ChatIR's ``baselines.py``: the CLS token
of the unimodal text encoder through ``text_proj`` and the ViT's CLS token through ``vision_proj``,
L2-normalised. Text is tokenised with BLIP's BERT tokenizer, padded to the longest text and
truncated at ``max_length`` tokens (default 200, ChatIR's setting; BLIP's text model stops at 512).
Images are resized to ``image_size`` x ``image_size`` (bicubic, no crop) and normalised with CLIP's
mean/std, BLIP's own eval transform.

Options (``?key=value&...``):

* ``image_size``: pixels per side. Default: the model's processor (384 for the Salesforce
  retrieval models) or, for a checkpoint file, its trained resolution. ChatIR's evaluation builds
  ``blip_itm(image_size=224)``: pass ``image_size=224`` to reproduce it. A change resizes the
  position embedding (bicubic) as BLIP's ``load_checkpoint`` does.
* ``max_length``: text truncation in tokens, special tokens included (default 200).
* ``base``: (checkpoint files only) transformers BLIP model giving config/tokenizer/processor.
* ``weights_only``: ``0`` lets torch unpickle a checkpoint that holds more than tensors. Only for
  files you trust: unpickling can run code.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode

import numpy as np

from convir.encoders.base import LongTextPolicy, l2_normalize, resolve_device, torch_dtype
from convir.encoders.hf import HFEncoder, _resolve, offline_if_local
from convir.errors import SpecError
from convir.specs import check_options

if TYPE_CHECKING:
    import torch
    from PIL import Image

DEFAULT_BASE = "Salesforce/blip-itm-base-coco"
DEFAULT_MAX_LENGTH = 200  # ChatIR's baselines.py: tokenizer(..., truncation=True, max_length=200)
ORIGINAL_VIT_EPS = 1e-6  # salesforce/BLIP's VisionTransformer: partial(nn.LayerNorm, eps=1e-6)
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")
OPTIONS = ("base", "image_size", "max_length", "weights_only")
_EXAMPLE = "blip:Salesforce/blip-itm-base-coco or blip:/path/chatir_weights.ckpt?image_size=224"


def parse_blip(rest: str) -> tuple[str, dict[str, str]]:
    """``MODEL?key=value&...`` -> (MODEL, options); unknown or malformed options fail here."""
    model, _, query = rest.strip().partition("?")
    model = model.strip()
    if not model:
        raise SpecError(f"blip spec needs a model, e.g. {_EXAMPLE}")
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True) if query else []
    except ValueError as exc:
        raise SpecError(f"blip:{rest}: options are ?key=value&key=value ({exc})") from exc
    options = dict(pairs)
    check_options(options, OPTIONS, "blip encoders")
    for key in ("image_size", "max_length"):
        if key in options and not (options[key].isdigit() and int(options[key]) > 0):
            raise SpecError(f"blip option {key} must be a positive integer, got {options[key]!r}")
    if options.get("weights_only", "1") not in ("0", "1"):
        raise SpecError("blip option weights_only must be 0 or 1")
    return model, options


def _is_checkpoint(model: str) -> bool:
    path = Path(model).expanduser()
    return path.is_file() or (not path.exists() and path.suffix in CHECKPOINT_SUFFIXES)


def _read_checkpoint(path: Path, weights_only: bool) -> dict[str, Any]:
    import pickle

    import torch

    from convir.encoders.blip_layout import unwrap_checkpoint

    if not path.is_file():
        raise SpecError(f"BLIP checkpoint {path} not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=weights_only)
    except pickle.UnpicklingError as exc:
        raise SpecError(
            f"{path} holds more than tensors, which torch will not unpickle safely ({exc}). If you "
            f"trust the file, add ?weights_only=0 to the spec (unpickling can run code)"
        ) from exc
    except (RuntimeError, OSError, EOFError, ValueError) as exc:
        raise SpecError(f"cannot read BLIP checkpoint {path}: {type(exc).__name__}: {exc}") from exc
    try:
        return unwrap_checkpoint(obj)
    except ValueError as exc:
        raise SpecError(f"{path}: {exc}") from exc


def _set_image_size(model: Any, image_processor: Any, size: int) -> None:
    """Run the ViT at ``size`` px: resize its position embedding and the processor's output."""
    import torch

    from convir.encoders.blip_layout import resize_pos_embed

    emb = model.vision_model.embeddings
    patch = int(model.config.vision_config.patch_size)
    if size % patch:
        raise SpecError(f"blip image_size must be a multiple of the patch size {patch}, got {size}")
    grid = size // patch
    if grid * grid + 1 != emb.position_embedding.shape[1]:
        with torch.no_grad():
            emb.position_embedding = torch.nn.Parameter(resize_pos_embed(emb.position_embedding.data, grid))
    emb.image_size, emb.num_patches, emb.num_positions = size, grid * grid, grid * grid + 1
    model.config.vision_config.image_size = size
    image_processor.size = {"height": size, "width": size}


class BlipEncoder(HFEncoder):
    """BLIP ITC text/image embeddings through transformers' BlipForImageTextRetrieval."""

    supports_images = True

    def __init__(
        self, rest: str, long_text: LongTextPolicy = "chunk", device: str = "cpu", dtype: str = "auto"
    ) -> None:
        from convir._compat import ensure_torchvision

        ensure_torchvision()
        model_ref, options = parse_blip(rest)
        self.device = resolve_device(device)
        self.long_text = long_text
        dt = torch_dtype(dtype, self.device)
        if _is_checkpoint(model_ref):
            ckpt = Path(model_ref).expanduser().resolve()
            base, base_local = _resolve(options.get("base", DEFAULT_BASE))
            offline_if_local(base_local)
            canonical = {**options, "base": base}
            self.spec = "blip:" + str(ckpt)
            tokenizer, image_processor = self._blip_processing(base)
            model = self._from_checkpoint(ckpt, base, options.get("weights_only", "1") == "1")
        else:
            if "base" in options:
                raise SpecError("blip option base is for checkpoint files; a model folder has its own config")
            path, local = _resolve(model_ref)
            offline_if_local(local)
            canonical = dict(options)
            self.spec = "blip:" + path
            tokenizer, image_processor = self._blip_processing(path)
            model = self._from_pretrained(path, local)
        canonical.pop("weights_only", None)  # how to read the file, not what the encoder is
        if canonical:
            self.spec += "?" + urlencode(sorted(canonical.items()), safe="/:")
        # Default: the model's own resolution (its config; a checkpoint file's trained one).
        if "image_size" in options:
            _set_image_size(model, image_processor, int(options["image_size"]))
        if dt is not None:
            model = model.to(dt)
        max_length = int(options.get("max_length", DEFAULT_MAX_LENGTH))
        limit = int(model.config.text_config.max_position_embeddings)
        if max_length > limit:
            raise SpecError(f"blip max_length {max_length} exceeds the text model's {limit} positions")
        self._setup(model, tokenizer, image_processor, max_length, "longest")

    # -- loading ------------------------------------------------------------------------------
    def _blip_processing(self, path: str) -> tuple[Any, Any]:
        """BLIP's BERT tokenizer and image processor (read for its size, mean and std; the pixels
        themselves are made by :meth:`pixels`)."""
        from transformers import AutoTokenizer, BlipImageProcessor

        try:
            tokenizer = AutoTokenizer.from_pretrained(path)
            image_processor = BlipImageProcessor.from_pretrained(path)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SpecError(
                f"cannot load the BLIP tokenizer/image processor from {path}: {type(exc).__name__}: {exc}"
            ) from exc
        return tokenizer, image_processor

    def _from_pretrained(self, path: str, local: bool) -> Any:
        from transformers import BlipForImageTextRetrieval

        where = "local folder" if local else "hub id (needs network the first time)"
        try:
            model, info = BlipForImageTextRetrieval.from_pretrained(
                path, dtype="auto", output_loading_info=True
            )
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
            raise SpecError(f"cannot load {self.spec} as a {where}: {type(exc).__name__}: {exc}") from exc
        missing = [k for k in info.get("missing_keys", []) if k.split(".")[0] in ("vision_proj", "text_proj")]
        if missing:
            raise SpecError(
                f"{self.spec} has no BLIP retrieval projections ({', '.join(missing)}): it is not an "
                "image-text retrieval model; use e.g. Salesforce/blip-itm-base-coco"
            )
        return model.float() if self.device.startswith("cpu") else model

    def _from_checkpoint(self, ckpt: Path, base: str, weights_only: bool) -> Any:
        import torch
        from transformers import BlipConfig, BlipForImageTextRetrieval

        from convir.encoders.blip_layout import missing_required, original_to_hf

        state = _read_checkpoint(ckpt, weights_only)
        try:
            config = BlipConfig.from_pretrained(base)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SpecError(
                f"cannot load the BLIP config of base {base}: {type(exc).__name__}: {exc}"
            ) from exc
        pos = state.get("visual_encoder.pos_embed")
        if pos is None:
            raise SpecError(
                f"{ckpt} is not an original-layout BLIP checkpoint (no visual_encoder.pos_embed); "
                "a transformers model is a folder: blip:/path/to/folder"
            )
        trained = math.isqrt(int(pos.shape[1]) - 1) * int(config.vision_config.patch_size)
        config.vision_config.image_size = trained
        config.vision_config.layer_norm_eps = ORIGINAL_VIT_EPS
        with torch.device("meta"):
            model = BlipForImageTextRetrieval(config)
        mapped, unknown = original_to_hf(state)
        if unknown:
            raise SpecError(
                f"{ckpt}: {len(unknown)} parameters have no place in BLIP retrieval, e.g. "
                f"{', '.join(unknown[:3])}; is this a BLIP image-text checkpoint?"
            )
        expected = model.state_dict()
        missing = missing_required(expected, mapped)
        if missing:
            raise SpecError(f"{ckpt} lacks {len(missing)} BLIP parameters, e.g. {', '.join(missing[:3])}")
        wrong = [
            f"{n} {tuple(t.shape)} vs {tuple(expected[n].shape)}"
            for n, t in mapped.items()
            if n in expected and tuple(t.shape) != tuple(expected[n].shape)
        ]
        if wrong:
            raise SpecError(
                f"{ckpt} does not fit the architecture of base {base} ({wrong[0]}); pick the base of "
                "the same size (ViT-B: Salesforce/blip-itm-base-coco, ViT-L: Salesforce/blip-itm-large-coco)"
            )
        model.to_empty(device="cpu")
        model.float()
        # Optional parts the checkpoint lacks (cross-attention, ITM head) are unused by ITC embeddings;
        # they are zeroed rather than left as uninitialised memory.
        with torch.no_grad():
            for name, tensor in model.state_dict().items():
                if name not in mapped:
                    tensor.zero_()
        model.load_state_dict({k: v.float() for k, v in mapped.items()}, strict=False)
        if hasattr(model.text_encoder.embeddings, "position_ids"):
            n = int(config.text_config.max_position_embeddings)
            model.text_encoder.embeddings.position_ids = torch.arange(n).expand((1, -1))
        return model

    # -- ITC embeddings --------------------------------------------------------------------------
    def pixels(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """BLIP's eval transform, written out as ChatIR's ``transform_test``: PIL bicubic resize to
        ``size x size`` (no crop), ``ToTensor`` (/255), ``Normalize`` with the processor's mean/std.
        transformers' default BLIP processor resizes tensors with torch's bicubic kernel, which
        gives other pixels than PIL's; this stays with the official one."""
        import torch
        from PIL import Image as PILImage

        size = int(self.model.config.vision_config.image_size)
        mean = torch.tensor(self.image_processor.image_mean, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(self.image_processor.image_std, dtype=torch.float32).view(1, 3, 1, 1)
        batch = np.stack(
            [
                np.asarray(
                    img.convert("RGB").resize((size, size), PILImage.Resampling.BICUBIC), dtype=np.uint8
                )
                for img in images
            ]
        )
        x = torch.from_numpy(batch).permute(0, 3, 1, 2).float().div(255)
        return (x - mean) / std

    def encode_pil(self, images: Sequence[Image.Image]) -> np.ndarray:
        import torch

        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        pixels = self.pixels(images).to(self.device, self.model.dtype)
        with torch.inference_mode():
            feats = self._image_features({"pixel_values": pixels})
        return l2_normalize(feats.float().cpu().numpy())

    def _text_features(self, inputs: Any) -> torch.Tensor:
        out = self.model.text_encoder(
            input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], return_dict=True
        )
        return self.model.text_proj(out.last_hidden_state[:, 0, :])

    def _image_features(self, inputs: Any) -> torch.Tensor:
        out = self.model.vision_model(pixel_values=inputs["pixel_values"], return_dict=True)
        return self.model.vision_proj(out.last_hidden_state[:, 0, :])


__all__ = ["DEFAULT_BASE", "BlipEncoder", "parse_blip"]
