"""Real (un-mocked) CLIP/SigLIP encoders built from tiny random-weight configs.

No pretrained weights can be downloaded, so each test model is created from a config, saved the
way a user would save one (open_clip checkpoint / ``save_pretrained`` folder) and loaded back
through the production code path: spec parsing, loading, tokenisation, preprocessing, encoding.
Random weights make the vectors meaningless for search, but shapes, normalisation, determinism,
batching, long-text handling and error reporting are all exercised for real.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from convir._compat import ensure_torchvision
from convir.encoders import load_encoder, longtext
from convir.encoders.base import ImageReadError, encode_images_skipping, load_image
from convir.errors import SpecError
from convir.specs import REGISTRY

ensure_torchvision()
torch = pytest.importorskip("torch")
open_clip = pytest.importorskip("open_clip")
transformers = pytest.importorskip("transformers")

from clip_helpers import TINY_ARCH, TINY_OPEN_CLIP, _build_hf, _tiny_tokenizer  # noqa: E402
from convir.encoders.hf import HFEncoder  # noqa: E402
from convir.encoders.openclip import OpenClipEncoder  # noqa: E402

LONG_TEXT = " ".join(f"then the user said answer number {i} about the red car" for i in range(20))
GOOD = ["red.png", "red_copy.png", "pattern.png", "blue.jpg", "gray.png", "alpha.png"]


# -- fixtures -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A small gallery: readable images in several formats/modes plus every kind of bad file."""
    from PIL import Image

    d = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    red = Image.new("RGB", (48, 40), (220, 20, 30))
    red.save(d / "red.png")
    red.save(d / "red_copy.png")  # same pixels, different file
    pattern = (rng.random((40, 56, 3)) * 255).astype(np.uint8)
    Image.fromarray(pattern).save(d / "pattern.png")
    Image.new("RGB", (64, 64), (10, 40, 200)).save(d / "blue.jpg", quality=95)
    Image.fromarray(np.tile(np.arange(64, dtype=np.uint8) * 4, (32, 1))).save(d / "gray.png")  # mode L
    Image.new("RGBA", (30, 30), (0, 200, 0, 128)).save(d / "alpha.png")
    (d / "garbage.jpg").write_bytes(b"\x00\x01this is not a jpeg" * 50)
    (d / "notes.txt").write_text("hello, I am text")
    Image.fromarray(pattern).save(d / "big.jpg", quality=95)
    (d / "truncated.jpg").write_bytes((d / "big.jpg").read_bytes()[:400])
    paths = {p.name: p for p in d.iterdir()}
    paths["missing.png"] = d / "missing.png"
    return paths


@pytest.fixture(scope="module")
def open_clip_ckpt(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """Register a tiny architecture and save a checkpoint whose weights differ from seeded init."""
    d = tmp_path_factory.mktemp("open_clip")
    (d / f"{TINY_ARCH}.json").write_text(json.dumps(TINY_OPEN_CLIP))
    open_clip.add_model_config(d)
    torch.manual_seed(1234)
    model = open_clip.create_model(TINY_ARCH)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    ckpt = d / "tiny.pt"
    torch.save(state, ckpt)
    return ckpt, state


@pytest.fixture(scope="module")
def oc_encoder(open_clip_ckpt: tuple[Path, dict[str, Any]]) -> Iterator[OpenClipEncoder]:
    ckpt, _ = open_clip_ckpt
    REGISTRY.forget("encoder")
    enc = load_encoder(f"open_clip:{TINY_ARCH}/{ckpt}")
    assert isinstance(enc, OpenClipEncoder)
    yield enc
    REGISTRY.forget("encoder")


def _load_hf(folder: Path) -> HFEncoder:
    """Load through the registry, checking the hub is only switched off for local folders."""
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("HF_HUB_OFFLINE", raising=False)
        mp.delenv("TRANSFORMERS_OFFLINE", raising=False)
        REGISTRY.forget("encoder")
        enc = load_encoder(f"hf:{folder}")
        assert isinstance(enc, HFEncoder)
        import os

        assert os.environ.get("HF_HUB_OFFLINE") == "1"
    REGISTRY.forget("encoder")
    return enc


@pytest.fixture(scope="module")
def hf_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("hf_clip")
    _build_hf(folder, "clip")
    return folder


@pytest.fixture(scope="module")
def hf_clip(hf_clip_dir: Path) -> HFEncoder:
    return _load_hf(hf_clip_dir)


@pytest.fixture(scope="module")
def hf_siglip(tmp_path_factory: pytest.TempPathFactory) -> HFEncoder:
    folder = tmp_path_factory.mktemp("hf_siglip")
    _build_hf(folder, "siglip")
    return _load_hf(folder)


EXPECTED = {"oc_encoder": (16, 75), "hf_clip": (16, 75), "hf_siglip": (32, 62)}  # (dim, max_tokens)


@pytest.fixture(scope="module", params=list(EXPECTED))
def encoder(request: pytest.FixtureRequest) -> Any:
    return request.getfixturevalue(request.param)


def _unit(x: np.ndarray) -> bool:
    return bool(np.allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5))


