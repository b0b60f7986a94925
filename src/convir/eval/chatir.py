"""The ChatIR / PlugIR evaluation protocol, as the official code runs it (``convir eval chatir``).

What the official ``eval.py`` of ChatIR (Levy et al., NeurIPS 2023) does, and this module with it:

* the gallery is the search space (``Search_Space_val_50k.json``, 50,000 COCO unlabeled2017
  images); row i of the corpus matrix is image i; every dialogue's target is in it;
* the query of dialogue d at turn t (t = 0 is the caption alone) is ``", ".join(dialog[:t+1])``
  (PlugIR's ``--split``: ``dialog[t]`` alone, here ``query="per-turn"``);
* each query is encoded by the text tower, truncated as the model's baseline does (CLIP:
  ``clip.tokenize(truncate=True)``, 77 tokens; BLIP: ``max_length=200``), L2-normalised, and
  scored by inner product against the L2-normalised corpus;
* the target's rank is its position in the descending order; Hits@K at turn t is the share of
  dialogues whose target was in the top K at ANY turn <= t (first hitting time), computed over
  all 2,064 dialogues (``--split all``); PlugIR adds Recall@K at turn t and BRI.

Where convir differs on purpose (documented in docs/evaluation.md): ties. The official code
orders by ``torch.argsort(descending=True)``, which does not promise any order among equal scores
(on GPU it can differ between runs); convir counts an equal-scoring item ahead of the target only
when its search-space index is lower, so ranks are reproducible. With float scores of real
embeddings exact ties are rare; duplicate images in a corpus are the usual cause.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from convir.encoders.base import l2_normalize
from convir.errors import ConvirError
from convir.eval.metrics import ranks_from_scores

log = logging.getLogger("convir")

SEP = ", "  # ChatIR's cfg['sep_token']
QUERY_MODES = ("concat", "per-turn")
LONG_TEXT = ("truncate", "chunk")
DEFAULT_KS = (1, 5, 10)
TIES = (
    "deterministic: an item scoring exactly like the target counts ahead of it only if its "
    "search-space index is lower (the official torch.argsort leaves ties in no defined order)"
)
_BLOCK_CELLS = 1 << 24  # queries x corpus rows scored at once (~64 MB of float32 scores)


@dataclass(frozen=True)
class Protocol:
    """How queries are built and ranked; everything that changes a rank is here (and in config)."""

    query: str = "concat"
    rounds: int | None = None  # question rounds after the caption; None = all the dialogues have
    long_text: str = "truncate"

    def __post_init__(self) -> None:
        if self.query not in QUERY_MODES:
            raise ConvirError(f"unknown --query {self.query!r}; use {' or '.join(QUERY_MODES)}")
        if self.long_text not in LONG_TEXT:
            raise ConvirError(f"unknown --long-text {self.long_text!r}; use {' or '.join(LONG_TEXT)}")
        if self.rounds is not None and self.rounds < 0:
            raise ConvirError("--rounds must be 0 or more")

    def n_turns(self, dialogues: Sequence[Any]) -> int:
        """Turns evaluated (caption + rounds); every dialogue must have them all."""
        shortest = min(len(d.turns) for d in dialogues)
        n = shortest if self.rounds is None else self.rounds + 1
        if n < 1:
            raise ConvirError("dialogues need at least one turn (the caption)")
        if n > shortest:
            short = next(d for d in dialogues if len(d.turns) < n)
            raise ConvirError(
                f"--rounds {self.rounds} needs {n} turns per dialogue, but dialogue {short.id} has "
                f"{len(short.turns)}"
            )
        return n

    def queries(self, turns: Sequence[str], n_turns: int) -> list[str]:
        """The text searched at each turn 0..n_turns-1."""
        if self.query == "per-turn":
            return [turns[t] for t in range(n_turns)]
        return [SEP.join(turns[: t + 1]) for t in range(n_turns)]

    def describe(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "separator": SEP,
            "rounds": self.rounds,
            "long_text": self.long_text,
            "ties": TIES,
        }


@dataclass
class DarSetup:
    """DAR on fixed dialogues: per turn, K diffusion prompts from the query, K images embedded by
    the image tower, fused query ``a * text + b * sum(images)`` (DAR's schedule by turn)."""

    imagination: Any  # convir.imagine.dar.DARImagination
    encoder: Any
    timings: dict[str, list[float]] = field(default_factory=dict)

    def fused(self, text_vecs: np.ndarray, queries: list[str]) -> tuple[np.ndarray, list[dict[str, Any]]]:
        from convir.imagine.fusion import dar_weights, fuse_query
        from convir.imagine.prompting import write_prompts

        imag = self.imagination
        gallery = SimpleNamespace(encoder=self.encoder)
        out = np.empty_like(text_vecs)
        logs: list[dict[str, Any]] = []
        for t, (vec, query) in enumerate(zip(text_vecs, queries, strict=True)):
            t0 = time.perf_counter()
            prompts, from_llm = write_prompts(imag.llm, query, imag.images_per_turn)
            timings = {"prompt_s": time.perf_counter() - t0}
            images, image_vecs, embedded = imag.generate_and_embed(gallery, prompts, timings)
            a, b = dar_weights(t, imag.schedule)
            out[t] = fuse_query(vec, image_vecs, a, b)
            logs.append(
                {
                    "prompts": prompts,
                    "prompts_from_llm": from_llm,
                    "images": [{"path": i.path, "prompt": i.prompt} for i in images],
                    "embedded": embedded,
                    "a": a,
                    "b": b,
                    **timings,
                }
            )
        return out, logs


def check_corpus_provenance(corpus_path: Path, encoder_spec: str) -> str | None:
    """A warning when ``convir embed corpus`` recorded another encoder for this corpus file."""
    meta_path = Path(f"{corpus_path}.json")
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict):
        return None
    embedded_with = meta.get("encoder_canonical") or meta.get("encoder")
    if embedded_with and embedded_with != encoder_spec:
        return (
            f"{corpus_path} was embedded with {embedded_with} but queries use {encoder_spec}; "
            "ranks are only meaningful when both towers come from the same model"
        )
    return None


