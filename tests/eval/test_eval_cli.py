"""Evaluation protocols through the real CLI: retrieval, ChatIR (known-answer corpus), replay, plots."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli
from convir.encoders import load_encoder

DIALOGS = [
    ["a dog", "what colour is it? brown", "where is it? on a sandy beach"],
    ["a red car", "is it moving? no it is parked", "what is behind it? a white house"],
]
FILLER = [
    "a plate of pasta",
    "a city skyline at night",
    "two cats sleeping",
    "a mountain lake",
    "a man playing guitar",
    "a bowl of fruit",
    "children on a playground",
    "a train station",
]


@pytest.fixture(scope="module")
def chatir_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny ChatIR-format corpus whose answers are known by construction.

    Target i's embedding is exactly the turn-2 query, so it must be rank 1 at turn 2;
    a distractor's embedding is exactly the turn-0 query, so the target cannot be rank 1 at turn 0.
    """
    root = tmp_path_factory.mktemp("chatir")
    enc = load_encoder("caption:minilm")
    texts, space, records = [], [], []
    for i, d in enumerate(DIALOGS):
        texts += [", ".join(d), d[0]]
        space += [f"unlabeled2017/target{i}.jpg", f"unlabeled2017/decoy{i}.jpg"]
        records.append({"img": f"unlabeled2017/target{i}.jpg", "dialog": d})
    texts += FILLER
    space += [f"unlabeled2017/filler{j}.jpg" for j in range(len(FILLER))]
    emb = enc.encode_text(texts)
    np.save(root / "corpus.npy", emb)
    import torch

    torch.save(torch.from_numpy(emb), root / "corpus.pt")
    (root / "Search_Space_val_50k.json").write_text(json.dumps(space))
    (root / "dialogues.json").write_text(json.dumps(records))
    return root


@pytest.mark.parametrize("corpus", ["corpus.npy", "corpus.pt"])
def test_chatir_protocol_known_answer(chatir_files: Path, tmp_path: Path, corpus: str) -> None:
    res = run_cli(
        "eval",
        "chatir",
        "--dialogues",
        str(chatir_files / "dialogues.json"),
        "--corpus-embeddings",
        str(chatir_files / corpus),
        "--text-encoder",
        "caption:minilm",
        "--split",
        "all",
        "--out",
        str(tmp_path / "run"),
        "--json",
    )
    assert res.returncode == 0, res.stderr
    metrics = json.loads(res.stdout)["metrics"]
    assert metrics["hits@1"][0] == 0.0 and metrics["hits@1"][2] == 1.0
    assert metrics["recall@10"] == [1.0, 1.0, 1.0]  # 12 items: everything is in the top 10 but 2
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert all(r[2] == 1 and r[0] >= 2 for r in report["per_target"].values())


def test_chatir_rerun_resumes_from_cache_and_mismatches_are_clear(chatir_files: Path, tmp_path: Path) -> None:
    args = [
        "eval",
        "chatir",
        "--dialogues",
        str(chatir_files / "dialogues.json"),
        "--corpus-embeddings",
        str(chatir_files / "corpus.npy"),
        "--text-encoder",
        "caption:minilm",
        "--split",
        "all",
        "--out",
        str(tmp_path / "run"),
    ]
    assert run_cli(*args).returncode == 0
    assert run_cli(*args).returncode == 0
    lines = (tmp_path / "run" / "targets.jsonl").read_text().splitlines()
    assert len(lines) == 2  # the second run computed nothing again
    np.save(tmp_path / "bad.npy", np.ones((3, 384), np.float32))
    bad = run_cli(*args[:5], str(tmp_path / "bad.npy"), *args[6:-1], str(tmp_path / "run2"))
    assert bad.returncode == 2 and "rows but the search space lists" in bad.stderr
    np.save(tmp_path / "wrongdim.npy", np.ones((12, 16), np.float32))
    bad = run_cli(*args[:5], str(tmp_path / "wrongdim.npy"), *args[6:-1], str(tmp_path / "run3"))
    assert bad.returncode == 2 and "384-d vectors but the corpus embeddings are" in bad.stderr
    other = run_cli(*args[:-1], str(tmp_path / "run"), "--text-encoder", "caption:minilm", "--split", "dev")
    assert other.returncode == 2 and "Traceback" not in other.stderr


