"""``convir train encoder``: fine-tune the retriever's text encoder on dialogue queries.

* ``caption:`` (sentence-transformers) models: MultipleNegativesRankingLoss, i.e. InfoNCE
  with in-batch negatives (QueryFormer's objective), plus one mined hard negative per query
  taken from ranks ``lo``-``hi`` of a first retrieval with the base model (QueryFormer uses
  50-70: close enough to teach, far enough to be rarely a false negative on COCO, where many
  images look alike). The result is a sentence-transformers folder: ``caption:OUT``.
* ``open_clip:`` / ``hf:`` image-text models: ChatIR's recipe, the text tower alone learns to
  put a dialogue next to the frozen embedding of its target image (InfoNCE over the batch's
  images plus the mined hard-negative images). The result is a folder loadable as
  ``hf:OUT`` (transformers) or ``open_clip:ARCH//OUT/open_clip_model.pt`` (written in
  ``OUT/convir_train.json`` as ``spec``).

Batches never hold two examples of the same image (:func:`convir.train.data.group_unique_order`).
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from convir.errors import ConvirError
from convir.train.data import Pair, PairSet, group_unique_order
from convir.train.run import (
    INFO_FILE,
    Stopwatch,
    WorkFolder,
    progress_callback,
    quiet_trainer,
    set_seed,
    warmup_steps,
)

DEFAULT_WINDOW = (50, 70)


@dataclass
class EncoderOptions:
    base: str = "caption:minilm"
    epochs: int = 1
    batch_size: int = 64
    lr: float = 5e-5
    max_pairs: int | None = 3000
    hard_negatives: tuple[int, int] | None = DEFAULT_WINDOW
    seed: int = 0
    save_steps: int = 10
    warmup_ratio: float = 0.1
    device: str = "cpu"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_window(text: str) -> tuple[int, int] | None:
    """``"50-70"`` -> (50, 70) (1-based ranks, inclusive); ``"none"`` -> None."""
    text = text.strip().lower()
    if text in ("none", "off", "0"):
        return None
    lo, sep, hi = text.partition("-")
    if not sep or not lo.strip().isdigit() or not hi.strip().isdigit():
        raise ConvirError(f"--hard-negatives must be a rank window LO-HI (e.g. 50-70) or none, not {text!r}")
    a, b = int(lo), int(hi)
    if not 2 <= a <= b:
        raise ConvirError(f"--hard-negatives {text}: need 2 <= LO <= HI (rank 1 is usually the target)")
    return a, b


def validate(opts: EncoderOptions) -> str:
    """Check the options before any model loads; returns the base model's kind."""
    from convir.encoders import KINDS
    from convir.specs import parse_spec

    kind = parse_spec(opts.base, KINDS).kind
    if opts.epochs < 1 or opts.batch_size < 2:
        raise ConvirError("--epochs must be >= 1 and --batch-size >= 2 (in-batch negatives need company)")
    if not 0 < opts.lr < 1:
        raise ConvirError(f"--lr {opts.lr} is not a sensible learning rate (try 2e-5 .. 1e-4)")
    if opts.max_pairs is not None and opts.max_pairs < opts.batch_size:
        raise ConvirError(f"--max-pairs {opts.max_pairs} is smaller than one batch ({opts.batch_size})")
    if opts.save_steps < 1:
        raise ConvirError("--save-steps must be >= 1")
    if kind == "caption":
        from convir.encoders.caption import _resolve

        _resolve(opts.base.partition(":")[2] or "minilm")  # a missing folder fails now
    return kind


def subsample(pairs: list[Pair], max_pairs: int | None, seed: int) -> list[Pair]:
    """A seeded subset that keeps as many different items as possible (round-robin by group)."""
    if max_pairs is None or len(pairs) <= max_pairs:
        return list(pairs)
    rng = random.Random(seed)
    by_group: dict[str, list[Pair]] = {}
    for p in pairs:
        by_group.setdefault(p.group, []).append(p)
    groups = sorted(by_group)
    rng.shuffle(groups)
    for g in groups:
        rng.shuffle(by_group[g])
    out: list[Pair] = []
    depth = 0
    while len(out) < max_pairs:
        for g in groups:
            if depth < len(by_group[g]):
                out.append(by_group[g][depth])
                if len(out) == max_pairs:
                    break
        depth += 1
    return out


def mine_negatives(
    query_vecs: np.ndarray,
    pos_groups: list[str],
    group_ids: list[str],
    group_vecs: np.ndarray,
    window: tuple[int, int],
    seed: int,
) -> list[int]:
    """For each query, the index (into ``group_ids``) of a group ranked within ``window`` by the
    base model, never the query's own group; the window shrinks to fit small galleries."""
    rng = np.random.default_rng(seed)
    lo, hi = window
    n = len(group_ids)
    lo, hi = min(lo, max(n - 1, 1)), min(hi, max(n - 1, 1))
    where = {g: i for i, g in enumerate(group_ids)}
    out: list[int] = []
    for start in range(0, len(query_vecs), 1024):
        block = query_vecs[start : start + 1024] @ group_vecs.T
        order = np.argsort(-block, axis=1, kind="stable")
        for row, q in enumerate(range(start, start + len(block))):
            own = where.get(pos_groups[q], -1)
            ranked = order[row][order[row] != own]  # rank r (1-based) among the others: ranked[r - 2]
            cands = ranked[max(lo - 2, 0) : max(hi - 1, 1)]
            out.append(int(rng.choice(cands)) if len(cands) else int(ranked[0]))
    return out


