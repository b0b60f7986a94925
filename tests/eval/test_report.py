"""Run folders (resume after a crash, config guard), reports with hand-computed metrics, plots."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from convir.errors import ConvirError
from convir.eval.report import RunWriter, load_report, plot_runs, single_metrics, turn_metrics

RANKS = {"d0": [12, 3, 20], "d1": [1, 1, 1], "d2": [50, 40, 30]}
CONFIG = {"name": "demo", "retriever": "caption:minilm", "turns": 3, "limit": 3}


def test_resume_after_crash(tmp_path: Path) -> None:
    run = RunWriter(tmp_path / "run", CONFIG)
    assert run.done() == {}
    run.add("d0", RANKS["d0"], {"questions": ["is it a dog?"]})
    run.add("d1", RANKS["d1"])
    # The process "dies" mid-write: half of the third line reaches the disk.
    with open(run.targets_path, "a", encoding="utf-8") as fh:
        fh.write('{"target": "d2", "ranks": [50, 4')

    # A larger --limit (and --resume) must not count as a different run.
    resumed = RunWriter(tmp_path / "run", {**CONFIG, "limit": 100, "resume": True})
    assert resumed.done() == {"d0": [12, 3, 20], "d1": [1, 1, 1]}
    resumed.add("d2", RANKS["d2"])

    lines = resumed.targets_path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["target"] for line in lines] == ["d0", "d1", "d2"]
    assert json.loads(lines[0])["extra"] == {"questions": ["is it a dog?"]}
    assert RunWriter(tmp_path / "run", CONFIG).done() == RANKS


def test_complete_last_line_without_newline_is_kept(tmp_path: Path) -> None:
    run = RunWriter(tmp_path / "run", CONFIG)
    run.targets_path.write_text('{"target": "d0", "ranks": [12, 3, 20]}', encoding="utf-8")
    again = RunWriter(tmp_path / "run", CONFIG)
    assert again.done() == {"d0": [12, 3, 20]}
    again.add("d1", [1, 1, 1])
    assert RunWriter(tmp_path / "run", CONFIG).done() == {"d0": [12, 3, 20], "d1": [1, 1, 1]}


def test_corrupt_line_in_the_middle_is_an_error(tmp_path: Path) -> None:
    run = RunWriter(tmp_path / "run", CONFIG)
    run.targets_path.write_text('{"target": "d0", "ra\n{"target": "d1", "ranks": [1]}\n', encoding="utf-8")
    with pytest.raises(ConvirError, match=r"targets.jsonl:1 is corrupt"):
        RunWriter(tmp_path / "run", CONFIG)


def test_different_config_is_refused(tmp_path: Path) -> None:
    RunWriter(tmp_path / "run", CONFIG)
    with pytest.raises(ConvirError, match=r"different run.*another --out"):
        RunWriter(tmp_path / "run", {**CONFIG, "retriever": "clip:ViT-B-32"})
    # Key order and tuple-vs-list do not matter: the comparison is on normalised JSON.
    RunWriter(tmp_path / "run2", {"a": (1, 2), "b": 1})
    RunWriter(tmp_path / "run2", {"b": 1, "a": [1, 2]})


def test_add_rejects_bad_ranks(tmp_path: Path) -> None:
    run = RunWriter(tmp_path / "run", CONFIG)
    for bad in ([], [0, 1], [1.5]):
        with pytest.raises(ValueError):
            run.add("x", bad)


def test_turn_metrics_by_hand() -> None:
    m = turn_metrics(list(RANKS.values()))
    # Best rank so far: d0 12,3,3; d1 1,1,1; d2 50,40,30.
    assert m["hits@1"] == pytest.approx([1 / 3, 1 / 3, 1 / 3])
    assert m["hits@5"] == pytest.approx([1 / 3, 2 / 3, 2 / 3])
    assert m["hits@10"] == pytest.approx([1 / 3, 2 / 3, 2 / 3])
    # Only the current turn: d0 is at rank 20 again at t=2.
    assert m["recall@10"] == pytest.approx([1 / 3, 2 / 3, 1 / 3])
    assert m["mrr"] == pytest.approx(
        [(1 / 12 + 1 + 1 / 50) / 3, (1 / 3 + 1 + 1 / 40) / 3, (1 / 20 + 1 + 1 / 30) / 3]
    )
    ln = math.log
    bri_d0 = ((ln(12) + ln(3)) / 2 + (ln(3) + ln(3)) / 2) / 2
    bri_d2 = ((ln(50) + ln(40)) / 2 + (ln(40) + ln(30)) / 2) / 2
    assert m["bri"] == pytest.approx((bri_d0 + 0 + bri_d2) / 3)


def test_single_metrics_by_hand() -> None:
    m = single_metrics([1, 3, 7, 20])
    assert m == pytest.approx(
        {"R@1": 0.25, "R@5": 0.5, "R@10": 0.75, "MRR": (1 + 1 / 3 + 1 / 7 + 1 / 20) / 4, "n": 4}
    )
    assert single_metrics([[1], [3], [7], [20]]) == m


def test_finish_writes_reports(tmp_path: Path) -> None:
    run = RunWriter(tmp_path / "run", CONFIG)
    for tid, ranks in RANKS.items():
        run.add(tid, ranks)
    report = run.finish(turn_metrics(list(run.done().values())), extra={"seconds": 1.5})

    on_disk = json.loads((tmp_path / "run" / "report.json").read_text(encoding="utf-8"))
    assert on_disk == report
    assert report["config"] == CONFIG
    assert report["n_targets"] == 3
    assert report["per_target"] == RANKS
    assert report["seconds"] == 1.5
    assert report["metrics"]["hits@10"] == pytest.approx([1 / 3, 2 / 3, 2 / 3])
    assert report["metrics"]["recall@10"] == pytest.approx([1 / 3, 2 / 3, 1 / 3])
    assert report["convir_version"]
    assert "T" in report["created"]
    assert "git_revision" in report
    assert isinstance(report["git_dirty"], bool) or report["git_dirty"] is None

    md = (tmp_path / "run" / "report.md").read_text(encoding="utf-8")
    assert "| retriever | caption:minilm |" in md
    assert "| turn | Hits@1 | Hits@5 | Hits@10 | Recall@1 | Recall@5 | Recall@10 | MRR |" in md
    assert "| 1 | 33.33 | 66.67 | 66.67 | 33.33 | 66.67 | 66.67 |" in md
    assert "| 2 | 33.33 | 66.67 | 66.67 | 33.33 | 33.33 | 33.33 |" in md
    assert "BRI: " in md

    with pytest.raises(ValueError, match="override"):
        run.finish({}, extra={"metrics": {}})


def test_finish_single_shot_markdown(tmp_path: Path) -> None:
    run = RunWriter(tmp_path / "run", {"name": "t2i"})
    for i, r in enumerate([1, 3, 7, 20]):
        run.add(f"q{i}", [r])
    run.finish(single_metrics([ranks[0] for ranks in run.done().values()]))
    md = (tmp_path / "run" / "report.md").read_text(encoding="utf-8")
    assert "| R@5 | 50.00 |" in md
    assert "| n | 4 |" in md


def _finished_run(path: Path, name: str, ranks: list[list[int]]) -> Path:
    run = RunWriter(path, {"name": name})
    for i, r in enumerate(ranks):
        run.add(str(i), r)
    run.finish(turn_metrics(ranks))
    return path


def test_plot_runs(tmp_path: Path) -> None:
    a = _finished_run(tmp_path / "a", "baseline", list(RANKS.values()))
    b = _finished_run(tmp_path / "b", "rewriter", [[5, 2, 1], [1, 1, 1], [30, 8, 9]])
    out = plot_runs([a, b], tmp_path / "plots" / "hits.png", title="demo")
    data = out.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 1000
    assert load_report(b)["config"]["name"] == "rewriter"

    with pytest.raises(ConvirError, match=r"no report\.json"):
        plot_runs([a, tmp_path / "missing"], tmp_path / "x.png")
    with pytest.raises(ConvirError, match="no per-turn metric 'hits@3'"):
        plot_runs([a], tmp_path / "x.png", metric="hits@3")
    with pytest.raises(ConvirError, match="labels"):
        plot_runs([a, b], tmp_path / "x.png", labels=["only one"])
    assert not (tmp_path / "x.png").exists()
