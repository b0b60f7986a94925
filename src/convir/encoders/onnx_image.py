"""``convir index --runtime onnx``: the image tower of an open_clip model on ONNX Runtime.

Why: indexing a photo folder needs only the image tower, and on a CPU most of a short run is
start-up (importing torch, torchvision, transformers and open_clip, building both towers),
not encoding. The first ``--runtime onnx`` run exports the image tower once (torch, the same
weights) to ``$CONVIR_CACHE/onnx/<key>/visual.onnx`` with the model's preprocessing recorded
beside it; every later run loads only onnxruntime, numpy and Pillow: a second or so of
start-up instead of several, and about half the memory (no text tower, no torch).

The vectors are the same model's, in the same space: the index records the usual
``open_clip:...`` spec and text queries use the torch text tower as always. The preprocessing
(shortest-side resize with the model's interpolation, centre crop, RGB, scale, normalise) is
re-done with Pillow and numpy exactly as open_clip's eval transform does it, so only float
rounding separates the two runtimes (about 1e-6; tests/encoders/test_onnx_image.py).
Models whose preprocessing is anything else (``resize_mode`` longest/squash) are refused.

``--runtime onnx-int8`` runs the same export with its MatMul/Gemm weights quantised to int8
per channel (ONNX Runtime's dynamic quantisation, made once beside the fp32 file): faster on a
CPU, at the price of slightly different image vectors (cosine to fp32 0.991 on average over
1,000 photos with a random ViT-B-32, see docs/index.md); text queries still run the fp32 torch
text tower.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from convir.encoders.base import ImageTextEncoder, l2_normalize
from convir.errors import ConvirError

RUNTIMES = ("torch", "onnx", "onnx-int8")
_META = "meta.json"
_MODEL = "visual.onnx"
_MODEL_INT8 = "visual.int8.onnx"
_FORMAT = 1  # bump when the export or the metadata changes
_INTERPOLATION = {"bicubic": 3, "bilinear": 2, "nearest": 0, "lanczos": 1}  # PIL.Image.Resampling


def check_runtime(runtime: str, spec: str | None) -> str:
    """Validate ``--runtime`` (and that it fits the encoder) without importing anything heavy."""
    name = (runtime or "torch").strip().lower()
    if name not in RUNTIMES:
        raise ConvirError(f"unknown --runtime {runtime!r}; choose one of: {', '.join(RUNTIMES)}")
    if name != "torch":
        if spec is None or not spec.startswith("open_clip:"):
            raise ConvirError(
                f"--runtime {name} runs the image tower of an open_clip encoder; give "
                "--encoder open_clip:ARCH[/PRETRAINED] (other encoders run on torch)"
            )
        try:
            import onnxruntime  # noqa: F401
        except ImportError as exc:
            raise ConvirError(
                f"--runtime {name} needs ONNX Runtime: pip install 'convir[onnx]' ({exc})"
            ) from exc
    return name


def _key(spec: str) -> str:
    """Cache key of a spec: the text, plus size and mtime of a checkpoint file it names."""
    parts = [spec, str(_FORMAT)]
    rest = spec.split(":", 1)[1]
    _arch, _, pretrained = rest.partition("/")
    path = Path(pretrained).expanduser() if pretrained else None
    if path is not None and path.is_file():
        st = path.stat()
        parts += [str(path.resolve()), str(st.st_size), str(st.st_mtime_ns)]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:20]


def export_dir(spec: str) -> Path:
    from convir.paths import cache_dir

    return cache_dir() / "onnx" / _key(spec)


def export_image_tower(spec: str, folder: Path) -> dict[str, Any]:
    """Export the image tower of ``spec`` (loaded with torch) into ``folder``; its metadata."""
    import torch

    from convir.atomic import write_json
    from convir.encoders import load_encoder

    encoder = load_encoder(spec)
    visual = encoder.model.visual.eval()
    cfg = dict(getattr(visual, "preprocess_cfg", {}) or {})
    if (
        cfg.get("resize_mode", "shortest") != "shortest"
        or cfg.get("interpolation", "bicubic") not in _INTERPOLATION
    ):
        raise ConvirError(
            f"--runtime onnx: {encoder.spec} preprocesses images with resize_mode="
            f"{cfg.get('resize_mode')!r}, interpolation={cfg.get('interpolation')!r}; only shortest-side "
            "resize + centre crop is reproduced outside torch. Use --runtime torch."
        )
    size = cfg.get("size", 224)
    size = (size, size) if isinstance(size, int) else tuple(size)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f"{_MODEL}.tmp-{os.getpid()}"
    dummy = torch.zeros(2, 3, *size, dtype=next(visual.parameters()).dtype)
    # grad enabled on purpose: without it nn.MultiheadAttention takes its fused fast path,
    # which has no ONNX export
    try:
        with torch.inference_mode(False), torch.enable_grad():
            _export(torch, visual, dummy, tmp)
    except Exception as exc:
        tmp.unlink(missing_ok=True)
        raise ConvirError(
            f"--runtime onnx: cannot export the image tower of {encoder.spec} ({type(exc).__name__}: "
            f"{' '.join(str(exc).split())[:200]}); use --runtime torch"
        ) from exc
    os.replace(tmp, folder / _MODEL)
    meta = {
        "format": _FORMAT,
        "spec": encoder.spec,
        "dim": int(encoder.dim),
        "size": list(size),
        "mean": [float(x) for x in cfg.get("mean", (0.48145466, 0.4578275, 0.40821073))],
        "std": [float(x) for x in cfg.get("std", (0.26862954, 0.26130258, 0.27577711))],
        "interpolation": cfg.get("interpolation", "bicubic"),
    }
    write_json(folder / _META, meta)  # written last: a folder with meta.json is complete
    return meta


def _export(torch: Any, visual: Any, dummy: Any, path: Path) -> None:
    import warnings

    with warnings.catch_warnings():  # the legacy exporter's deprecation and tracer notes are noise here
        warnings.simplefilter("ignore")
        _export_quiet(torch, visual, dummy, path)


def _export_quiet(torch: Any, visual: Any, dummy: Any, path: Path) -> None:
    torch.onnx.export(
        visual,
        (dummy,),
        str(path),
        input_names=["pixels"],
        output_names=["features"],
        dynamic_axes={"pixels": {0: "batch"}, "features": {0: "batch"}},
        opset_version=17,
        dynamo=False,  # the TorchScript exporter needs no onnxscript and handles open_clip's ViTs
    )


def quantize_image_tower(folder: Path) -> Path:
    """The int8 copy of ``folder``'s export (per-channel int8 MatMul/Gemm weights), made once."""
    target = folder / _MODEL_INT8
    if not target.is_file():
        from onnxruntime.quantization import QuantType, quantize_dynamic

        from convir.encoders.onnx import _publish, _quiet

        def write(tmp: Path) -> None:
            with _quiet("root", "onnxruntime"):  # "consider pre-processing": for static quantisation
                quantize_dynamic(
                    folder / _MODEL,
                    tmp,
                    per_channel=True,
                    weight_type=QuantType.QInt8,
                    op_types_to_quantize=["MatMul", "Gemm"],
                )

        _publish(target, write)
    return target