def rank_block(query_vecs: np.ndarray, corpus: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """1-based rank of ``targets[i]`` for query i: inner product, descending, ties by index."""
    scores = np.asarray(query_vecs, dtype=np.float32) @ corpus.T
    return ranks_from_scores(scores, targets)


def evaluate(
    dialogues: Sequence[Any],
    positions: Sequence[int],
    encoder: Any,
    corpus: np.ndarray,
    protocol: Protocol,
    writer: Any,
    on_done: Callable[[int], None] | None = None,
    dar: DarSetup | None = None,
    batch_size: int = 64,
) -> np.ndarray:
    """(n_dialogues, n_turns) rank matrix; dialogues already in ``writer`` are not recomputed.

    ``corpus`` rows must be L2-normalised (see :func:`prepare_corpus`).
    """
    if len(dialogues) != len(positions):
        raise ValueError("one target position per dialogue")
    if not dialogues:
        raise ConvirError("no dialogues to evaluate (check --split and --limit)")
    n_turns = protocol.n_turns(dialogues)
    done = writer.done()
    per_block = max(1, _BLOCK_CELLS // max(1, n_turns * corpus.shape[0]))
    rows: dict[str, list[int]] = {}
    todo = [(d, p) for d, p in zip(dialogues, positions, strict=True) if d.id not in done]
    for d in dialogues:
        if d.id in done:
            cached = done[d.id]
            if len(cached) < n_turns:
                raise ConvirError("cached results have fewer turns than asked for: use a new --out folder")
            rows[d.id] = cached[:n_turns]
    if on_done and len(rows):
        on_done(len(rows))
    for start in range(0, len(todo), per_block):
        block = todo[start : start + per_block]
        queries = [q for d, _ in block for q in protocol.queries(d.turns, n_turns)]
        vecs = encoder.encode_text(queries, batch_size=batch_size)
        logs: list[list[dict[str, Any]]] = [[] for _ in block]
        if dar is not None:
            for i in range(len(block)):
                sl = slice(i * n_turns, (i + 1) * n_turns)
                vecs[sl], logs[i] = dar.fused(vecs[sl], queries[sl])
        targets = np.repeat(np.asarray([p for _, p in block], dtype=np.int64), n_turns)
        ranks = rank_block(vecs, corpus, targets).reshape(len(block), n_turns)
        for i, (d, _) in enumerate(block):
            extra: dict[str, Any] = {"target": d.target}
            if logs[i]:
                extra["turns"] = logs[i]
            writer.add(d.id, ranks[i], extra)
            rows[d.id] = [int(r) for r in ranks[i]]
        if on_done:
            on_done(len(block))
    return np.asarray([rows[d.id] for d in dialogues], dtype=np.int64)


def prepare_corpus(corpus: np.ndarray, encoder: Any) -> np.ndarray:
    """L2-normalised float32 corpus (the official code normalises before caching; doing it again
    changes nothing beyond float rounding), checked against the text tower's dimension."""
    if encoder.dim != corpus.shape[1]:
        raise ConvirError(
            f"text encoder {encoder.spec} gives {encoder.dim}-d vectors but the corpus embeddings are "
            f"{corpus.shape[1]}-d: use the text tower of the model that embedded the corpus"
        )
    return l2_normalize(np.asarray(corpus, dtype=np.float32))


def check_ks(ks: Sequence[int] | None) -> tuple[int, ...]:
    out = tuple(sorted({int(k) for k in ks})) if ks else DEFAULT_KS
    if any(k < 1 for k in out):
        raise ConvirError("--k must be 1 or more")
    return out


def protocol_report(protocol: Protocol, ks: Sequence[int], n_dialogues: int, n_turns: int) -> dict[str, Any]:
    return {**protocol.describe(), "k": list(ks), "dialogues": n_dialogues, "turns": n_turns}


@dataclass
class Plan:
    """A validated ``eval chatir`` run: data loaded, no model loaded yet."""

    config: dict[str, Any]
    dialogues: list[Any]
    positions: list[int]
    corpus: np.ndarray
    protocol: Protocol
    ks: tuple[int, ...]
    text_encoder: str
    device: str
    batch_size: int
    corpus_path: Path
    imagine: dict[str, Any] | None = None
    llm: str | None = None


def plan(
    dialogues_file: Path,
    corpus_embeddings: Path,
    text_encoder: str,
    search_space: Path | None = None,
    split: str = "test",
    limit: int | None = None,
    protocol: Protocol | None = None,
    ks: Sequence[int] | None = None,
    device: str = "cpu",
    batch_size: int = 64,
    imagine: dict[str, Any] | None = None,
    llm: str | None = None,
) -> Plan:
    """Check every option and load the dialogues, search space and corpus (not the models)."""
    from convir.datasets import load_chatir, split_items
    from convir.encoders.base import resolve_device
    from convir.eval.backends import load_corpus_embeddings
    from convir.specs import REGISTRY

    protocol = protocol or Protocol()
    ks = check_ks(ks)
    REGISTRY.parse("encoder", text_encoder)
    device = resolve_device(device)
    if batch_size < 1:
        raise ConvirError("--batch-size must be 1 or more")
    if imagine is not None:
        if imagine["imagine"] != "dar":
            raise ConvirError(
                "eval chatir replays fixed dialogues, so only --imagine dar applies (the refiner needs "
                "a user who answers questions about its images: use eval dialog --dataset ...)"
            )
        if imagine.get("dar_fusion", "query") != "query":
            raise ConvirError(
                "eval chatir ranks the whole corpus with DAR's query fusion (--dar-fusion query)"
            )
        if llm:
            REGISTRY.parse("llm", llm)
    elif llm:
        raise ConvirError("--llm is only used with --imagine dar (it writes the diffusion prompts)")
    space_file = search_space or dialogues_file.parent / "Search_Space_val_50k.json"
    dlgs, space = load_chatir(dialogues_file, space_file)
    assert space is not None
    chosen = split_items(dlgs, split, "chatir" if len(dlgs) == 2064 else None)
    chosen = chosen[:limit] if limit else chosen
    if not chosen:
        raise ConvirError(f"{dialogues_file}: no dialogues in split {split!r}")
    protocol.n_turns(chosen)  # a --rounds the dialogues cannot give fails before any model loads
    where = {path: i for i, path in enumerate(space)}
    corpus = load_corpus_embeddings(corpus_embeddings, expected_rows=len(space))
    config: dict[str, Any] = {
        "command": "eval chatir",
        "dialogues": str(dialogues_file),
        "search_space": str(space_file),
        "corpus_embeddings": str(corpus_embeddings),
        "text_encoder": text_encoder,
        "split": split,
        "query": protocol.query,
        "rounds": protocol.rounds,
        "long_text": protocol.long_text,
        "limit": limit,
    }
    if imagine is not None:  # recorded only when on
        config |= {**imagine, "llm": llm}
    return Plan(
        config=config,
        dialogues=chosen,
        positions=[where[d.target] for d in chosen],
        corpus=corpus,
        protocol=protocol,
        ks=ks,
        text_encoder=text_encoder,
        device=device,
        batch_size=batch_size,
        corpus_path=Path(corpus_embeddings),
        imagine=imagine,
        llm=llm,
    )


def run(plan: Plan, run_dir: Path, on_done: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Load the models, rank every dialogue at every turn, write the run folder; the report."""
    from convir.encoders import load_encoder
    from convir.eval.metrics import turn_metrics
    from convir.eval.runs import RunWriter

    writer = RunWriter(run_dir, plan.config)  # a folder of another run fails before models load
    encoder = load_encoder(plan.text_encoder, long_text=plan.protocol.long_text, device=plan.device)  # type: ignore[arg-type]
    warning = check_corpus_provenance(plan.corpus_path, encoder.spec)
    if warning:
        log.warning("%s", warning)
    corpus = prepare_corpus(plan.corpus, encoder)
    dar = imag = None
    if plan.imagine is not None:
        from convir.imagine import load_imagination
        from convir.imagine.options import imagination_options

        model = None
        if plan.llm:
            from convir.llm import load_llm

            model = load_llm(plan.llm)
        imag = load_imagination("dar", plan.imagine["generator"], model, **imagination_options(plan.imagine))
        if imag is not None:
            dar = DarSetup(imag, encoder)
    ranks = evaluate(
        plan.dialogues, plan.positions, encoder, corpus, plan.protocol, writer, on_done, dar, plan.batch_size
    )
    extra: dict[str, Any] = {
        "encoder": encoder.spec,
        "protocol": protocol_report(plan.protocol, plan.ks, len(plan.dialogues), ranks.shape[1]),
    }
    if plan.imagine is not None:
        from convir.eval.imagination import imagination_report

        extra["imagination"] = imagination_report(writer, plan.imagine)
    return writer.finish(turn_metrics(ranks, plan.ks), extra)


__all__ = [
    "DEFAULT_KS",
    "QUERY_MODES",
    "SEP",
    "TIES",
    "DarSetup",
    "Plan",
    "Protocol",
    "check_corpus_provenance",
    "check_ks",
    "evaluate",
    "plan",
    "prepare_corpus",
    "protocol_report",
    "rank_block",
    "run",
]
