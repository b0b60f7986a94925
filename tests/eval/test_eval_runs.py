"""Evaluation honesty: run folders report exactly the targets they measured, bad options are
rejected before anything loads, progress is visible when stderr is redirected, and the split
`eval dialog` (simulated) / `eval replay` (fixed dialogues) commands keep the old flag working."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import run_cli
from convir.eval.metrics import turn_metrics
from convir.eval.runs import RunWriter, latest_records, read_targets

DIALOGUES = [
    {"id": "d1", "target": "beach/boat.png", "turns": ["something outdoors", "is there a boat? yes"]},
    {"id": "d2", "target": "snow.jpg", "turns": ["a photo", "what sport? skiing"]},
    {"id": "d3", "target": "beach/dog.png", "turns": ["an animal", "where? on a beach"]},
]


@pytest.fixture()
def replay_setup(gallery: Path, tmp_path: Path) -> tuple[Path, Path]:
    assert run_cli("index", str(gallery), "--out", str(tmp_path / "ix")).returncode == 0
    dl = tmp_path / "dialogues.jsonl"
    dl.write_text("\n".join(json.dumps(d) for d in DIALOGUES) + "\n")
    return tmp_path / "ix", dl


def test_a_smaller_limit_reports_exactly_that_subset(replay_setup: tuple[Path, Path], tmp_path: Path) -> None:
    ix, dl = replay_setup
    args = ["eval", "replay", "--dialogues", str(dl), "--index", str(ix), "--out", str(tmp_path / "run")]
    full = run_cli(*args, "--limit", "3", "--json")
    assert full.returncode == 0, full.stderr
    assert json.loads(full.stdout)["n_targets"] == 3
    # progress reaches a redirected stderr as plain lines
    assert "dialogues 3/3 (100%)" in full.stderr
    small = run_cli(*args, "--limit", "2", "--json")
    assert small.returncode == 0, small.stderr
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["n_targets"] == 2 and list(report["per_target"]) == ["d1", "d2"]
    assert report["folder_targets"] == 3  # the cache keeps the third target
    assert report["config"]["limit"] == 2
    assert len(list(read_targets(tmp_path / "run"))) == 3  # nothing recomputed or lost


def test_the_old_dialog_replay_flag_still_works(replay_setup: tuple[Path, Path], tmp_path: Path) -> None:
    ix, dl = replay_setup
    res = run_cli("eval", "dialog", "--dialogues", str(dl), "--index", str(ix), "--out", str(tmp_path / "r"))
    assert res.returncode == 0, res.stderr
    assert "deprecated" in res.stderr and "eval replay" in res.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["eval", "replay", "--mode", "nonsense"], "unknown --mode 'nonsense'"),
        (["eval", "replay", "--strategy", "magic"], "unknown strategy 'magic'"),
        (["eval", "replay", "--strategy", "rewrite"], "needs an LLM"),
    ],
)
def test_replay_rejects_bad_options_before_loading(
    replay_setup: tuple[Path, Path], tmp_path: Path, args: list[str], message: str
) -> None:
    ix, dl = replay_setup
    res = run_cli(*args, "--dialogues", str(dl), "--index", str(ix), "--out", str(tmp_path / "bad"))
    assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "bad").exists()  # a rejected run leaves no folder behind


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--questioner", "candidatez"], "unknown questioner 'candidatez'"),
        (["--strategy", "rewrit"], "unknown strategy 'rewrit'"),
        (["--answerer", "oracle"], "unknown answerer 'oracle'"),
        (["--reranker", "cross:x"], "only applies to --strategy rerank"),
    ],
)
def test_simulated_eval_names_are_checked_before_models_load(
    tmp_path: Path, extra: list[str], message: str
) -> None:
    # the LLM file does not exist and neither does the dataset: a name check that ran after
    # loading would report those instead
    res = run_cli(
        "eval",
        "dialog",
        str(tmp_path / "no-such-dataset"),
        "--dataset",
        "coco5k-sim",
        "--llm",
        f"llamacpp:{tmp_path / 'missing.gguf'}",
        "--out",
        str(tmp_path / "run"),
        *extra,
    )
    assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "run").exists()


def test_unknown_dataset_and_split_are_named(tmp_path: Path) -> None:
    res = run_cli("eval", "retrieval", str(tmp_path), "--dataset", "coco", "--out", str(tmp_path / "r"))
    assert res.returncode == 2 and "unknown --dataset 'coco'" in res.stderr
    res = run_cli("eval", "retrieval", str(tmp_path), "--mode", "nonsense", "--out", str(tmp_path / "r"))
    assert res.returncode == 2 and "unknown --mode 'nonsense'" in res.stderr
    res = run_cli("eval", "dialog", str(tmp_path), "--dataset", "coco5k", "--out", str(tmp_path / "r"))
    assert res.returncode == 2 and "unknown --dataset 'coco5k'" in res.stderr


def test_writer_reports_the_selected_targets_and_the_reader_skips_a_torn_tail(tmp_path: Path) -> None:
    run = RunWriter(tmp_path / "run", {"command": "test"})
    for i, ranks in enumerate([[3, 1], [2, 2], [5, 4]]):
        run.add(f"t{i}", ranks)
    report = run.finish(turn_metrics([[3, 1], [2, 2]]), targets=["t0", "t1"])
    assert report["n_targets"] == 2 and report["folder_targets"] == 3
    with pytest.raises(ValueError, match="no results recorded"):
        run.finish(turn_metrics([[1, 1]]), targets=["nope"])
    with (tmp_path / "run" / "targets.jsonl").open("a") as fh:
        fh.write('{"target": "t9", "ranks": [1')  # a crash mid-line
    assert sorted(latest_records(tmp_path / "run")) == ["t0", "t1", "t2"]
    resumed = RunWriter(tmp_path / "run", {"command": "test"})  # repairs the tail
    resumed.add("t0", [1, 1])  # re-added: the later record wins
    assert sorted(latest_records(tmp_path / "run")) == ["t0", "t1", "t2"]
    assert latest_records(tmp_path / "run")["t0"]["ranks"] == [1, 1]


def test_runs_that_differ_only_in_prompt_turns_get_different_folders() -> None:
    """Issue 27: --prompt-turns shapes every LLM prompt, so two runs differing only there must
    not share (and silently resume) one run folder; the default keeps older folders' names."""
    from convir.dialog.defaults import PROMPT_TURNS
    from convir.dialog.session import SessionSpec
    from convir.eval.runs import run_dir_for
    from convir.eval.simulated import sim_config

    def folder(prompt_turns: int) -> Path:
        spec = SessionSpec(questioner="infogain", prompt_turns=prompt_turns)
        config = sim_config(spec, "coco5k-sim", Path("data/coco5k"), "dev", "caption:minilm", 1)
        return run_dir_for(None, "dialog", config)

    assert folder(2) != folder(4)
    assert "prompt_turns" not in sim_config(
        SessionSpec(prompt_turns=PROMPT_TURNS), "coco5k-sim", Path("d"), "dev", "caption:minilm", 1
    )