# -- behaviour shared by every encoder ------------------------------------------------------------
def test_dims_and_normalisation(
    encoder: Any, images: dict[str, Path], request: pytest.FixtureRequest
) -> None:
    dim, max_tokens = EXPECTED[request.node.callspec.params["encoder"]]
    assert encoder.dim == dim and encoder.max_tokens == max_tokens and encoder.supports_images
    text = encoder.encode_text(["a red square", "a blue circle", ""])
    imgs = encoder.encode_images([images[n] for n in GOOD], batch_size=4)
    assert text.shape == (3, dim) and imgs.shape == (len(GOOD), dim)
    assert text.dtype == np.float32 and imgs.dtype == np.float32
    assert _unit(text) and _unit(imgs)
    assert encoder.encode_text([]).shape == (0, dim) and encoder.encode_images([]).shape == (0, dim)


def test_deterministic_and_batch_independent(encoder: Any, images: dict[str, Path]) -> None:
    texts = ["red car", "a much longer description of a small blue boat on a lake"]
    np.testing.assert_array_equal(encoder.encode_text(texts), encoder.encode_text(texts))
    # Padding must not leak into the pooled vector (SigLIP pools the last position).
    alone = encoder.encode_text(["red car"])[0]
    np.testing.assert_allclose(alone, encoder.encode_text(texts, batch_size=2)[0], atol=1e-5)
    paths = [images["pattern.png"], images["red.png"]]
    batched = encoder.encode_images(paths, batch_size=2)
    single = np.concatenate([encoder.encode_images([p]) for p in paths])
    np.testing.assert_allclose(batched, single, atol=1e-5)


def test_same_pixels_same_vector_different_pixels_differ(encoder: Any, images: dict[str, Path]) -> None:
    red, red_copy, pattern, blue = encoder.encode_images(
        [images["red.png"], images["red_copy.png"], images["pattern.png"], images["blue.jpg"]]
    )
    np.testing.assert_array_equal(red, red_copy)
    assert not np.allclose(red, pattern, atol=1e-4)
    assert not np.allclose(red, blue, atol=1e-4)
    a, b = encoder.encode_text(["red", "blue"])
    assert not np.allclose(a, b, atol=1e-4)