class OnnxImageEncoder(ImageTextEncoder):
    """The image tower on ONNX Runtime, with open_clip's eval preprocessing in Pillow + numpy
    (``int8``: the quantised copy of the export, see the module docstring).

    Text (for gallery items without an image) goes to the torch encoder, loaded only if needed."""

    supports_images = True

    def __init__(self, spec: str, threads: int | None = None, int8: bool = False) -> None:
        import onnxruntime as ort

        folder = export_dir(spec)
        if not (folder / _META).is_file():
            export_image_tower(spec, folder)
        model = quantize_image_tower(folder) if int8 else folder / _MODEL
        meta = json.loads((folder / _META).read_text())
        self.spec: str = meta["spec"]
        self.dim = int(meta["dim"])
        self.size = (int(meta["size"][0]), int(meta["size"][1]))  # (height, width)
        self.mean = np.asarray(meta["mean"], dtype=np.float32)
        self.std = np.asarray(meta["std"], dtype=np.float32)
        self.resample = _INTERPOLATION[meta["interpolation"]]
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads  # else ONNX Runtime's default: one per physical core
        # idle model threads must not spin: the decoding threads need those cores between batches
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
        self.long_text = "chunk"
        self._text: Any = None

    def prepare_image(self, image: Any) -> np.ndarray:
        """open_clip's eval transform: torchvision Resize(short side) + CenterCrop on the PIL
        image, then ToTensor and Normalize, computed the same way in numpy."""
        h, w = self.size
        width, height = image.size
        short, long = (width, height) if width <= height else (height, width)
        target = min(h, w)
        if short != target:  # torchvision leaves an image whose short side already fits alone
            new_long = int(target * long / short)
            new_w, new_h = (target, new_long) if width <= height else (new_long, target)
            image = image.resize((new_w, new_h), self.resample)
        width, height = image.size
        if width < w or height < h:  # torchvision pads before cropping (only for non-square sizes)
            from PIL import ImageOps

            pad_w, pad_h = max(0, w - width), max(0, h - height)
            image = ImageOps.expand(image, (pad_w // 2, pad_h // 2, (pad_w + 1) // 2, (pad_h + 1) // 2))
            width, height = image.size
        top, left = round((height - h) / 2.0), round((width - w) / 2.0)
        image = image.crop((left, top, left + w, top + h))
        if image.mode != "RGB":
            image = image.convert("RGB")
        pixels = np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / np.float32(255.0)
        return (pixels - self.mean[:, None, None]) / self.std[:, None, None]

    def encode_prepared(self, pixels: Sequence[np.ndarray]) -> np.ndarray:
        if not pixels:
            return np.zeros((0, self.dim), dtype=np.float32)
        (feats,) = self.session.run(None, {"pixels": np.stack(list(pixels)).astype(np.float32, copy=False)})
        return l2_normalize(feats)

    def encode_pil(self, images: Sequence[Any]) -> np.ndarray:
        return self.encode_prepared([self.prepare_image(img) for img in images])

    # -- text: the torch encoder, only when a gallery item has no image --------------------------
    def _torch(self) -> Any:
        if self._text is None:
            from convir.encoders import load_encoder

            self._text = load_encoder(self.spec)
        return self._text

    def encode_text(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        return self._torch().encode_text(texts, batch_size)


__all__ = [
    "RUNTIMES",
    "OnnxImageEncoder",
    "check_runtime",
    "export_dir",
    "export_image_tower",
    "quantize_image_tower",
]
