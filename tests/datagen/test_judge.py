"""The ReCQR judge read from token probabilities (``--judge-mode expected``) and re-judging a
finished dataset (``convir datagen judge``). The judge here is a scripted scorer: a stand-in
for the model that answers ``option_probs`` from a table, so the expected values can be
checked by hand; the real models' ``option_probs`` are tested in tests/llm."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import run_cli
from convir.datagen.recqr import RecqrConfig, RecqrGenerator, judge_key, read_records, rejudge
from convir.errors import ConvirError
from convir.llm.base import LLMError


class Scorer:
    """Answers each criterion with fixed probabilities over "1".."5"; records the prompts."""

    spec, instruct = "scripted:judge", False

    def __init__(self, table: dict[str, list[float]], fail_after: int | None = None) -> None:
        self.table, self.prompts, self.fail_after = table, [], fail_after

    def complete(self, prompt: str, params: object = None) -> str:
        raise AssertionError("the expected mode must not generate text")

    def chat(self, messages: object, params: object = None) -> str:
        raise AssertionError("the expected mode must not generate text")

    def option_probs(self, prompt: str, options: list[str]) -> dict[str, float]:
        if self.fail_after is not None and len(self.prompts) >= self.fail_after:
            raise LLMError("scripted: the model went away")
        assert list(options) == ["1", "2", "3", "4", "5"] and prompt.endswith(" ")
        self.prompts.append(prompt)
        name = prompt.rstrip().rsplit(" ", 1)[-1].strip(",")
        return dict(zip(options, self.table[name], strict=True))


DIALOGUE = [{"role": "user", "text": "a dog"}, {"role": "system", "text": "Where is it?"}]
TABLE = {
    "coherence": [0.0, 0.0, 0.5, 0.5, 0.0],  # expected 3.5; greedy: the first maximum, "3"
    "omission": [0.1, 0.1, 0.2, 0.2, 0.4],  # 0.1+0.2+0.6+0.8+2.0 = 3.7; greedy "5"
    "reconstruct": [0.6, 0.4, 0.0, 0.0, 0.0],  # 1.4; greedy "1"
}


def test_expected_scores_are_probability_weighted_and_the_greedy_digit_is_written() -> None:
    judge = Scorer(TABLE)
    gen = RecqrGenerator(RecqrConfig(llm="x", judge_mode="auto"), judge, judge, None, [])
    log_: dict = {"seconds": {}, "cached": {}, "raw": {}}
    out = gen.judge(DIALOGUE, "on the beach", "a dog on the beach", log_)
    assert out["mode"] == "expected" and out["llm"] == "scripted:judge"
    assert (out["coherence"], out["omission"], out["reconstruct"]) == pytest.approx((3.5, 3.7, 1.4))
    assert out["score"] == pytest.approx((3.5 + 3.7 + 1.4) / 3, abs=1e-4)
    assert out["probs"]["omission"] == TABLE["omission"]
    first, second, third = judge.prompts
    assert "Last message: on the beach" in first and first.endswith("Scores: coherence ")
    assert second.endswith("Scores: coherence 3, omission ") and third.endswith("omission 5, reconstruct ")
    assert log_["raw"]["judge"] == "Scores: coherence 3, omission 5, reconstruct 1"


def test_expected_mode_needs_a_judge_that_gives_probabilities() -> None:
    class TextJudge:
        spec, instruct = "openai:http://x#m", True

    gen = RecqrGenerator(RecqrConfig(llm="x", judge_mode="expected"), TextJudge(), TextJudge(), None, [])
    with pytest.raises(ConvirError, match="needs token probabilities"):
        gen.judge_mode()
    auto = RecqrGenerator(RecqrConfig(llm="x", judge_mode="auto"), TextJudge(), TextJudge(), None, [])
    assert auto.judge_mode() == "text"


def _dataset(path: Path, n: int) -> None:
    recs = []
    for i in range(n):
        recs.append(
            {
                "id": f"s1:{i}",
                "stage": 1,
                "part": "text",
                "target": str(i),
                "status": "ok",
                "dialogue": DIALOGUE,
                "original_query": f"query {i}",
                "target_query": f"a dog number {i}",
                "judge": {"coherence": 4, "omission": 3, "reconstruct": 4, "score": 3.6667, "llm": "old"},
            }
        )
    recs.append({"id": "s1:bad", "stage": 1, "part": "text", "target": "bad", "status": "invalid"})
    path.write_text("".join(json.dumps(r) + "\n" for r in recs), encoding="utf-8")


def test_rejudge_replaces_scores_keeps_the_old_ones_and_resumes(tmp_path: Path) -> None:
    out = tmp_path / "d.jsonl"
    _dataset(out, 6)
    cfg = RecqrConfig(llm="x", judge_mode="expected", min_score=3.0)
    dying = Scorer(TABLE, fail_after=3 * 2)  # dies on the third record
    with pytest.raises(ConvirError, match="re-run the same command"):
        rejudge(out, cfg, judge=dying, max_consecutive_failures=1)
    done = {r["id"]: r for r in read_records(out)[0]}
    assert sum(judge_key(r.get("judge")) == ("scripted:judge", "expected") for r in done.values()) == 2
    again = Scorer(TABLE)
    result = rejudge(out, cfg, judge=again)
    assert result["rejudged"] == 4 and result["skipped"] == 2 and len(again.prompts) == 4 * 3
    records = {r["id"]: r for r in read_records(out)[0]}
    assert len(records) == 7  # one line per id after the final rewrite
    r0 = records["s1:0"]
    assert r0["judge"]["score"] == pytest.approx(2.8667, abs=1e-4) and r0["judge_earlier"][0]["llm"] == "old"
    assert not r0["accepted"]  # 2.87 < 3: the new judge decides acceptance
    assert result["text"] == {
        "records": 7,
        "judged": 6,
        "accepted": 0,
        "mean_score": pytest.approx(2.8667, abs=1e-4),
    }
    assert records["s1:bad"]["status"] == "invalid" and "judge" not in records["s1:bad"]
    assert rejudge(out, cfg, judge=Scorer(TABLE))["rejudged"] == 0  # nothing left to do


def test_cli_judge_checks_its_options_before_loading(tmp_path: Path) -> None:
    out = tmp_path / "d.jsonl"
    _dataset(out, 1)
    res = run_cli("datagen", "judge", str(out), "--judge-mode", "vibes", cwd=tmp_path)
    assert res.returncode == 2 and "unknown --judge-mode" in res.stderr
    res = run_cli("datagen", "judge", str(tmp_path / "none.jsonl"), cwd=tmp_path)
    assert res.returncode == 2 and "not found" in res.stderr
    res = run_cli("datagen", "judge", str(out), cwd=tmp_path)  # no .meta.json, no --judge-llm
    assert res.returncode == 2 and "--judge-llm" in res.stderr
    res = run_cli("datagen", "judge", str(out), "--judge-llm", "nonsense", cwd=tmp_path)
    assert res.returncode == 2 and "cannot understand spec" in " ".join(res.stderr.split())
