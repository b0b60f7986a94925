"""``--runtime onnx``: the exported image tower of a real tiny open_clip model, its Pillow/numpy
preprocessing against open_clip's own transform, the export cache and the option errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from convir._compat import ensure_torchvision
from convir.encoders.pipeline import EncodeSettings, encode_images_pipelined
from convir.errors import ConvirError

ensure_torchvision()
torch = pytest.importorskip("torch")
open_clip = pytest.importorskip("open_clip")
pytest.importorskip("onnxruntime")

from clip_helpers import TINY_ARCH, TINY_OPEN_CLIP  # noqa: E402
from convir.encoders.onnx_image import OnnxImageEncoder, check_runtime, export_dir  # noqa: E402
from convir.encoders.openclip import OpenClipEncoder  # noqa: E402

SPEC = f"open_clip:{TINY_ARCH}"


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("arch")
    (d / f"{TINY_ARCH}.json").write_text(json.dumps(TINY_OPEN_CLIP))
    open_clip.add_model_config(d)
    root = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CONVIR_CACHE", str(root))
        OnnxImageEncoder(SPEC)  # exports once for the module
    return root


@pytest.fixture()
def onnx_enc(cache: Path, monkeypatch: pytest.MonkeyPatch) -> OnnxImageEncoder:
    monkeypatch.setenv("CONVIR_CACHE", str(cache))
    return OnnxImageEncoder(SPEC)


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Odd sizes: taller, wider, smaller than the model's 32 px, exactly 32, grayscale, RGBA."""
    from PIL import Image

    d = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(5)
    out = []
    for i, (w, h, mode) in enumerate(
        [(45, 70, "RGB"), (91, 33, "RGB"), (20, 13, "RGB"), (32, 32, "RGB"), (50, 41, "L"), (37, 64, "RGBA")]
    ):
        arr = (rng.random((h, w, 4)) * 255).astype(np.uint8)
        img = Image.fromarray(arr, "RGBA").convert(mode)
        p = d / f"p{i}.png"
        img.save(p)
        out.append(p)
    return out


def test_preprocessing_matches_open_clips_transform(onnx_enc: OnnxImageEncoder, photos: list[Path]) -> None:
    torch_enc = OpenClipEncoder(TINY_ARCH)
    for p in photos:
        img = torch_enc.load_image(p)
        ours = onnx_enc.prepare_image(img)
        theirs = torch_enc.prepare_image(img).numpy()
        assert ours.shape == theirs.shape == (3, 32, 32)
        np.testing.assert_allclose(ours, theirs, atol=1e-6, err_msg=str(p))


def test_onnx_vectors_match_torch(onnx_enc: OnnxImageEncoder, photos: list[Path]) -> None:
    torch_enc = OpenClipEncoder(TINY_ARCH)
    want, ok_t, _ = encode_images_pipelined(torch_enc, photos, EncodeSettings(4))
    got, ok_o, _ = encode_images_pipelined(onnx_enc, photos, EncodeSettings(4))
    assert ok_t == ok_o == list(range(len(photos)))
    assert onnx_enc.spec == torch_enc.spec and onnx_enc.dim == torch_enc.dim
    np.testing.assert_allclose(got, want, atol=1e-5)
    # the text tower is the torch one, loaded on demand
    np.testing.assert_allclose(onnx_enc.encode_text(["a dog"]), torch_enc.encode_text(["a dog"]), atol=1e-6)


def test_int8_runtime_quantises_the_export_once(
    cache: Path, photos: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONVIR_CACHE", str(cache))
    fp32 = OnnxImageEncoder(SPEC)
    int8 = OnnxImageEncoder(SPEC, int8=True)
    quantised, fp32_file = export_dir(SPEC) / "visual.int8.onnx", export_dir(SPEC) / "visual.onnx"
    assert quantised.is_file() and quantised.stat().st_size < fp32_file.stat().st_size
    stamp = quantised.stat().st_mtime_ns
    OnnxImageEncoder(SPEC, int8=True)  # reused, not quantised again
    assert quantised.stat().st_mtime_ns == stamp
    want, _, _ = encode_images_pipelined(fp32, photos, EncodeSettings(4))
    got, ok, _ = encode_images_pipelined(int8, photos, EncodeSettings(4))
    assert ok == list(range(len(photos))) and int8.spec == fp32.spec
    cos = (got * want).sum(axis=1)
    assert not np.allclose(got, want, atol=1e-5)  # really the quantised model
    assert cos.min() > 0.9  # yet the same space (the tiny random model: ~0.99)


def test_export_is_cached_per_spec(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVIR_CACHE", str(cache))
    folder = export_dir(SPEC)
    assert folder.parent.parent == cache and (folder / "visual.onnx").is_file()
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["spec"] == SPEC and meta["size"] == [32, 32] and meta["dim"] == 16
    assert export_dir(SPEC) == folder and export_dir(f"{SPEC}/none") != folder


def test_index_with_onnx_runtime(cache: Path, photos: list[Path], tmp_path: Path, monkeypatch) -> None:
    from convir import ingest

    monkeypatch.setenv("CONVIR_CACHE", str(cache))
    gallery = photos[0].parent
    rep = ingest(gallery, tmp_path / "ix", SPEC, settings=EncodeSettings(runtime="onnx"))
    rep8 = ingest(gallery, tmp_path / "ix8", SPEC, settings=EncodeSettings(runtime="onnx-int8"))
    assert rep8.added == len(photos) and rep8.encoder == SPEC
    ref = ingest(gallery, tmp_path / "ref", SPEC, settings=EncodeSettings(runtime="torch"))
    assert rep.added == ref.added == len(photos) and rep.encoder == ref.encoder == SPEC


@pytest.mark.parametrize(
    "runtime,spec,match",
    [
        ("tensorrt", SPEC, "unknown --runtime 'tensorrt'"),
        ("onnx", "caption:minilm", "open_clip encoder"),
        ("onnx", None, "open_clip encoder"),
    ],
)
def test_runtime_errors_are_one_line(runtime: str, spec: str | None, match: str) -> None:
    with pytest.raises(ConvirError, match=match):
        check_runtime(runtime, spec)


def test_onnx_with_ray_or_a_caption_encoder_fails_before_loading(photos: list[Path], tmp_path: Path) -> None:
    from convir import ingest

    with pytest.raises(ConvirError, match="does not combine with --ray"):
        ingest(photos[0].parent, tmp_path / "a", SPEC, ray="local", settings=EncodeSettings(runtime="onnx"))
    with pytest.raises(ConvirError, match="open_clip encoder"):
        ingest(photos[0].parent, tmp_path / "b", "caption:minilm", settings=EncodeSettings(runtime="onnx"))
    with pytest.raises(ConvirError, match="unknown --runtime"):
        EncodeSettings(runtime="gpu").validate()
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
