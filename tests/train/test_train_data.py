"""Training data sources, batching and option checks (no model is trained here)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import SHARED, run_cli
from convir.datasets import DataFormatError
from convir.errors import ConvirError
from convir.train import data as d
from convir.train.encoder import build_examples, mine_negatives, parse_window, subsample


@given(
    groups=st.lists(st.sampled_from("abcdefghij"), min_size=1, max_size=60),
    batch=st.integers(2, 8),
    epochs=st.integers(1, 3),
    seed=st.integers(0, 5),
)
@settings(max_examples=60, deadline=None)
def test_group_unique_order_is_a_permutation_without_clashes(groups, batch, epochs, seed) -> None:
    order = d.group_unique_order(groups, batch, epochs, seed)
    n = len(groups)
    assert len(order) == n * epochs
    assert sorted(order) == sorted(list(range(n)) * epochs)  # every row once per epoch
    # batches as the trainer cuts them: only a batch closed early for lack of other groups may
    # hold repeats, and then it holds nothing but clashes of a single leftover group
    for start in range(0, len(order), batch):
        chunk = [groups[i] for i in order[start : start + batch]]
        if len(set(chunk)) < len(chunk):
            assert len(set(chunk)) < batch
    assert d.group_unique_order(groups, batch, epochs, seed) == order  # seeded


def test_group_unique_order_never_pairs_one_group_when_avoidable() -> None:
    groups = [str(i // 5) for i in range(200)]  # 40 items x 5 captions
    order = d.group_unique_order(groups, 16, 2, seed=3)
    for start in range(0, len(order) - 16, 16):
        chunk = [groups[i] for i in order[start : start + 16]]
        assert len(set(chunk)) == len(chunk)


def test_parse_window() -> None:
    assert parse_window("50-70") == (50, 70)
    assert parse_window(" 10-30 ") == (10, 30)
    assert parse_window("none") is None
    for bad in ("70-50", "1-5", "fifty", "50"):
        with pytest.raises(ConvirError):
            parse_window(bad)


def test_mine_negatives_takes_the_window_and_never_the_target() -> None:
    rng = np.random.default_rng(0)
    groups = [f"g{i}" for i in range(100)]
    gvecs = rng.normal(size=(100, 8)).astype(np.float32)
    gvecs /= np.linalg.norm(gvecs, axis=1, keepdims=True)
    queries = gvecs[:20] + 0.01  # query i is closest to group i
    picks = mine_negatives(queries, groups[:20], groups, gvecs, (5, 9), seed=1)
    for q, p in enumerate(picks):
        assert p != q
        order = [g for g in np.argsort(-(queries[q] @ gvecs.T)) if g != q]
        rank = order.index(p) + 2  # 1-based, the target being rank 1
        assert 5 <= rank <= 9


def test_build_examples_mines_with_the_encoder() -> None:
    docs = {f"item{i}": [f"text {i} a", f"text {i} b"] for i in range(30)}
    pairs = [d.Pair(f"text {i} a", f"text {i} b", f"item{i}") for i in range(30)]

    def encode(texts: list[str]) -> np.ndarray:  # item i's texts are close to each other
        v = np.array([[np.cos(int(t.split()[1]) / 10), np.sin(int(t.split()[1]) / 10), 0.1] for t in texts])
        return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)

    rows = build_examples(pairs, docs, (2, 4), encode, seed=0)
    for p, r in zip(pairs, rows, strict=True):
        assert r["negative_group"] != p.group
        assert r["negative"] in docs[r["negative_group"]]
        # the mined item is a near neighbour on the circle, not a random one
        assert abs(int(r["negative_group"][4:]) - int(p.group[4:])) <= 3
    assert "negative" not in build_examples(pairs, docs, None, encode, seed=0)[0]


def test_subsample_spreads_over_items() -> None:
    pairs = [d.Pair(f"q{i}-{j}", "p", f"g{i}") for i in range(10) for j in range(5)]
    sub = subsample(pairs, 10, seed=0)
    assert len(sub) == 10 and len({p.group for p in sub}) == 10
    assert subsample(pairs, None, 0) == pairs


def test_coco5k_sim_pairs_from_dev_only(shared_data_dir: Path) -> None:
    ps = d.coco5k_sim_pairs(shared_data_dir / "coco5k", "dev")
    assert len(ps.docs) == 4000
    ids = json.loads((shared_data_dir / "coco5k" / "Search_Space_coco.json").read_text())
    assert set(ps.docs) == set(ids[:4000])  # never a test item
    assert all(p.positive in ps.docs[p.group] and p.positive != p.query for p in ps.pairs[:200])
    with pytest.raises(ConvirError, match="held-out test split"):
        d.coco5k_sim_pairs(shared_data_dir / "coco5k", "test")
    recs = d.sim_rewrite_records(shared_data_dir / "coco5k", "dev")
    t = [r for r in recs if not r.multimodal]
    m = [r for r in recs if r.multimodal]
    assert len(t) == len(m) == 4000
    assert "[image:" in m[0].state().dialogue_text() and "[image:" not in t[0].state().dialogue_text()
    assert all(r.item in set(ids[:4000]) for r in recs[:50])


def test_jsonl_pairs_errors_name_file_and_line(tmp_path: Path) -> None:
    f = tmp_path / "pairs.jsonl"
    f.write_text('{"query": "a dog", "positive": "a puppy"}\n\n{"query": "a cat"}\n')
    with pytest.raises(DataFormatError, match=r"pairs\.jsonl, line 3: missing key 'positive'"):
        d.jsonl_pairs(f)
    f.write_text('{"query": "a dog", "positive": "a puppy", "grop": 1}\n')
    with pytest.raises(DataFormatError, match=r"line 1: unknown key\(s\) grop"):
        d.jsonl_pairs(f)
    f.write_text('{"query": "a dog", "positive": "a puppy"}\n{"query": "x", "positive": 3}\n')
    with pytest.raises(DataFormatError, match=r"line 2: key 'positive' must be str"):
        d.jsonl_pairs(f)
    f.write_text('{"query": "a dog", "image": "dog.png", "group": 7}\n')
    ps = d.jsonl_pairs(f)
    assert ps.images == {"7": str(tmp_path / "dog.png")}


def _fake_run(tmp_path: Path, coco: Path, split: str) -> Path:
    run = tmp_path / f"run-{split}"
    run.mkdir()
    ids = json.loads((coco / "Search_Space_coco.json").read_text())
    cfg = {"command": "eval dialog", "dataset": "coco5k-sim", "path": str(coco), "split": split}
    (run / "config.json").write_text(json.dumps(cfg))
    turns = [
        {"query": "a man on a horse"},
        {"question": "is it sunny?", "answer": "yes", "query": "a man on a horse, is it sunny? yes"},
        {"question": None},
    ]
    lines = [json.dumps({"target": ids[i], "ranks": [3, 1, 1], "extra": {"turns": turns}}) for i in (0, 1)]
    (run / "targets.jsonl").write_text("\n".join(lines) + "\n")
    return run


def test_run_pairs_and_records(tmp_path: Path, shared_data_dir: Path) -> None:
    coco = shared_data_dir / "coco5k"
    run = _fake_run(tmp_path, coco, "dev")
    ps = d.run_pairs(run)
    assert [p.query for p in ps.pairs[:2]] == ["a man on a horse", "a man on a horse, is it sunny? yes"]
    caps = json.loads((coco / "coco_captions.json").read_text())[0]["caption"]
    assert ps.docs[ps.pairs[0].group] == caps[1:3]  # the sim gallery text of the target
    recs = d.run_rewrite_records(run)
    assert recs[0].exchanges == (("is it sunny?", "yes"),) and recs[0].target == caps[1]
    with pytest.raises(ConvirError, match="held-out test split"):
        d.run_pairs(_fake_run(tmp_path, coco, "test"))
    bad = _fake_run(tmp_path, coco, "all")
    (bad / "targets.jsonl").write_text('{"target": "val2017/nope.jpg", "ranks": [1]}\n')
    with pytest.raises(DataFormatError, match=r"targets\.jsonl, line 1: target 'val2017/nope.jpg'"):
        d.run_pairs(bad)


def test_recqr_records_with_images(tmp_path: Path) -> None:
    f = tmp_path / "recqr.jsonl"
    rows = [
        {
            "id": "a",
            "history": ["a red car", "is it parked? yes"],
            "query": "what about the blue one?",
            "rewrite": "a blue car parked on a street",
            "target": "img1",
        },
        {
            "id": "b",
            "history": ["a dog"],
            "query": "like this but brown",
            "rewrite": "a brown dog",
            "target": "img2",
            "images": [{"turn": 1, "caption": "a black dog on grass"}],
        },
    ]
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    recs = d.recqr_rewrite_records(f)
    assert not recs[0].multimodal and recs[0].exchanges[0] == ("is it parked?", "yes")
    assert recs[1].images == ("a black dog on grass",)
    assert "[image: a black dog on grass]" in recs[1].state().dialogue_text()
    ps = d.recqr_pairs(f)
    assert ps.pairs[0].positive == "a blue car parked on a street"
    # datagen's Stage Two records carry the image inline in a user turn: that is an image too
    rows.append(
        {
            "id": "c",
            "history": ["User: a woman", "System: where?", "User: [photo: a woman at a table] like this one"],
            "query": "but outdoors",
            "rewrite": "a woman at a table outdoors",
            "target": "img3",
        }
    )
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    recs = d.recqr_rewrite_records(f)
    assert recs[2].multimodal and recs[2].images == ("a woman at a table",)
    assert recs[2].state().dialogue_text().count("a woman at a table") == 1  # not inserted twice
    rows.pop()
    rows[1]["images"] = [{"turn": 9, "caption": "x"}]
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with pytest.raises(DataFormatError, match=r"recqr\.jsonl, line 2: images\[0\]\.turn 9"):
        d.recqr_rewrite_records(f)


def test_cli_refuses_bad_options_before_loading(tmp_path: Path) -> None:
    """Each of these fails in well under the time a model load takes, with one clear line."""
    coco = str(SHARED / "coco5k")
    cases = [
        (["train", "encoder", coco, "--dataset", "coco5k-sim", "--hard-negatives", "70-50"], "LO <= HI"),
        (["train", "encoder", coco, "--dataset", "coco5k-sim", "--split", "test"], "held-out test split"),
        (["train", "encoder", "--base", "clip:x", "--pairs", "p.jsonl"], "cannot understand spec"),
        (["train", "encoder", "--base", "caption:/nope/model", "--pairs", "p.jsonl"], "does not exist"),
        (["train", "encoder", "--pairs", "p.jsonl", "--run", "r"], "exactly one training data source"),
        (["train", "encoder", "--chatir", "c.json"], "needs --index"),
        (
            ["train", "encoder", "--pairs", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "o")],
            "file not found",
        ),
        (["train", "rewriter", coco, "--dataset", "coco5k-sim", "--stages", "M,T"], "T comes first"),
        (
            ["train", "rewriter", coco, "--dataset", "coco5k-sim", "--base", "openai:http://x/v1#m"],
            "remote server",
        ),
        (
            ["train", "rewriter", coco, "--dataset", "coco5k-sim", "--base", "llamacpp:nope"],
            "not a known alias",
        ),
    ]
    for args, message in cases:
        res = run_cli(*args, cwd=tmp_path)
        assert res.returncode == 2, (args, res.stdout, res.stderr)
        assert message in res.stderr, (args, res.stderr)
        assert "Traceback" not in res.stderr
    (tmp_path / "taken").mkdir()
    res = run_cli("train", "encoder", "--pairs", "p.jsonl", "--out", str(tmp_path / "taken"), cwd=tmp_path)
    assert res.returncode == 2 and "already exists" in res.stderr
