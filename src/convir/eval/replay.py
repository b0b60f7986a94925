"""Multi-turn evaluation: replay fixed dialogues through a strategy and rank the target each turn.

ChatIR protocol (``strategy=concat``): the query at turn t is ", ".join(dialog[:t+1]) and
Hits@K(t) is the share of dialogues whose target was in the top K at any turn <= t. Results
are written per target as they are computed (see :class:`RunWriter`), so a killed run
resumes where it stopped and a finished one is a cache.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from convir.dialog.strategies import query_for_turns
from convir.errors import ConvirError


def replay(
    dialogues: Sequence[Any],
    target_positions: Sequence[int],
    strategy: Any,
    backend: Any,
    writer: Any,
    turns: int | None = None,
    on_done: Callable[[int], None] | None = None,
) -> np.ndarray:
    """(n_dialogues, n_turns) rank matrix; targets already in ``writer`` are not recomputed."""
    done = writer.done()
    n_turns = turns if turns is not None else min(len(d.turns) for d in dialogues)
    if n_turns < 1:
        raise ConvirError("dialogues need at least one turn")
    rows: list[list[int]] = []
    for dlg, target in zip(dialogues, target_positions, strict=True):
        if dlg.id in done:
            rows.append(done[dlg.id][:n_turns])
        else:
            if len(dlg.turns) < n_turns:
                raise ConvirError(
                    f"dialogue {dlg.id} has {len(dlg.turns)} turns, fewer than the {n_turns} asked for"
                )
            queries = [query_for_turns(strategy, list(dlg.turns[: t + 1])) for t in range(n_turns)]
            ranks = backend.ranks(queries, np.full(n_turns, target))
            writer.add(dlg.id, ranks, {"target": dlg.target})
            rows.append(ranks)
        if on_done:
            on_done(1)
    if any(len(r) != n_turns for r in rows):
        raise ConvirError("cached results have fewer turns than asked for: use a new --out folder")
    return np.asarray(rows, dtype=np.int64)


# -- the `convir eval replay` / `convir eval chatir` commands' work -----------------------------


def embedding_backend(corpus_embeddings: Any, search_space: list[str], text_encoder: str) -> Any:
    """Exact ranks against a user's corpus embedding matrix (row i = search-space image i)."""
    from convir.encoders import load_encoder
    from convir.eval.backends import EmbeddingBackend, load_corpus_embeddings

    corpus = load_corpus_embeddings(corpus_embeddings, expected_rows=len(search_space))
    return EmbeddingBackend(corpus, load_encoder(text_encoder))


def run_replay(
    kind: str,
    config: dict[str, Any],
    dialogues: list[Any],
    positions: list[int],
    backend: Any,
    strategy: Any,
    turns: int | None,
    out: Any,
    progress: Any,
    limit: int | None = None,
) -> tuple[dict[str, Any], Any]:
    """Replay ``dialogues`` through ``strategy`` into a run folder; (report, run folder)."""
    from convir.eval.metrics import turn_metrics
    from convir.eval.runs import RunWriter, run_dir_for

    config = {**config, "limit": limit}  # part of a replay folder's name (as before `eval replay`)
    run_dir = run_dir_for(out, kind, config)
    writer = RunWriter(run_dir, config)
    with progress as bar:
        task = bar.add_task("replay", total=len(dialogues))
        ranks = replay(
            dialogues, positions, strategy, backend, writer, turns, on_done=lambda n: bar.advance(task, n)
        )
    return writer.finish(turn_metrics(ranks), targets=[d.id for d in dialogues]), run_dir
