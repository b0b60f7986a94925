"""Re-rankers of the ``rerank`` strategy: a tiny random-weight BERT cross-encoder through the real
transformers code path, and the listwise LLM re-ranker's parsing with a scripted LLM."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import GALLERY, make_image, run_cli
from convir.dialog.gallery import MemoryGallery
from convir.dialog.rerankers import (
    CrossEncoderReranker,
    LLMListwiseReranker,
    LLMPointwiseReranker,
    load_reranker,
    parse_permutation,
)
from convir.dialog.state import DialogState, Exchange
from convir.dialog.strategies import RerankStrategy, load_strategy, query_for_turns
from convir.encoders import load_encoder
from convir.errors import ConvirError, SpecError
from convir.llm.base import GenParams, LLMError

CAPTIONS = [
    ["a red sailboat on the sea at sunset"],
    ["a white sailboat on the sea on a sunny day"],
    ["a rowboat on a lake at sunset"],
    ["a brown dog running on a beach"],
    ["a black cat sleeping on a red sofa"],
    ["a yellow bus on a city street"],
]
WORDS = sorted(
    {w for c in CAPTIONS for w in c[0].split()} | {"boat", "water", "is", "it", "day", "or", "night"}
)


class ScriptedLLM:
    """Replies by prompt content and records the prompts; for parsing logic only."""

    spec = "scripted:test"

    def __init__(self, reply: str, instruct: bool = True, fail: bool = False) -> None:
        self.reply, self.instruct, self.fail = reply, instruct, fail
        self.prompts: list[str] = []

    def chat(self, messages: list[dict[str, str]], params: GenParams | None = None) -> str:
        self.prompts.append("\n".join(m["content"] for m in messages))
        if self.fail:
            raise LLMError("server down")
        return self.reply

    def complete(self, prompt: str, params: GenParams | None = None) -> str:
        self.prompts.append(prompt)
        return self.reply


@pytest.fixture(scope="module")
def gallery() -> MemoryGallery:
    enc = load_encoder("caption:minilm")
    vecs = enc.encode_text([c[0] for c in CAPTIONS])
    return MemoryGallery([f"img{i}" for i in range(len(CAPTIONS))], CAPTIONS, vecs, enc)


def _save_cross(folder: Path, num_labels: int = 1) -> Path:
    from convir._compat import ensure_torchvision

    ensure_torchvision()
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    tok = BertTokenizer(vocab={w: i for i, w in enumerate(vocab)})
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=num_labels,
        initializer_range=0.5,  # large random weights: clearly different scores per pair
    )
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def cross_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("transformers")
    return _save_cross(tmp_path_factory.mktemp("tiny-cross"))


def _state() -> DialogState:
    return DialogState("a boat on the water", [Exchange("is it day or night", "sunset")])


# -- cross-encoder ---------------------------------------------------------------------------------
def test_cross_encoder_scores_every_candidate_and_orders_by_them(
    cross_dir: Path, gallery: MemoryGallery
) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    rr = load_reranker(f"cross:{cross_dir}")
    assert isinstance(rr, CrossEncoderReranker) and rr.spec == f"cross:{cross_dir.resolve()}"
    assert load_reranker(f"cross:{cross_dir}") is rr  # loaded once per process
    query = "a boat on the water, is it day or night? sunset"
    caps = [c[0] for c in CAPTIONS]
    scores = rr.score(query, caps)
    assert scores is not None and len(scores) == len(caps) and all(0 < s < 1 for s in scores)
    assert len(set(np.round(scores, 6))) == len(caps)
    # the same numbers as the model applied to each pair on its own (batch padding changes nothing)
    tok = AutoTokenizer.from_pretrained(cross_dir)
    model = AutoModelForSequenceClassification.from_pretrained(cross_dir).eval()
    with torch.inference_mode():
        single = [
            float(torch.sigmoid(model(**tok(query, c, return_tensors="pt")).logits[0, 0])) for c in caps
        ]
    assert np.allclose(scores, single, atol=1e-5)

    strat = RerankStrategy(None, rerank_k=5, reranker=rr)  # no LLM: concatenated dialogue
    r = strat.rank(_state(), gallery, 6)
    assert r.query == query and r.info["reranker"] == "cross" and r.info["reranked"] == 5
    first_pos, _ = gallery.ranker.rank(gallery.encoder.encode_text([query])[0], query, 100, "hybrid")
    first5 = [int(p) for p in first_pos[:5]]
    rel = r.info["relevance"]
    assert len(rel) == 5 and np.allclose(rel, rr.score(query, [CAPTIONS[p][0] for p in first5]))
    expected = [first5[i] for i in np.argsort(-np.asarray(rel), kind="stable")]
    assert [int(p) for p in r.positions[:5]] == expected  # order follows the cross-encoder alone
    assert np.all(np.diff(r.scores[:5]) <= 0)
    assert sorted(int(p) for p in r.positions) == list(range(6))
    assert query_for_turns(strat, ["a boat", "sunset"]) == "a boat, sunset"


def test_cross_encoder_load_errors(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="does not exist"):
        load_reranker("cross:/nonexistent/cross-encoder")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SpecError, match="cannot load"):
        load_reranker(f"cross:{tmp_path / 'empty'}")
    three = _save_cross(tmp_path / "nli", num_labels=3)
    with pytest.raises(SpecError, match="3 output labels"):
        CrossEncoderReranker(str(three))


def test_load_strategy_reranker_wiring(cross_dir: Path) -> None:
    llm = ScriptedLLM("1")
    assert isinstance(load_strategy("rerank", llm).reranker, LLMPointwiseReranker)
    listwise = load_strategy("rerank", llm, reranker="llm-list")
    assert isinstance(listwise.reranker, LLMListwiseReranker) and listwise.llm_weight == 1.0
    assert load_strategy("rerank", llm, reranker="llm").llm_weight == 0.5
    cross = load_strategy("rerank", None, reranker=f"cross:{cross_dir}")
    assert cross.reranker.name == "cross" and cross.rewriter is None
    with pytest.raises(ConvirError, match="needs an LLM"):
        load_strategy("rerank")
    with pytest.raises(ConvirError, match="needs an LLM"):
        load_strategy("rerank", reranker="llm-list")
    with pytest.raises(ConvirError, match="only applies to --strategy rerank"):
        load_strategy("rewrite", llm, reranker="llm-list")
    with pytest.raises(ConvirError, match="unknown reranker 'bm25'"):
        load_strategy("rerank", llm, reranker="bm25")


# -- listwise LLM ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("reply", "n", "order"),
    [
        ("3 > 1 > 2", 3, [2, 0, 1]),
        ("Ranking: [2] > [3] > [1]", 3, [1, 2, 0]),
        ("2, 2, 7, 1", 3, [1, 0, 2]),  # repeat counted once, out of range ignored
        ("3", 4, [2, 0, 1, 3]),  # unmentioned keep their first-stage order
        ("10 > 2", 10, [9, 1, 0, 2, 3, 4, 5, 6, 7, 8]),
        ("0 > 4", 3, None),
        ("the first one", 3, None),
        ("", 3, None),
    ],
)
def test_parse_permutation(reply: str, n: int, order: list[int] | None) -> None:
    assert parse_permutation(reply, n) == order


def test_listwise_reranker_applies_the_llm_order(gallery: MemoryGallery) -> None:
    llm = ScriptedLLM("3 > 1")
    strat = RerankStrategy(llm, rerank_k=4, reranker=LLMListwiseReranker(llm))
    st = DialogState("a boat at sunset")  # no exchanges: no rewrite call
    r = strat.rank(st, gallery, 6)
    first_pos, _ = gallery.ranker.rank(
        gallery.encoder.encode_text([st.description])[0], st.description, 100, "hybrid"
    )
    f = [int(p) for p in first_pos[:4]]
    assert [int(p) for p in r.positions[:4]] == [f[2], f[0], f[1], f[3]]
    (prompt,) = llm.prompts
    for i, p in enumerate(f, 1):
        assert f"[{i}] {CAPTIONS[p][0]}" in prompt
    assert "Query: a boat at sunset" in prompt and r.info["relevance"] == [0.75, 0.5, 1.0, 0.25]

    for bad in (ScriptedLLM("no idea"), ScriptedLLM("", fail=True)):  # keep the first-stage order
        r = RerankStrategy(bad, rerank_k=4, reranker=LLMListwiseReranker(bad)).rank(st, gallery, 6)
        assert [int(p) for p in r.positions[:4]] == f and r.info["relevance"] is None


def test_listwise_fewshot_prompt_for_base_models(gallery: MemoryGallery) -> None:
    base = ScriptedLLM(" 2 > 1", instruct=False)
    order = LLMListwiseReranker(base).order("a red boat", ["a dog", "a red sailboat", "a cat"])
    assert order == [1, 0, 2]
    assert (
        base.prompts[0].rstrip().endswith("[3] a cat\nRanking:") and "Ranking: 2 > 3 > 1" in base.prompts[0]
    )


# -- CLI: chat with the cross-encoder, and inline previews --------------------------------------------
def test_chat_cli_cross_reranker_and_previews(cross_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "g"
    for rel, (color, caps) in GALLERY.items():
        make_image(root / rel, color).with_suffix(".txt").write_text("\n".join(caps))
    assert run_cli("index", str(root), "--out", str(tmp_path / "ix")).returncode == 0

    env = {k: v for k, v in os.environ.items() if k not in ("KITTY_WINDOW_ID", "TERM_PROGRAM", "LC_TERMINAL")}
    env["TERM"] = "xterm-256color"  # a plain terminal type: half blocks, never graphics protocols

    def chat(*extra: str) -> Any:
        return subprocess.run(
            [sys.executable, "-m", "convir.cli", "chat", str(tmp_path / "ix"),
             "--save", str(tmp_path / "s.json"), "--overwrite",
             "--strategy", "rerank", "--reranker", f"cross:{cross_dir}", *extra],
            input="a boat on the water\n/quit\n", capture_output=True, text=True, timeout=300, env=env,
        )  # fmt: skip

    on = chat("--previews", "on")
    assert on.returncode == 0, on.stderr
    assert "strategy rerank" in on.stdout and "beach/boat.png" in on.stdout
    # not a terminal, but asked for: true-colour half blocks of the top 3 under their labels
    assert on.stdout.count("\x1b[38;2;") > 10 and "▀" in on.stdout and "#1 " in on.stdout
    auto = chat()  # auto: stdout is a pipe here, so no pictures
    assert auto.returncode == 0 and "▀" not in auto.stdout and "\x1b_G" not in auto.stdout
    bad = chat("--previews", "sometimes")
    assert bad.returncode == 2 and "unknown --previews" in bad.stderr
