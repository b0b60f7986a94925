"""``convir eval recqr``: ReCQR's Table 3 on a gallery index.

For every record the target image is searched with several queries and Recall@1/5/10 is
reported per query kind, text-only (Stage One) and multimodal (Stage Two) parts apart:

* ``original query`` — the elliptical last user message alone (what a retriever without
  context gets);
* ``target query`` — the gold self-contained rewrite (the ceiling a rewriter aims for);
* ``caption`` — the target image's caption (with a caption-based index such as
  ``--format coco-captions`` this caption is indexed text, so the row is an upper bound,
  not a fair query);
* ``dialogue + query`` — every turn and the original query joined with ", " (ChatIR's
  concatenation baseline);
* ``rewrite (SPEC)`` — the dialogue and original query rewritten by an LLM through
  :class:`convir.dialog.strategies.RewriteStrategy` (zero-shot prompts, or a fine-tuned
  ``hf:PATH`` rewriter; both load through :func:`convir.llm.load_llm`).

In a multimodal record the photo the user shared is shown to text models as its caption
(``[photo: ...]``). Ranks are exact over the whole index (dense or BM25; hybrid within its
fused pool), from the same :class:`convir.index.ranker.Ranker` that ``convir search`` uses.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from convir.errors import ConvirError

BASE_ROWS = ("original query", "target query", "caption", "dialogue + query")


def load_records(path: Path, split: str = "all", include_rejected: bool = False) -> list[dict[str, Any]]:
    """The usable records of a ``convir datagen recqr`` file (accepted ones unless told)."""
    from convir.datagen.recqr import read_records

    path = Path(path)
    if not path.is_file():
        raise ConvirError(f"{path} not found: give the .jsonl written by `convir datagen recqr`")
    records, bad = read_records(path)
    if bad:
        raise ConvirError(f"{path}: {bad} line(s) are not JSON records")
    need = ("dialogue", "original_query", "target_query", "target")
    out = []
    for r in records:
        if r.get("status", "ok") != "ok" or not all(r.get(k) for k in need):
            continue
        if not include_rejected and not r.get("accepted", True):
            continue
        if split != "all" and r.get("split") != split:
            continue
        out.append(r)
    if not out:
        raise ConvirError(
            f"{path} has no {'usable' if include_rejected else 'accepted'} records"
            + (f" in split {split!r}" if split != "all" else "")
        )
    return out


def dialog_state(rec: dict[str, Any]) -> Any:
    """The record as a :class:`DialogState`: the first user turn is the description, each
    system turn the question the next user turn answers, the original query the last answer."""
    from convir.dialog.state import DialogState, Exchange

    def text(turn: dict[str, Any]) -> str:
        photo = f"[photo: {turn['image_caption']}] " if turn.get("image_caption") else ""
        return (photo + turn["text"]).strip()

    turns = list(rec["dialogue"])
    if not turns or turns[0]["role"] != "user":
        return DialogState(rec["original_query"])
    state = DialogState(text(turns[0]))
    question: str | None = None
    for t in turns[1:]:
        if t["role"] == "system":
            question = f"{question} {text(t)}" if question else text(t)
        else:
            state.exchanges.append(Exchange(question, text(t)))
            question = None
    state.exchanges.append(Exchange(question, rec["original_query"]))
    return state


def concat_query(rec: dict[str, Any]) -> str:
    return ", ".join([*dialog_state(rec).turns])


def base_queries(rec: dict[str, Any]) -> dict[str, str]:
    return {
        "original query": rec["original_query"],
        "target query": rec["target_query"],
        "caption": rec.get("caption") or rec["target_query"],
        "dialogue + query": concat_query(rec),
    }


def run_table3(
    records: list[dict[str, Any]],
    index: Any,
    rewriters: dict[str, Any],
    mode: str = "dense",
    on_rewrite: Callable[[int], None] = lambda n: None,
) -> dict[str, Any]:
    """Rows of Table 3 (R@1/5/10 and MRR per part); ``rewriters``: row name -> RewriteStrategy."""
    import numpy as np

    from convir.eval.backends import RankerBackend
    from convir.eval.report import single_metrics

    missing = [r["target"] for r in records if r["target"] not in index.position]
    if missing:
        raise ConvirError(
            f"{len(missing)} record targets are not in the index (e.g. {missing[0]!r}): "
            "index the gallery the dataset was built from"
        )
    backend = RankerBackend(index, mode)
    queries: dict[str, list[str]] = {row: [] for row in (*BASE_ROWS, *rewriters)}
    rewritten: dict[str, list[str]] = {row: [] for row in rewriters}
    for rec in records:
        for row, q in base_queries(rec).items():
            queries[row].append(q)
        for row, strategy in rewriters.items():
            q, _used = strategy.rewrite(dialog_state(rec))
            queries[row].append(q)
            rewritten[row].append(q)
            on_rewrite(1)
    targets = np.array([index.position[r["target"]] for r in records])
    parts = np.array([r.get("part", "text") for r in records])
    rows = []
    for row, texts in queries.items():
        ranks = np.asarray(backend.ranks(texts, targets), dtype=np.int64)
        entry: dict[str, Any] = {"query": row}
        for part in ("text", "multimodal"):
            sel = parts == part
            entry[part] = single_metrics(ranks[sel]) if sel.any() else None
        entry["all"] = single_metrics(ranks)
        rows.append(entry)
    return {
        "n": {p: int((parts == p).sum()) for p in ("text", "multimodal")},
        "encoder": index.encoder_spec,
        "mode": mode,
        "rows": rows,
        "rewrites": {
            row: dict(zip([r["id"] for r in records], qs, strict=True)) for row, qs in rewritten.items()
        },
    }


def table3_markdown(report: dict[str, Any]) -> str:
    """Table 3's layout: one row per query kind, R@1/5/10 (percent) per part."""
    n = report["n"]
    head = (
        "| Query | Text-only R@1 | R@5 | R@10 | Multimodal R@1 | R@5 | R@10 |\n"
        "|---|---:|---:|---:|---:|---:|---:|\n"
    )
    lines = []
    for row in report["rows"]:
        cells = []
        for part in ("text", "multimodal"):
            m = row.get(part)
            cells += [f"{100 * m[f'R@{k}']:.1f}" if m else "-" for k in (1, 5, 10)]
        lines.append(f"| {row['query']} | " + " | ".join(cells) + " |")
    foot = (
        f"\n{n['text']} text-only and {n['multimodal']} multimodal records; encoder "
        f"{report['encoder']}, {report['mode']} ranking over {report.get('gallery', '?')} images."
    )
    return head + "\n".join(lines) + "\n" + foot
