"""Human review of the judged records: a CSV for two annotators and a tie-breaker.

ReCQR follows the LLM judge with a manual review. ``OUT.review.csv`` lists every record the
judge accepted with what a reviewer needs (dialogue, original query, target query, the
judge's scores) and three empty columns: ``annotator_1``, ``annotator_2`` (``accept`` /
``reject``) and ``tie_breaker`` (used only when the two disagree). Re-exporting keeps what
was already filled in. ``convir datagen review-merge OUT.jsonl REVIEW.csv`` writes the
decisions back: both annotators agree -> their decision; they disagree -> the tie-breaker's
(rows still without one are reported and keep the judge's decision); a row with no
annotation keeps the judge's decision.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from convir.errors import ConvirError

COLUMNS = (
    "id",
    "part",
    "dialogue",
    "original_query",
    "target_query",
    "caption",
    "judge_score",
    "annotator_1",
    "annotator_2",
    "tie_breaker",
)
VOTES = ("annotator_1", "annotator_2", "tie_breaker")
_VALUES = {
    "accept": "accept",
    "a": "accept",
    "yes": "accept",
    "y": "accept",
    "1": "accept",
    "reject": "reject",
    "r": "reject",
    "no": "reject",
    "n": "reject",
    "0": "reject",
    "": "",
}


def _vote(value: str | None, where: str) -> str:
    v = (value or "").strip().lower()
    if v not in _VALUES:
        raise ConvirError(f"{where}: {value!r} is not accept/reject (or empty)")
    return _VALUES[v]


def read_review(path: Path) -> dict[str, dict[str, str]]:
    """id -> {annotator_1, annotator_2, tie_breaker} (normalised to accept/reject/"")."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ConvirError(f"cannot read review file {path}: {exc.strerror or exc}") from exc
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in ("id", *VOTES) if c not in (reader.fieldnames or [])]
    if missing:
        raise ConvirError(f"{path}: missing column(s) {', '.join(missing)}; expected {', '.join(COLUMNS)}")
    out: dict[str, dict[str, str]] = {}
    for n, row in enumerate(reader, 2):
        rid = (row.get("id") or "").strip()
        if not rid:
            raise ConvirError(f"{path}, line {n}: empty id")
        out[rid] = {c: _vote(row.get(c), f"{path}, line {n}, column {c}") for c in VOTES}
    return out


def export_review(records: list[dict[str, Any]], path: Path, everything: bool = False) -> int:
    """Write the review CSV (judge-accepted records, or all with ``everything``), keeping the
    votes already in ``path``. Returns the number of rows."""
    from convir.atomic import write_text
    from convir.datagen.recqr import render_dialogue

    kept = read_review(path) if Path(path).exists() else {}
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS)
    writer.writeheader()
    n = 0
    for r in records:
        judged_ok = r.get("status") == "ok" and (r.get("judge") or {}).get("score") is not None
        if not (everything or r["id"] in kept or (judged_ok and r.get("judge_accepted", r.get("accepted")))):
            continue
        votes = kept.get(r["id"], {})
        writer.writerow(
            {
                "id": r["id"],
                "part": r.get("part", ""),
                "dialogue": render_dialogue(r.get("dialogue") or []),
                "original_query": r.get("original_query", ""),
                "target_query": r.get("target_query", ""),
                "caption": r.get("caption", ""),
                "judge_score": (r.get("judge") or {}).get("score", ""),
                **{c: votes.get(c, "") for c in VOTES},
            }
        )
        n += 1
    write_text(Path(path), buf.getvalue())
    return n


def decide(votes: dict[str, str]) -> str | None:
    """accept / reject / None (no annotation) / "unresolved" (disagreement, no tie-breaker)."""
    a, b, tie = votes.get("annotator_1", ""), votes.get("annotator_2", ""), votes.get("tie_breaker", "")
    if not a and not b:
        return tie or None
    if a and b and a != b:
        return tie or "unresolved"
    return a or b


def merge_review(records: list[dict[str, Any]], review: dict[str, dict[str, str]]) -> dict[str, int]:
    """Store each reviewed record's votes and decision in ``record["human"]``; counts."""
    by_id = {r["id"]: r for r in records}
    unknown = [rid for rid in review if rid not in by_id]
    if unknown:
        raise ConvirError(f"the review file has {len(unknown)} id(s) not in the dataset, e.g. {unknown[0]!r}")
    counts = {"accept": 0, "reject": 0, "unresolved": 0, "unreviewed": 0}
    for rid, votes in review.items():
        decision = decide(votes)
        rec = by_id[rid]
        if decision is None:
            counts["unreviewed"] += 1
            rec.pop("human", None)
            continue
        counts[decision] += 1
        rec["human"] = {**votes, "decision": decision}
    return counts