def test_dialog_replay_against_an_index_and_plot(gallery: Path, tmp_path: Path) -> None:
    assert run_cli("index", str(gallery), "--out", str(tmp_path / "ix")).returncode == 0
    dl = tmp_path / "dialogues.jsonl"
    dl.write_text(
        "\n".join(
            json.dumps(r)
            for r in [
                {
                    "id": "d1",
                    "target": "beach/boat.png",
                    "turns": [
                        "something outdoors",
                        "is there water? yes",
                        "is there a boat? yes, a red sailboat",
                    ],
                },
                {
                    "id": "d2",
                    "target": "snow.jpg",
                    "turns": ["a photo", "is it cold? yes", "what sport? skiing"],
                },
            ]
        )
        + "\n"
    )
    runs = []
    for mode in ("dense", "hybrid"):
        out = tmp_path / f"run-{mode}"
        res = run_cli(
            "eval",
            "dialog",
            "--dialogues",
            str(dl),
            "--index",
            str(tmp_path / "ix"),
            "--mode",
            mode,
            "--out",
            str(out),
            "--json",
        )
        assert res.returncode == 0, res.stderr
        hits1 = json.loads(res.stdout)["metrics"]["hits@1"]
        assert hits1[-1] == 1.0 and hits1 == sorted(hits1)
        runs.append(str(out))
    res = run_cli("report", "plot", *runs, "--out", str(tmp_path / "hits.png"), "--metric", "hits@1")
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "hits.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    missing = {"id": "d3", "target": "not-there.png", "turns": ["x"]}
    dl.write_text(json.dumps(missing) + "\n")
    res = run_cli(
        "eval",
        "dialog",
        "--dialogues",
        str(dl),
        "--index",
        str(tmp_path / "ix"),
        "--out",
        str(tmp_path / "r3"),
    )
    assert res.returncode == 2 and "not in the gallery" in res.stderr


@pytest.mark.e2e
def test_retrieval_on_coco5k_test_split(shared_data_dir: Path, tmp_path: Path) -> None:
    res = run_cli(
        "eval",
        "retrieval",
        "--dataset",
        "coco5k",
        str(shared_data_dir / "coco5k"),
        "--split",
        "test",
        "--out",
        str(tmp_path / "run"),
        "--json",
    )
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    m = out["metrics"]
    assert m["n"] == 1000 and out["surrogate"] == "captions[1:3]"
    # a misaligned query/target pairing would give ~1% here; the MiniLM surrogate gives ~90%
    assert 0.8 < m["R@10"] <= 1.0 and m["R@1"] <= m["R@5"] <= m["R@10"]
    per_target = json.loads((tmp_path / "run" / "report.json").read_text())["per_target"]
    assert len(per_target) == 1000 and next(iter(per_target)) == "val2017/000000463174.jpg"  # item 4000


@pytest.mark.e2e
def test_retrieval_on_flickr8k_bm25(shared_data_dir: Path, tmp_path: Path) -> None:
    res = run_cli(
        "eval",
        "retrieval",
        "--dataset",
        "flickr8k",
        str(shared_data_dir / "flickr8k-1k"),
        "--split",
        "all",
        "--mode",
        "bm25",
        "--out",
        str(tmp_path / "run"),
        "--json",
    )
    assert res.returncode == 0, res.stderr
    m = json.loads(res.stdout)["metrics"]
    assert m["n"] == 1000 and 0.3 < m["R@10"] < 1.0
    res = run_cli(
        "eval",
        "retrieval",
        "--dataset",
        "flickr8k",
        str(shared_data_dir / "flickr8k-1k"),
        "--split",
        "test",
        "--out",
        str(tmp_path / "run2"),
    )
    assert res.returncode == 2 and "no documented dev/test split" in res.stderr
