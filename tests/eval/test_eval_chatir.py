"""``convir eval chatir`` against a straightforward re-implementation of the official procedure.

The reference below is written from ChatIR's ``eval.py`` + ``baselines.py`` (BLIP baseline) and
PlugIR's ``eval.py``, on bare torch/transformers calls, sharing no code with convir's encoders or
metrics: query = ", ".join(dialog[:t+1]) (or dialog[t]), BLIP tokenizer truncated at 200 tokens,
text CLS -> text_proj -> L2, scores = query @ corpus.T, ``torch.argsort(descending=True)``, the
target's position, first hitting time for Hits@K; PlugIR's Recall@K and BRI.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from blip_helpers import build_blip_folder, reference_blip
from chatir_helpers import make_chatir
from conftest import run_cli
from convir.errors import ConvirError
from convir.eval.chatir import Protocol, rank_block

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("chatir_bench")
    paths = make_chatir(root)
    model = build_blip_folder(root / "blip")
    text_enc, image_enc = reference_blip(model)
    space = json.loads(paths["space"].read_text())
    vectors = image_enc([paths["images"] / p for p in space])
    # the official cache: (ids, vectors) saved with torch, rows shuffled here to prove order is by id
    perm = torch.randperm(len(space), generator=torch.Generator().manual_seed(0))
    torch.save((torch.arange(len(space))[perm], vectors[perm]), root / "corpus_blip.pth")
    return {**paths, "root": root, "model": model, "text": text_enc, "vectors": vectors, "space": space}


def official_ranks(bench: dict[str, Any], name: str, per_turn: bool = False, rounds: int = 10) -> np.ndarray:
    """(n_dialogues, rounds + 1) 1-based ranks as the official loops compute them."""
    records = json.loads((bench["data"] / f"{name}.json").read_text())
    path2id = {p: i for i, p in enumerate(bench["space"])}
    target_ids = torch.tensor([path2id[r["img"]] for r in records]).unsqueeze(1)
    out = []
    for dl in range(rounds + 1):
        if per_turn:  # PlugIR --split
            texts = [r["dialog"][dl] for r in records]
        else:
            texts = [", ".join(r["dialog"][: dl + 1]) for r in records]
        pred = torch.nn.functional.normalize(bench["text"](texts), dim=-1)
        scores = pred @ bench["vectors"].T
        arg_ranks = torch.argsort(scores, descending=True, dim=1).long()
        out.append(((arg_ranks - target_ids) == 0).nonzero()[:, 1] + 1)
    return torch.stack(out, dim=1).numpy()


def official_hits(ranks: np.ndarray, k: int) -> list[float]:
    """ChatIR's cumulative_hits_per_round: first hitting time < inf at each round, as a fraction."""
    n, rounds = ranks.shape
    first = np.full(n, np.inf)
    out = []
    for t in range(rounds):
        hit = ranks[:, t] - 1 < k
        first[hit] = np.minimum(first[hit], t)
        out.append(float(np.mean(first < np.inf)))
    return out


def plugir_recall_and_bri(ranks: np.ndarray, k: int) -> tuple[list[float], float]:
    zero_based = ranks - 1
    recall = [float(np.mean(zero_based[:, t] < k)) for t in range(ranks.shape[1])]
    best = np.minimum.accumulate(zero_based, axis=1).astype(float)
    rounds = ranks.shape[1]
    bri = sum(((np.log(best[:, t] + 1) + np.log(best[:, t + 1] + 1)) / 2).mean() for t in range(rounds - 1))
    return recall, float(bri / (rounds - 1))


def _eval(bench: dict[str, Any], out: Path, *args: str, name: str = "ChatGPT_BLIP2") -> dict[str, Any]:
    res = run_cli(
        "eval",
        "chatir",
        "--dialogues",
        str(bench["data"] / f"{name}.json"),
        "--corpus-embeddings",
        str(bench["root"] / "corpus_blip.pth"),
        "--text-encoder",
        f"blip:{bench['model']}",
        "--split",
        "all",
        "--out",
        str(out),
        "--json",
        *args,
    )
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    report = json.loads((out / "report.json").read_text())
    return {"metrics": json.loads(res.stdout)["metrics"], "report": report}


def _ranks(report: dict[str, Any], n: int) -> np.ndarray:
    return np.asarray([report["per_target"][str(i)] for i in range(n)])


