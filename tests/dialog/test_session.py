"""The one conversation builder (SessionSpec + build_conversation) and the component registry:
defaults, the needs-an-LLM rule, result counts and part lifetimes are the same for chat, the
service and eval (each case here was a drift between those three before they shared it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from convir.dialog.gallery import MemoryGallery
from convir.dialog.session import SessionSpec, build_conversation
from convir.dialog.state import DialogState
from convir.errors import ConvirError, SpecError
from convir.specs import REGISTRY, NeedsLLMError, Registry

CAPTIONS = [
    ["a red sailboat on the sea at sunset"],
    ["a dog running on a beach"],
    ["a rowboat on a calm lake"],
    ["a city street with a yellow bus"],
]


class NoLLM:
    """An LLM that must never be called (checks that a path does not need one)."""

    spec, instruct = "test:never", True

    def chat(self, messages: Any, params: Any = None) -> str:
        raise AssertionError("the LLM was called")

    complete = chat


@pytest.fixture(scope="module")
def gallery() -> MemoryGallery:
    from convir.encoders import load_encoder

    enc = load_encoder("caption:minilm")
    return MemoryGallery(
        [f"img{i}" for i in range(4)], CAPTIONS, enc.encode_text([c[0] for c in CAPTIONS]), enc
    )


# -- the registry ---------------------------------------------------------------------------------
def test_registry_names_docs_and_errors() -> None:
    assert list(REGISTRY.names("strategy")) == ["concat", "rewrite", "expand", "rerank"]
    assert REGISTRY.choices("questioner") == "plain | candidates | infogain | infogain-open | choice | none"
    assert "caption:..." in REGISTRY.choices("encoder")
    with pytest.raises(SpecError, match=r"unknown questioner 'candidatez' \(--questioner\); available:"):
        REGISTRY.parse("questioner", "candidatez")
    with pytest.raises(SpecError, match="takes no value"):
        REGISTRY.parse("strategy", "concat:x")
    comp, rest = REGISTRY.parse("llm", " llamacpp:smollm2 ")
    assert comp.name == "llamacpp" and rest == "smollm2" and comp.shared
    with pytest.raises(NeedsLLMError, match="needs an LLM"):
        REGISTRY.require_llm("strategy", "rewrite", False)
    REGISTRY.require_llm("strategy", "concat", False)


def test_registry_shares_models_once_and_builds_the_rest_fresh() -> None:
    reg = Registry()
    reg.family("thing", "--thing")
    reg.register("thing", "model", "a shared model", "builtins:list", takes_value=True, shared=True)
    reg.register("thing", "part", "a fresh part", "builtins:dict")
    a, b = reg.load("thing", "model:x"), reg.load("thing", "model:x")
    assert a is b and reg.load("thing", "model:y") is not a  # one per spec
    assert reg.load("thing", "part") is not reg.load("thing", "part")
    with pytest.raises(SpecError, match="do not take option"):
        reg.load("thing", "model:x", color="red")  # a value kind's options are checked


def test_registry_accepts_a_plugin_component(gallery: MemoryGallery) -> None:
    """A user registers a strategy once; every front end can then name it."""
    REGISTRY.register("strategy", "reverse-test", "test: concat, worst first", "tests_plugin:Reverse")
    try:
        import sys
        import types

        mod = types.ModuleType("tests_plugin")

        class Reverse:
            name = "reverse-test"

            def __init__(self, llm: Any = None) -> None:
                pass

            def query(self, state: DialogState) -> str:
                return ", ".join(state.turns)

            def rank(self, state: DialogState, gallery: Any, k: int) -> Any:
                from convir.dialog.strategies import Ranking

                pos, scores = gallery.rank_text(self.query(state), len(gallery.ids))
                return Ranking(pos[::-1][:k], scores[::-1][:k], self.query(state))

        mod.Reverse = Reverse  # type: ignore[attr-defined]
        sys.modules["tests_plugin"] = mod
        conv = build_conversation(SessionSpec(strategy="reverse-test"), gallery)
        res = conv.start("a red sailboat at sunset")
        assert gallery.ids[int(res.ranking.positions[-1])] == "img0"
    finally:
        del REGISTRY.families["strategy"].members["reverse-test"]


# -- the spec ------------------------------------------------------------------------------------
def test_defaults_are_the_same_everywhere() -> None:
    # the same default everywhere: plain with an LLM, infogain-open (no LLM needed) without
    assert SessionSpec().resolved().questioner == "infogain-open"
    assert SessionSpec(llm="llamacpp:smollm2").resolved().questioner == "plain"
    assert SessionSpec().resolved(have_llm=True).questioner == "plain"
    assert SessionSpec(strategy="rerank").resolved().reranker == "llm"
    assert SessionSpec(imagine="dar").resolved().generator == "text:"
    assert SessionSpec(imagine="refiner").resolved().images_per_turn == 1


def test_validate_rejects_every_bad_name_before_loading_anything() -> None:
    bad = [
        (SessionSpec(strategy="magic"), "unknown strategy 'magic'"),
        (SessionSpec(questioner="candidatez", llm="llamacpp:smollm2"), "unknown questioner"),
        (SessionSpec(answerer="oracle", llm="llamacpp:smollm2"), "unknown answerer"),
        (SessionSpec(llm="gpt:4"), "unknown llm 'gpt:4'"),
        (SessionSpec(strategy="rewrite"), "needs an LLM"),
        (SessionSpec(questioner="plain"), "needs an LLM"),
        (SessionSpec(strategy="rerank"), "needs an LLM"),
        (SessionSpec(reranker="cross:x"), "only applies to --strategy rerank"),
        (SessionSpec(mode="nonsense"), "unknown mode 'nonsense'"),
        (SessionSpec(imagine="dreams"), "unknown --imagine"),
        (SessionSpec(imagine="dar", generator="nope:x"), "unknown generator"),
        (SessionSpec(answerer="vlm"), "needs --vlm"),
        (SessionSpec(vlm="hf:x"), "only used by --answerer vlm"),
        (SessionSpec(k=0), "k \\(results per turn\\)"),
    ]
    for spec, message in bad:
        with pytest.raises(ConvirError, match=message):
            spec.validate()
    # a cross-encoder re-ranker needs no LLM
    assert (
        SessionSpec(strategy="rerank", reranker="cross:/some/folder").validate().reranker
        == "cross:/some/folder"
    )


def test_spec_round_trips_through_json() -> None:
    spec = SessionSpec(strategy="rewrite", llm="llamacpp:smollm2", imagine="dar", k=7).resolved()
    again = SessionSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again == spec
    # rows the service stored before the spec existed hold a subset of the keys
    old = {
        "strategy": "concat",
        "questioner": "none",
        "k": 8,
        "llm": None,
        "imagine": None,
        "generator": None,
    }
    assert SessionSpec.from_dict(old).k == 8
    with pytest.raises(ConvirError, match="unknown session setting"):
        SessionSpec.from_dict({"strategy": "concat", "questoner": "none"})


# -- the builder ----------------------------------------------------------------------------------
def test_refiner_shows_its_merged_list_whatever_k_says(gallery: MemoryGallery) -> None:
    # the 7 dialogue + 3 image results used to be cut to the service's k=8
    conv = build_conversation(SessionSpec(imagine="refiner", k=8), gallery)
    assert conv.k == 10
    assert build_conversation(SessionSpec(imagine="dar", k=8), gallery).k == 8
    assert build_conversation(SessionSpec(k=3), gallery).k == 3


def test_each_conversation_gets_its_own_parts(gallery: MemoryGallery) -> None:
    spec = SessionSpec(imagine="dar")
    a, b = build_conversation(spec, gallery), build_conversation(spec, gallery)
    assert a.imagination is not b.imagination and a.questioner is not b.questioner
    assert a.imagination.generator is b.imagination.generator  # the generator (a model) is shared


def test_a_generator_failure_stays_off_for_the_session_across_rebuilds(gallery: MemoryGallery) -> None:
    """The service rebuilds the conversation every turn; a generator that failed must not be
    retried (and fail again) on the next turn, nor switch imagination off for other sessions."""
    from convir.imagine.generators import GeneratorError

    calls: list[str] = []

    class Flaky:
        spec, makes_images, hits = "flaky:", True, 0

        @property
        def calls(self) -> int:
            return len(calls)

        def generate(self, prompt: str, seed: int = 0) -> Any:
            calls.append(prompt)
            raise GeneratorError("the GPU is gone")

    REGISTRY.register("generator", "flaky", "test: always fails", "tests_flaky:make", takes_value=True)
    import sys
    import types

    mod = types.ModuleType("tests_flaky")
    mod.make = lambda rest="", **_: Flaky()  # type: ignore[attr-defined]
    sys.modules["tests_flaky"] = mod
    try:
        spec = SessionSpec(imagine="dar", generator="flaky:")
        conv = build_conversation(spec, gallery)
        res = conv.start("a boat")
        assert not res.images and conv.state.imagination_off and len(calls) == 1
        saved = DialogState.from_dict(json.loads(json.dumps(conv.state.to_dict())))
        again = build_conversation(spec, gallery, state=saved)  # the next HTTP turn
        again.say("at sunset")
        assert len(calls) == 1  # not retried in this session
        other = build_conversation(spec, gallery)  # another session tries again
        other.start("a dog")
        assert len(calls) == 2
    finally:
        del REGISTRY.families["generator"].members["flaky"]


def test_start_saves_the_spec_with_the_state(gallery: MemoryGallery, tmp_path: Path) -> None:
    spec = SessionSpec(k=3)
    conv = build_conversation(spec, gallery)
    conv.start("a dog on a beach")
    conv.state.save(tmp_path / "s.json")
    loaded = DialogState.load(tmp_path / "s.json")
    assert SessionSpec.from_dict(loaded.spec) == spec.resolved()
    assert gallery.ids[int(conv.last.ranking.positions[0])] == "img1"


def test_state_from_before_typed_fields_loads() -> None:
    old = {
        "description": "a boat",
        "exchanges": [{"question": None, "answer": "at sunset"}],
        "rankings": [["img0"], ["img0"]],
        "queries": ["a boat", "a boat, at sunset"],
        "pending_question": None,
        "found": None,
        "meta": {"images": [[{"path": "", "prompt": "p"}], []], "image_feedback": ["red"]},
    }
    st = DialogState.from_dict(old)
    assert st.images == [[{"path": "", "prompt": "p"}], []] and st.image_feedback == ["red"]
    assert st.exchanges[0].skipped is False


def test_rank_text_is_the_one_text_query_rule(gallery: MemoryGallery) -> None:
    dense = gallery.rank_text("a dog on the beach", 4)
    vec = gallery.encoder.encode_text(["a dog on the beach"])[0]
    assert np.array_equal(dense[0], gallery.ranker.rank(vec, "a dog on the beach", 4, "dense")[0])
    bm25 = gallery.rank_text("dog beach", 2, "bm25")
    assert gallery.ids[int(bm25[0][0])] == "img1"
