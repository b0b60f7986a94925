"""``blip:`` encoders through the real code, with tiny random BLIP models built from configs.

* the name mapping between salesforce/BLIP's layout and transformers' covers every parameter;
* a transformers BLIP exported to the original layout (inverse mapping) and loaded back through
  ``blip:CHECKPOINT`` gives the same embeddings as the model itself;
* those embeddings equal an independent forward pass written on the ORIGINAL tensors (BLIP's
  ViT and BERT ``mode='text'`` from the paper's code structure), so the transformers modules really
  compute what BLIP computes;
* resolution changes resize the position embedding as BLIP does; truncation is at max_length;
* a gallery indexed with ``blip:`` is searched by text and by image from the CLI.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from blip_helpers import build_blip_folder, export_original_checkpoint, official_transform, reference_blip
from conftest import make_image, run_cli
from convir.encoders import load_encoder
from convir.encoders.blip_layout import (
    NAME_PAIRS,
    hf_name_to_original,
    hf_to_original,
    original_name_to_hf,
    original_to_hf,
)
from convir.errors import SpecError

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
F = torch.nn.functional

TEXTS = ["a red dog on the beach", "two people sitting at a table", ""]


@pytest.fixture(scope="module")
def blip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_blip_folder(tmp_path_factory.mktemp("blip") / "model")


@pytest.fixture(scope="module")
def ckpt(blip_dir: Path) -> Path:
    return export_original_checkpoint(blip_dir, blip_dir.parent / "chatir_like.ckpt")


@pytest.fixture(scope="module")
def pictures(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    d = tmp_path_factory.mktemp("pics")
    colors = [(220, 20, 30), (20, 200, 40), (30, 40, 210), (240, 240, 240)]
    return [make_image(d / f"p{i}.png", c, size=(40 + 8 * i, 30)) for i, c in enumerate(colors)]


def _spec(ckpt: Path, blip_dir: Path, extra: str = "") -> str:
    return f"blip:{ckpt}?base={blip_dir}" + extra


# -- the mapping ---------------------------------------------------------------------------------
def test_mapping_covers_every_parameter_both_ways(blip_dir: Path) -> None:
    from transformers import BlipForImageTextRetrieval

    state = BlipForImageTextRetrieval.from_pretrained(blip_dir).state_dict()
    original = hf_to_original(state)
    assert len(original) == len(state)  # one original name per transformers parameter
    back, unknown = original_to_hf(original)
    assert unknown == [] and set(back) == set(state)
    assert all(hf_name_to_original(original_name_to_hf(k)) == k for k in original)  # type: ignore[arg-type]
    # names as salesforce/BLIP's modules spell them
    for name in (
        "visual_encoder.cls_token",
        "visual_encoder.pos_embed",
        "visual_encoder.patch_embed.proj.weight",
        "visual_encoder.blocks.1.attn.qkv.bias",
        "visual_encoder.blocks.0.attn.proj.weight",
        "visual_encoder.blocks.1.mlp.fc2.weight",
        "visual_encoder.norm.bias",
        "text_encoder.encoder.layer.1.crossattention.self.key.weight",
        "text_encoder.embeddings.LayerNorm.weight",
        "vision_proj.weight",
        "itm_head.bias",
    ):
        assert name in original, name
    assert len(NAME_PAIRS) == len({o for o, _ in NAME_PAIRS})


def test_unknown_and_dropped_names() -> None:
    _, unknown = original_to_hf({"visual_encoder_m.norm.weight": 0, "temp": 0, "foo.bar": 0})
    assert unknown == ["foo.bar"]
    assert original_name_to_hf("text_encoder_m.embeddings.LayerNorm.weight") is None
    with pytest.raises(ValueError, match="no original BLIP name"):
        hf_to_original({"vision_model.something_new": 0})


# -- loading a checkpoint in the original layout ---------------------------------------------------
def test_checkpoint_round_trip_gives_the_models_own_embeddings(
    blip_dir: Path, ckpt: Path, pictures: list[Path]
) -> None:
    folder = load_encoder(f"blip:{blip_dir}", long_text="truncate")
    loaded = load_encoder(_spec(ckpt, blip_dir), long_text="truncate")
    assert loaded.spec == f"blip:{ckpt.resolve()}?base={blip_dir.resolve()}"
    np.testing.assert_allclose(loaded.encode_text(TEXTS), folder.encode_text(TEXTS), atol=1e-6)
    np.testing.assert_allclose(loaded.encode_images(pictures), folder.encode_images(pictures), atol=1e-6)
    ref_text, ref_image = reference_blip(blip_dir)
    np.testing.assert_allclose(folder.encode_text(TEXTS), ref_text(TEXTS).numpy(), atol=1e-6)
    np.testing.assert_allclose(folder.encode_images(pictures), ref_image(pictures).numpy(), atol=1e-5)
    v = folder.encode_text(TEXTS)
    assert v.shape == (3, 16) and np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)


def _original_forward(state: dict[str, Any], ids: Any, mask: Any, pixels: Any, heads: int = 2) -> tuple:
    """BLIP's ITC embeddings computed directly on the ORIGINAL-layout tensors: the ViT of
    ``models/vit.py`` (pre-norm blocks, LayerNorm eps 1e-6) and the BERT of ``models/med.py`` in
    ``mode='text'`` (post-norm, no cross-attention, additive -10000 mask), CLS -> proj -> L2."""
    s = {k: v.float() for k, v in state.items()}

    def attend(q: Any, k: Any, v: Any, bias: Any = 0.0) -> Any:
        b, _, d = q.shape
        split = lambda t: t.reshape(b, -1, heads, d // heads).transpose(1, 2)  # noqa: E731
        q, k, v = split(q), split(k), split(v)
        att = (q @ k.transpose(-1, -2)) / math.sqrt(d // heads) + bias
        return (att.softmax(-1) @ v).transpose(1, 2).reshape(b, -1, d)

    # vision
    x = F.conv2d(
        pixels,
        s["visual_encoder.patch_embed.proj.weight"],
        s["visual_encoder.patch_embed.proj.bias"],
        stride=16,
    )
    x = x.flatten(2).transpose(1, 2)
    x = (
        torch.cat([s["visual_encoder.cls_token"].expand(x.shape[0], -1, -1), x], 1)
        + s["visual_encoder.pos_embed"]
    )
    d = x.shape[-1]
    i = 0
    while f"visual_encoder.blocks.{i}.norm1.weight" in s:
        p = f"visual_encoder.blocks.{i}."
        h = F.layer_norm(x, (d,), s[p + "norm1.weight"], s[p + "norm1.bias"], 1e-6)
        q, k, v = F.linear(h, s[p + "attn.qkv.weight"], s[p + "attn.qkv.bias"]).chunk(3, dim=-1)
        x = x + F.linear(attend(q, k, v), s[p + "attn.proj.weight"], s[p + "attn.proj.bias"])
        h = F.layer_norm(x, (d,), s[p + "norm2.weight"], s[p + "norm2.bias"], 1e-6)
        x = x + F.linear(
            F.gelu(F.linear(h, s[p + "mlp.fc1.weight"], s[p + "mlp.fc1.bias"])),
            s[p + "mlp.fc2.weight"],
            s[p + "mlp.fc2.bias"],
        )
        i += 1
    x = F.layer_norm(x, (d,), s["visual_encoder.norm.weight"], s["visual_encoder.norm.bias"], 1e-6)
    image = F.normalize(F.linear(x[:, 0], s["vision_proj.weight"], s["vision_proj.bias"]), dim=-1)
    # text
    e = "text_encoder.embeddings."
    t = s[e + "word_embeddings.weight"][ids] + s[e + "position_embeddings.weight"][: ids.shape[1]]
    d = t.shape[-1]
    t = F.layer_norm(t, (d,), s[e + "LayerNorm.weight"], s[e + "LayerNorm.bias"], 1e-12)
    bias = (1.0 - mask[:, None, None, :].float()) * -10000.0
    i = 0
    while f"text_encoder.encoder.layer.{i}.attention.self.query.weight" in s:
        p = f"text_encoder.encoder.layer.{i}."

        def lin(name: str, inp: Any, p: str = p) -> Any:
            return F.linear(inp, s[p + name + ".weight"], s[p + name + ".bias"])

        def norm(name: str, inp: Any, p: str = p) -> Any:
            return F.layer_norm(inp, (d,), s[p + name + ".weight"], s[p + name + ".bias"], 1e-12)

        q, k, v = (lin(f"attention.self.{n}", t) for n in ("query", "key", "value"))
        a = norm("attention.output.LayerNorm", lin("attention.output.dense", attend(q, k, v, bias)) + t)
        t = norm("output.LayerNorm", lin("output.dense", F.gelu(lin("intermediate.dense", a))) + a)
        i += 1
    text = F.normalize(F.linear(t[:, 0], s["text_proj.weight"], s["text_proj.bias"]), dim=-1)
    return text, image


def test_loaded_checkpoint_computes_what_the_original_code_computes(
    blip_dir: Path, ckpt: Path, pictures: list[Path]
) -> None:
    enc = load_encoder(_spec(ckpt, blip_dir), long_text="truncate")
    state = torch.load(ckpt, weights_only=True)["model"]
    batch = enc.tokenizer(TEXTS, padding="longest", truncation=True, max_length=200, return_tensors="pt")
    from PIL import Image

    transform = official_transform(32)
    pixels = torch.stack([transform(Image.open(p).convert("RGB")) for p in pictures])
    with torch.no_grad():
        text, image = _original_forward(state, batch.input_ids, batch.attention_mask, pixels)
    np.testing.assert_allclose(enc.encode_text(TEXTS), text.numpy(), atol=1e-5)
    np.testing.assert_allclose(enc.encode_images(pictures), image.numpy(), atol=1e-5)


def test_image_size_resizes_the_position_embedding_like_blip(
    blip_dir: Path, ckpt: Path, pictures: list[Path]
) -> None:
    enc = load_encoder(_spec(ckpt, blip_dir, "&image_size=48"))
    assert enc.image_processor.size == {"height": 48, "width": 48}
    assert enc.model.vision_model.embeddings.position_embedding.shape[1] == 1 + 3 * 3
    _, ref_image = reference_blip(blip_dir, image_size=48)  # transformers' own bicubic interpolation
    np.testing.assert_allclose(enc.encode_images(pictures), ref_image(pictures).numpy(), atol=1e-5)
    same = load_encoder(f"blip:{blip_dir}?image_size=48")
    np.testing.assert_allclose(same.encode_images(pictures), enc.encode_images(pictures), atol=1e-6)
    with pytest.raises(SpecError, match="multiple of the patch size"):
        load_encoder(_spec(ckpt, blip_dir, "&image_size=40"))


def test_truncation_at_max_length(blip_dir: Path) -> None:
    enc = load_encoder(f"blip:{blip_dir}", long_text="truncate")
    long = ", ".join(f"what color is the car number {i}? it is red" for i in range(30))
    ids = enc.tokenizer(long, add_special_tokens=False)["input_ids"]
    assert len(ids) > 300 and enc.max_tokens == 198
    head = enc.tokenizer.decode(ids[:198])
    np.testing.assert_allclose(enc.encode_text([long]), enc.encode_text([head]), atol=1e-6)
    assert not np.allclose(
        enc.encode_text([long]), enc.encode_text([enc.tokenizer.decode(ids[:150])]), atol=1e-4
    )
    short = load_encoder(f"blip:{blip_dir}?max_length=50", long_text="truncate")
    np.testing.assert_allclose(
        short.encode_text([long]), enc.encode_text([enc.tokenizer.decode(ids[:48])]), atol=1e-6
    )
    chunked = load_encoder(f"blip:{blip_dir}", long_text="chunk")
    assert not np.allclose(chunked.encode_text([long]), enc.encode_text([long]), atol=1e-4)


# -- mistakes are one clear line --------------------------------------------------------------------
def test_spec_mistakes(blip_dir: Path, ckpt: Path, tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="do not take option"):
        load_encoder(f"blip:{blip_dir}?imagesize=224")
    with pytest.raises(SpecError, match="positive integer"):
        load_encoder(f"blip:{blip_dir}?image_size=big")
    with pytest.raises(SpecError, match="base is for checkpoint files"):
        load_encoder(f"blip:{blip_dir}?base={blip_dir}")
    with pytest.raises(SpecError, match="not found"):
        load_encoder(f"blip:{tmp_path / 'nope.ckpt'}?base={blip_dir}")
    with pytest.raises(SpecError, match="use blip:"):
        load_encoder(f"hf:{blip_dir}")
    junk = tmp_path / "junk.pth"
    torch.save({"model": {"layer.weight": torch.zeros(2)}}, junk)
    with pytest.raises(SpecError, match="not an original-layout BLIP checkpoint"):
        load_encoder(f"blip:{junk}?base={blip_dir}")
    # a checkpoint of another size than its base
    bigger = build_blip_folder(tmp_path / "bigger", image_size=32)
    state = torch.load(ckpt, weights_only=True)["model"]
    state["vision_proj.weight"] = torch.zeros(8, 32)
    torch.save({"model": state}, tmp_path / "other.pth")
    with pytest.raises(SpecError, match="does not fit the architecture"):
        load_encoder(f"blip:{tmp_path / 'other.pth'}?base={bigger}")


def test_pickled_extras_need_explicit_trust(blip_dir: Path, ckpt: Path, tmp_path: Path) -> None:
    state = torch.load(ckpt, weights_only=True)["model"]
    path = tmp_path / "with_args.pth"
    torch.save({"model": state, "config": argparse.Namespace(lr=1e-5)}, path)
    with pytest.raises(SpecError, match="weights_only=0"):
        load_encoder(f"blip:{path}?base={blip_dir}")
    enc = load_encoder(f"blip:{path}?base={blip_dir}&weights_only=0")
    assert "weights_only" not in enc.spec and enc.dim == 16


# -- end to end: index a folder with blip: and search it ---------------------------------------------
def test_index_and_search_by_text_and_image(blip_dir: Path, ckpt: Path, tmp_path: Path) -> None:
    gallery = tmp_path / "gallery"
    for i, color in enumerate([(220, 20, 30), (20, 200, 40), (30, 40, 210)]):
        make_image(gallery / f"img{i}.png", color)
        # captions only for the BM25 side of the index (a caption-less folder trips bm25s today)
        (gallery / f"img{i}.txt").write_text(f"picture number {i}\n")
    spec = _spec(ckpt, blip_dir)
    res = run_cli("index", str(gallery), "--out", str(tmp_path / "ix"), "--encoder", spec, "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["added"] == 3
    res = run_cli("search", str(tmp_path / "ix"), "a red dog", "-k", "3", "--json")
    assert res.returncode == 0, res.stderr
    assert len(json.loads(res.stdout)["results"]) == 3
    res = run_cli("search", str(tmp_path / "ix"), "--image", str(gallery / "img1.png"), "-k", "1", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["results"][0]["id"] == "img1.png"  # an image is closest to itself
    help_text = run_cli("index", "--help").stdout
    assert "blip:" in help_text
