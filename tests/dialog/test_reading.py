"""The answer reader on a hand-written set of what people type (tests/dialog/data/answer_readings.jsonl).

Each line: question (null = text volunteered without a question), answer, and the expected
reading: polarity, the negated phrases, and the new facts. Phrases are compared by content
stems (convir.text), the facts by the stems they add to the question ("Is the man wearing a
hat? yes, a red hat" adds "red"), since that is what the search gets from them. The set was
written before the reader; the reader must get at least 97% of the answers wholly right (on a
second, smaller set too, written later).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from convir.dialog.reading import read
from convir.text import content_stems

DATA = Path(__file__).parent / "data" / "answer_readings.jsonl"
# written after the reader's first version and before its last changes (32/40 then)
HELD_OUT = Path(__file__).parent / "data" / "answer_readings_heldout.jsonl"


def rows(path: Path = DATA) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def agrees(row: dict[str, Any]) -> tuple[bool, str]:
    q = row["question"]
    got = read(row["answer"], q, volunteered=q is None)
    q_stems = content_stems(q or "")
    neg = {content_stems(p) for p in got.negated}
    want_neg = {content_stems(p) for p in row["negated"]}
    facts = content_stems(" ".join(got.facts)) - q_stems
    want_facts = content_stems(" ".join(row["facts"])) - q_stems
    ok = got.polarity == row["polarity"] and neg == want_neg and facts == want_facts
    return ok, f"{q!r} {row['answer']!r}: got {got}, want {row['polarity']} {row['negated']} {row['facts']}"


def test_the_set_is_large_and_varied() -> None:
    data = rows()
    assert len(data) >= 150
    assert {r["polarity"] for r in data} == {"yes", "no", "unknown", "text"}
    assert sum(bool(r["negated"]) for r in data) >= 30 and sum(bool(r["facts"]) for r in data) >= 50


@pytest.mark.parametrize("path", [DATA, HELD_OUT], ids=["set", "held-out"])
def test_reader_accuracy_on_the_hand_written_set(path: Path) -> None:
    data = rows(path)
    misses = [msg for ok, msg in map(agrees, data) if not ok]
    accuracy = 1 - len(misses) / len(data)
    print(f"answer reading accuracy: {accuracy:.3f} ({len(data) - len(misses)}/{len(data)})")
    for m in misses:
        print("  miss:", m)
    assert accuracy >= 0.97, "\n".join(misses)


def test_the_dialogue_reads_what_people_type() -> None:
    from convir.dialog.answers import evidence, negated_phrases, read_answer, text_view
    from convir.dialog.state import DialogState, Exchange

    assert read_answer("idk") == read_answer("i dont know") == read_answer("dunno") == "unknown"
    assert negated_phrases("a red bike, not on a road") == ["road"]
    st = DialogState("a man outdoors", [Exchange("Is there rocks in the photo?", "idk")])
    assert text_view(st).turns == ["a man outdoors"] and evidence(st) == []  # "idk" adds nothing
    st = DialogState(
        "a red bike, not on a road",
        [Exchange("Is the car red?", "no, it's blue"), Exchange("Is there a dog?", "yes, and it is sunny")],
    )
    assert text_view(st).turns == ["a red bike", "blue", "Is there a dog? yes, and it is sunny"]
    got = {(f.phrase, f.reading) for f in evidence(st)}
    assert got == {("road", "no"), ("car red", "no"), ("dog", "yes")}