def _group_vectors(encode: Any, docs: dict[str, list[str]]) -> tuple[list[str], np.ndarray]:
    """Item vectors as convir indexes them: the normalised mean of its texts' vectors."""
    from convir.encoders.base import l2_normalize

    ids = sorted(docs)
    flat = [t for g in ids for t in docs[g]]
    vecs = encode(flat)
    owner = np.repeat(np.arange(len(ids)), [len(docs[g]) for g in ids])
    out = np.zeros((len(ids), vecs.shape[1]), dtype=np.float32)
    np.add.at(out, owner, vecs)
    return ids, l2_normalize(out)


def build_examples(
    pairs: list[Pair], docs: dict[str, list[str]], window: tuple[int, int] | None, encode: Any, seed: int
) -> list[dict[str, Any]]:
    """Rows ``{"anchor", "positive", "group"[, "negative"]}``; negatives mined with ``encode``
    when ``window`` is set (pairs that bring their own negative keep it)."""
    rows = [{"anchor": p.query, "positive": p.positive, "group": p.group} for p in pairs]
    if window is None:
        if any(p.negative for p in pairs):
            rng = random.Random(seed)
            other = [p.positive for p in pairs]
            for r, p in zip(rows, pairs, strict=True):
                r["negative"] = p.negative or rng.choice(other)
        return rows
    need = [i for i, p in enumerate(pairs) if not p.negative]
    # captions are often both queries and gallery texts: encode every distinct text once
    texts = sorted({t for ts in docs.values() for t in ts} | {pairs[i].query for i in need})
    vecs = encode(texts)
    row = {t: k for k, t in enumerate(texts)}

    def cached(batch: list[str]) -> np.ndarray:
        return vecs[[row[t] for t in batch]]

    group_ids, group_vecs = _group_vectors(cached, docs)
    qvecs = cached([pairs[i].query for i in need]) if need else np.zeros((0, group_vecs.shape[1]))
    picks = mine_negatives(qvecs, [pairs[i].group for i in need], group_ids, group_vecs, window, seed)
    rng = random.Random(seed)
    for i, p in enumerate(pairs):
        rows[i]["negative"] = p.negative
    for i, g in zip(need, picks, strict=True):
        rows[i]["negative"] = rng.choice(docs[group_ids[g]])
        rows[i]["negative_group"] = group_ids[g]
    return rows


def train_encoder(data: PairSet, out: Path, opts: EncoderOptions, quiet: bool = False) -> dict[str, Any]:
    """Fine-tune ``opts.base`` on ``data`` into the folder ``out``; returns the provenance."""
    kind = validate(opts)
    pairs = subsample(data.pairs, opts.max_pairs, opts.seed)
    work = WorkFolder(out, {"kind": "encoder", "data": data.source, "n_pairs": len(pairs), **opts.to_dict()})
    work.check_out()
    if kind != "caption":
        from convir.train.text_tower import train_text_tower

        return train_text_tower(data, pairs, work, opts, quiet)
    return _train_caption(data, pairs, work, opts, quiet)


def _train_caption(
    data: PairSet, pairs: list[Pair], work: WorkFolder, opts: EncoderOptions, quiet: bool
) -> dict:
    from convir._compat import ensure_torchvision

    ensure_torchvision()
    import os

    from convir.encoders.caption import _resolve
    from convir.train._st_sampler import SequentialBatchSampler

    path, offline = _resolve(opts.base.partition(":")[2] or "minilm")
    if offline:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
        losses,
    )

    clock = Stopwatch()
    set_seed(opts.seed)
    model = SentenceTransformer(path, device=opts.device)
    work.start()

    def encode(texts: list[str]) -> np.ndarray:
        return model.encode(
            texts, batch_size=128, convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False
        )

    rows = work.examples(lambda: build_examples(pairs, data.docs, opts.hard_negatives, encode, opts.seed))
    order = group_unique_order([r["group"] for r in rows], opts.batch_size, opts.epochs, opts.seed)
    columns = ["anchor", "positive"] + (["negative"] if "negative" in rows[0] else [])
    dataset = Dataset.from_dict({c: [rows[i][c] for i in order] for c in columns})
    args = SentenceTransformerTrainingArguments(
        output_dir=str(work.checkpoints),
        num_train_epochs=1,  # the epochs are already laid out in ``order``
        per_device_train_batch_size=opts.batch_size,
        learning_rate=opts.lr,
        warmup_steps=warmup_steps(len(dataset), opts.batch_size, opts.warmup_ratio),
        seed=opts.seed,
        data_seed=opts.seed,
        save_strategy="steps",
        save_steps=opts.save_steps,
        save_total_limit=1,
        logging_steps=1,
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        use_cpu=opts.device == "cpu",
        batch_sampler=SequentialBatchSampler,
    )
    bar = progress_callback("train encoder", quiet)
    trainer = SentenceTransformerTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        loss=losses.MultipleNegativesRankingLoss(model),
        callbacks=[bar],
    )
    quiet_trainer(trainer)
    resume = work.last_checkpoint()
    trainer.train(resume_from_checkpoint=resume)
    info = {
        "spec": f"caption:{work.out}",
        "base": opts.base,
        "objective": "MultipleNegativesRankingLoss (InfoNCE, in-batch negatives)"
        + (
            f" + hard negatives from ranks {opts.hard_negatives[0]}-{opts.hard_negatives[1]}"
            if opts.hard_negatives
            else ""
        ),
        "examples": len(rows),
        "steps": int(trainer.state.global_step),
        "resumed_from": Path(resume).name if resume else None,
        "loss": bar.losses,
        **clock.report(),
    }
    work.finish(lambda tmp: model.save(str(tmp)), info)
    return info


__all__ = ["DEFAULT_WINDOW", "INFO_FILE", "EncoderOptions", "parse_window", "train_encoder"]
