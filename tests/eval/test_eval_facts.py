"""`convir eval dialog` with no LLM at all: the facts simulated user (issue 28)."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import run_cli
from convir.dialog.answers import question_attribute
from convir.text import content_stems

SCENES = [
    [
        "a man riding a wave on a surfboard",
        "a surfer in the ocean",
        "a person surfing a big wave",
        "a surfer in a black wetsuit rides a wave",
        "the ocean wave is white and foamy",
    ],
    [
        "a red bus parked on a city street",
        "a double decker bus in a city",
        "a bus near tall buildings",
        "a red double decker bus next to a sidewalk",
        "people wait at a bus stop on the street",
    ],
    [
        "a dog catching a frisbee in a park",
        "a brown dog jumps in the grass",
        "a dog plays outside",
        "a brown dog leaps for a yellow frisbee",
        "green grass and trees in a sunny park",
    ],
    [
        "a plate of pasta with tomato sauce",
        "a dinner plate on a table",
        "food on a white plate",
        "spaghetti with red sauce and basil",
        "a fork next to the plate on a wooden table",
    ],
    [
        "a skier going down a snowy slope",
        "a person skiing on a mountain",
        "snow covered mountain",
        "a skier in a red jacket on fresh snow",
        "pine trees along the ski slope",
    ],
    [
        "a cat sleeping on a sofa",
        "a grey cat on a couch",
        "a pet resting indoors",
        "a grey cat curled up on a blue cushion",
        "a living room with a lamp",
    ],
    [
        "two giraffes standing in a field",
        "giraffes in the wild",
        "tall animals near trees",
        "two giraffes eat leaves from a tall tree",
        "a dry savanna under a blue sky",
    ],
    [
        "a kitchen with a refrigerator",
        "a white kitchen interior",
        "a room with cabinets",
        "a white refrigerator beside wooden cabinets",
        "a window above the kitchen sink",
    ],
    [
        "a train at a station platform",
        "a passenger train arrives",
        "a train on the tracks",
        "a yellow train waits at the platform",
        "people standing on the station platform",
    ],
    [
        "a boy flying a kite on a beach",
        "a child with a kite",
        "a kite in the sky",
        "a small boy holds a red kite string",
        "sand and waves on a windy beach",
    ],
    [
        "a man playing tennis on a court",
        "a tennis player swings",
        "a man with a racket",
        "a tennis player hits the ball with a racket",
        "a green tennis court with a net",
    ],
    [
        "a bowl of fruit on a counter",
        "apples and bananas in a bowl",
        "fresh fruit",
        "a glass bowl of red apples and yellow bananas",
        "a kitchen counter by a window",
    ],
]


def test_eval_dialog_runs_without_an_llm_and_never_contradicts_the_captions(tmp_path: Path) -> None:
    data = tmp_path / "coco"
    data.mkdir()
    (data / "Search_Space_coco.json").write_text(json.dumps([f"val/{i}.jpg" for i in range(len(SCENES))]))
    (data / "coco_captions.json").write_text(json.dumps([{"caption": c} for c in SCENES]))
    res = run_cli(
        "eval", "dialog", str(data), "--dataset", "coco5k-sim", "--split", "all", "--start", "vague:3",
        "--questioner", "infogain-open", "--turns", "6", "--json", "--out", str(tmp_path / "runs"),
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    run = Path(report["run_dir"])
    assert json.loads((run / "config.json").read_text())["answerer"] == "facts"
    assert len(report["metrics"]["hits@10"]) == 7
    captions = {f"val/{i}.jpg": c for i, c in enumerate(SCENES)}
    kinds: dict[str, int] = {}
    for line in (run / "targets.jsonl").read_text().splitlines():
        rec = json.loads(line)
        held_out = content_stems(" ".join(captions[rec["target"]][3:]))
        everything = content_stems(" ".join(captions[rec["target"]]))
        for turn in rec["extra"]["turns"]:
            q, a = turn.get("question"), turn.get("answer")
            if q is None or a is None:
                continue
            attr = question_attribute(q)
            if a == "I don't know":
                kind = "unknown"
            elif attr and a == "yes":
                kind = "yes"
                assert content_stems(attr) <= held_out, (q, a)  # a yes only when the facts say so
            elif attr and a == "no":
                kind = "no"
                assert not content_stems(attr) <= everything, (q, a)  # no caption mentions it
            else:
                kind = "text"
                assert attr is None and content_stems(a) <= held_out, (q, a)  # the facts' own words
            kinds[kind] = kinds.get(kind, 0) + 1
    assert kinds.get("yes") and kinds.get("no") and kinds.get("text"), kinds


def test_eval_dialog_refuses_the_human_answerer(tmp_path: Path) -> None:
    res = run_cli("eval", "dialog", str(tmp_path), "--dataset", "coco5k-sim", "--answerer", "human")
    assert res.returncode == 2 and "convir chat" in res.stderr