def test_long_text_policies(
    encoder: Any, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert encoder.count_tokens(LONG_TEXT) > encoder.max_tokens
    monkeypatch.setattr(encoder, "long_text", "truncate")
    longtext._warned.discard(encoder.spec)  # the warning is once per process and model
    with caplog.at_level(logging.WARNING, logger="convir"):
        truncated = encoder.encode_text([LONG_TEXT])
    assert any("truncated" in r.getMessage() and encoder.spec in r.getMessage() for r in caplog.records)
    monkeypatch.setattr(encoder, "long_text", "chunk")
    chunked = encoder.encode_text([LONG_TEXT, "short"])
    assert _unit(chunked) and not np.allclose(chunked[0], truncated[0], atol=1e-4)
    np.testing.assert_allclose(chunked[1], encoder.encode_text(["short"])[0], atol=1e-5)


def test_bad_images_raise_and_are_skipped(encoder: Any, images: dict[str, Path]) -> None:
    for bad in ("garbage.jpg", "notes.txt", "truncated.jpg", "missing.png"):
        with pytest.raises(ImageReadError) as info:
            encoder.encode_images([images["red.png"], images[bad]])
        assert info.value.path == images[bad] and info.value.reason
    names = ["red.png", "garbage.jpg", "missing.png", "pattern.png", "truncated.jpg", "notes.txt", "blue.jpg"]
    vecs, ok, failures = encoder.encode_images_safe([images[n] for n in names], batch_size=2)
    assert ok == [0, 3, 6] and [i for i, _ in failures] == [1, 2, 4, 5]
    assert "not found" in dict(failures)[2]
    good = encoder.encode_images([images["red.png"], images["pattern.png"], images["blue.jpg"]])
    np.testing.assert_allclose(vecs, good, atol=1e-5)


def test_text_and_image_share_the_space(encoder: Any, images: dict[str, Path]) -> None:
    text = encoder.encode_text(["a red square"])
    img = encoder.encode_images([images["red.png"]])
    assert text.shape[1] == img.shape[1] == encoder.dim
    assert -1.0 - 1e-5 <= float((text @ img.T)[0, 0]) <= 1.0 + 1e-5


# -- base helpers -----------------------------------------------------------------------------------
def test_load_image_and_generic_skipping_helper(images: dict[str, Path]) -> None:
    assert load_image(images["gray.png"]).mode == "RGB" and load_image(images["alpha.png"]).mode == "RGB"

    class PathsOnly:
        """An ImageEncoder without load_image/encode_pil: the helper falls back to encode_images."""

        spec, dim = "fake:paths", 3

        def encode_images(self, paths: list[Path], batch_size: int = 32) -> np.ndarray:
            return np.tile(np.eye(3, dtype=np.float32)[:1], (len(paths), 1))

    vecs, ok, failures = encode_images_skipping(
        PathsOnly(), [images["red.png"], images["garbage.jpg"], images["blue.jpg"]]
    )
    assert vecs.shape == (2, 3) and ok == [0, 2] and [i for i, _ in failures] == [1]


# -- open_clip specifics ----------------------------------------------------------------------------
def test_open_clip_spec_and_checkpoint_weights(
    oc_encoder: OpenClipEncoder, open_clip_ckpt: tuple[Path, dict[str, Any]]
) -> None:
    ckpt, state = open_clip_ckpt
    assert oc_encoder.spec == f"open_clip:{TINY_ARCH}/{ckpt}"
    loaded = oc_encoder.model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())


def test_open_clip_random_init_is_reproducible(open_clip_ckpt: tuple[Path, dict[str, Any]]) -> None:
    a = OpenClipEncoder(TINY_ARCH)
    b = OpenClipEncoder(f"{TINY_ARCH}/none")
    assert a.spec == b.spec == f"open_clip:{TINY_ARCH}"
    np.testing.assert_array_equal(a.encode_text(["same weights"]), b.encode_text(["same weights"]))


@pytest.mark.parametrize(
    ("rest", "needle"),
    [
        ("NoSuchArch-B-99/none", "ViT-B-32"),
        ("ViT-B-32/not-a-real-tag", "openai"),
        ("{arch}//no/such/checkpoint.pt", "not found"),
        ("{arch}/{bad_ckpt}", "cannot load"),
        ("", "architecture"),
        ("local-dir:/no/such/dir", "does not exist"),
    ],
)
def test_open_clip_bad_specs(
    rest: str, needle: str, open_clip_ckpt: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    bad_ckpt = tmp_path / "corrupt.pt"
    bad_ckpt.write_bytes(b"definitely not a torch checkpoint")
    with pytest.raises(SpecError, match=needle):
        OpenClipEncoder(rest.format(arch=TINY_ARCH, bad_ckpt=bad_ckpt))


# -- transformers specifics -------------------------------------------------------------------------
def test_hf_spec_and_family_conventions(hf_clip: HFEncoder, hf_siglip: HFEncoder, hf_clip_dir: Path) -> None:
    assert hf_clip.spec == f"hf:{hf_clip_dir.resolve()}"
    assert hf_clip._text_kwargs["padding"] == "longest"
    assert hf_siglip._text_kwargs["padding"] == "max_length" and hf_siglip._text_kwargs["max_length"] == 64


def test_hf_bad_specs(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="does not exist"):
        HFEncoder("/no/such/model/folder")
    with pytest.raises(SpecError, match="needs a model"):
        HFEncoder("")
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(SpecError, match="is a file"):
        HFEncoder(str(tmp_path / "weights.bin"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SpecError, match="cannot load"):
        HFEncoder(str(empty))


def test_hf_text_only_model_is_rejected(tmp_path: Path) -> None:
    from transformers import BertConfig, BertModel

    BertModel(
        BertConfig(
            vocab_size=50, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16
        )
    ).save_pretrained(tmp_path)
    _tiny_tokenizer().save_pretrained(tmp_path)
    with pytest.raises(SpecError, match="get_text_features"):
        HFEncoder(str(tmp_path))