def test_ranks_equal_the_official_procedure_at_every_turn(bench: dict[str, Any], tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(bench["model"])
    records = json.loads((bench["data"] / "ChatGPT_BLIP2.json").read_text())
    longest = max(len(tok(", ".join(r["dialog"]))["input_ids"]) for r in records)
    assert longest > 200  # the last turns are truncated: the case where convir used to differ

    got = _eval(bench, tmp_path / "run", "--k", "1", "--k", "5", "--k", "10")
    ref = official_ranks(bench, "ChatGPT_BLIP2")
    np.testing.assert_array_equal(_ranks(got["report"], len(records)), ref)
    for k in (1, 5, 10):
        np.testing.assert_allclose(got["metrics"][f"hits@{k}"], official_hits(ref, k))
        recall, bri = plugir_recall_and_bri(ref, k)
        np.testing.assert_allclose(got["metrics"][f"recall@{k}"], recall)
    np.testing.assert_allclose(got["metrics"]["bri"], bri)
    assert got["report"]["protocol"]["long_text"] == "truncate" and "ties" in got["report"]["protocol"]

    chunked = _eval(bench, tmp_path / "chunk", "--long-text", "chunk")
    assert not np.array_equal(_ranks(chunked["report"], len(records)), ref)  # the option is real
    # turns whose query fits in 200 tokens do not depend on the policy
    np.testing.assert_array_equal(_ranks(chunked["report"], len(records))[:, :3], ref[:, :3])


def test_per_turn_queries_and_rounds(bench: dict[str, Any], tmp_path: Path) -> None:
    got = _eval(
        bench, tmp_path / "pt", "--query", "per-turn", "--rounds", "4", "--k", "3", name="Human_BLIP2"
    )
    ref = official_ranks(bench, "Human_BLIP2", per_turn=True, rounds=4)
    np.testing.assert_array_equal(_ranks(got["report"], ref.shape[0]), ref)
    assert set(got["metrics"]) == {"hits@3", "recall@3", "mrr", "bri"}
    assert len(got["metrics"]["hits@3"]) == 5
    np.testing.assert_allclose(got["metrics"]["hits@3"], official_hits(ref, 3))


def test_numpy_corpus(bench: dict[str, Any], tmp_path: Path) -> None:
    np.save(bench["root"] / "corpus_blip.npy", bench["vectors"].numpy())
    name = "FLAN_ALPACA_XXL_BLIP2"
    res = run_cli(
        "eval",
        "chatir",
        "--dialogues",
        str(bench["data"] / f"{name}.json"),
        "--corpus-embeddings",
        str(bench["root"] / "corpus_blip.npy"),
        "--text-encoder",
        f"blip:{bench['model']}",
        "--split",
        "all",
        "--out",
        str(tmp_path / name),
    )
    assert res.returncode == 0, res.stderr
    assert "Hits@10" in res.stdout  # the readable report
    report = json.loads((tmp_path / name / "report.json").read_text())
    ref = official_ranks(bench, name)
    np.testing.assert_array_equal(_ranks(report, ref.shape[0]), ref)


def test_dar_variant_runs_offline_and_changes_the_query(bench: dict[str, Any], tmp_path: Path) -> None:
    got = _eval(bench, tmp_path / "dar", "--imagine", "dar", "--generator", "text:", "--rounds", "2")
    report = got["report"]
    assert report["imagination"]["imagine"] == "dar" and report["imagination"]["active"]
    line = json.loads((tmp_path / "dar" / "targets.jsonl").read_text().splitlines()[0])
    assert len(line["extra"]["turns"]) == 3 and len(line["extra"]["turns"][0]["prompts"]) == 3
    plain = official_ranks(bench, "ChatGPT_BLIP2", rounds=2)
    assert not np.array_equal(_ranks(report, plain.shape[0]), plain)


def test_official_cache_mistakes_are_clear(bench: dict[str, Any], tmp_path: Path) -> None:
    from convir.eval import chatir
    from convir.eval.backends import load_corpus_embeddings

    n = len(bench["space"])
    np.testing.assert_allclose(
        load_corpus_embeddings(bench["root"] / "corpus_blip.pth", n), bench["vectors"].numpy()
    )  # shuffled (ids, vectors) rows come back in id order
    torch.save((torch.arange(n) + 1, bench["vectors"]), tmp_path / "badids.pth")
    torch.save((torch.arange(n), bench["vectors"], 3), tmp_path / "triple.pth")
    holes = bench["vectors"].clone()
    holes[2] = float("nan")
    torch.save((torch.arange(n), holes), tmp_path / "nan.pth")
    for path, msg in [
        (tmp_path / "badids.pth", "ids must be 0..N-1"),
        (tmp_path / "triple.pth", "(ids, vectors)"),
        (tmp_path / "nan.pth", "NaN"),
    ]:
        with pytest.raises(ConvirError, match=msg.replace("(", r"\(").replace(")", r"\)")):
            load_corpus_embeddings(path, n)
    dialogues = bench["data"] / "ChatGPT_BLIP2.json"
    corpus = bench["root"] / "corpus_blip.pth"
    spec = f"blip:{bench['model']}"
    with pytest.raises(ConvirError, match="needs 12 turns"):
        chatir.plan(dialogues, corpus, spec, split="all", protocol=Protocol(rounds=11))
    settings = {"imagine": "refiner", "generator": "text:"}
    with pytest.raises(ConvirError, match="only --imagine dar"):
        chatir.plan(dialogues, corpus, spec, split="all", imagine=settings)
    with pytest.raises(ConvirError, match="no documented 'test' split"):
        chatir.plan(dialogues, corpus, spec)
    # through the CLI: one line, exit 2, no traceback
    res = run_cli(
        "eval", "chatir", "--dialogues", str(dialogues), "--corpus-embeddings", str(tmp_path / "badids.pth"),
        "--text-encoder", spec, "--split", "all", "--out", str(tmp_path / "bad"),
    )  # fmt: skip
    assert res.returncode == 2 and "ids must be 0..N-1" in res.stderr and "Traceback" not in res.stderr


def test_ties_are_broken_by_search_space_index() -> None:
    corpus = np.eye(4, dtype=np.float32)
    corpus[3] = corpus[1]  # a duplicate image: same score as item 1 for every query
    q = np.asarray([[0.0, 1.0, 0.0, 0.0]] * 2, dtype=np.float32)
    np.testing.assert_array_equal(rank_block(q, corpus, np.asarray([1, 3])), [1, 2])


def test_protocol_queries_and_validation() -> None:
    turns = ("cap", "q1? a1", "q2? a2")
    assert Protocol().queries(turns, 3) == ["cap", "cap, q1? a1", "cap, q1? a1, q2? a2"]
    assert Protocol(query="per-turn").queries(turns, 2) == ["cap", "q1? a1"]
    with pytest.raises(ConvirError):
        Protocol(query="rewrite")
    with pytest.raises(ConvirError):
        Protocol(long_text="drop")
