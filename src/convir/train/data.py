"""Training data for ``convir train``: retrieval pairs (encoder) and rewriting records (rewriter).

Every source becomes the same records, so the trainers never see a file format:

* :class:`Pair` (query -> positive gallery text of item ``group``): the encoder learns to put a
  query next to its target's text. Pairs of one group are never in-batch negatives of each
  other (:func:`group_unique_order`).
* :class:`RewriteRecord` (dialogue + last turn -> self-contained query): what the rewriter
  learns to write.

Sources (see docs/training.md for the formats):

* ``coco5k-sim`` dev items (no LLM needed): each caption is a query for another caption of the
  same image, plus one dialogue-style query per item (description, then details from the
  held-out captions, joined the way the ``concat`` strategy joins turns);
* a finished ``convir eval dialog --dataset coco5k-sim|flickr8k-sim`` run folder: every turn's
  searched query -> the target's gallery text (ChatIR's recipe: train on dialogue queries);
* ChatIR dialogue files with an index whose items are the targets (positive: their captions);
* ReCQR JSONL (:func:`convir.datasets.load_recqr_jsonl`): dialogue -> gold rewrite, or
  -> the target's captions when an index is given;
* a pairs JSONL: ``{"query": str, "positive": str, "negative"?: str, "group"?: str}``.

Malformed input raises :class:`convir.datasets.DataFormatError` naming the file and line.
Training on the held-out ``test`` split is refused: the figures are reported there.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from convir.datasets._io import DataFormatError, iter_jsonl, nonempty_str, require
from convir.errors import ConvirError

SIM_BASE = {"coco5k-sim": "coco5k", "flickr8k-sim": "flickr8k"}
TEST_SPLIT_REFUSED = (
    "is the held-out test split: training on it would leak into every reported figure; "
    "train on --split dev (coco5k items 0-3999, ChatIR dialogues 0-1499)"
)


@dataclass(frozen=True)
class Pair:
    """One training example for the encoder: ``query`` should retrieve item ``group``."""

    query: str
    positive: str
    group: str
    negative: str | None = None


@dataclass
class PairSet:
    """Pairs plus the gallery they come from (hard negatives are mined among ``docs``)."""

    pairs: list[Pair]
    docs: dict[str, list[str]]  # group -> its gallery texts
    source: str
    images: dict[str, str] = field(default_factory=dict)  # group -> image file (image-text encoders)

    def __post_init__(self) -> None:
        if not self.pairs:
            raise ConvirError(f"{self.source}: no training pairs")


@dataclass(frozen=True)
class RewriteRecord:
    """A dialogue whose last turn needs the earlier ones, and the query it should become.

    ``exchanges`` are (question or None, answer) as in :class:`convir.dialog.state.Exchange`;
    ``images`` are captions of images shown in the history (the M setting), written into the
    dialogue as text when the model has no vision tower.
    """

    id: str
    description: str
    exchanges: tuple[tuple[str | None, str], ...]
    target: str
    item: str = ""
    images: tuple[str, ...] = ()

    @property
    def multimodal(self) -> bool:
        return bool(self.images)

    @property
    def last_query(self) -> str:
        """The user's last turn alone (the elliptical query a context-free system would search)."""
        if not self.exchanges:
            return self.description
        q, a = self.exchanges[-1]
        return f"{q.rstrip(' ?')}? {a}" if q else a

    def state(self) -> Any:
        """The :class:`DialogState` the ``rewrite`` strategy would see for this dialogue."""
        from convir.dialog.state import DialogState, Exchange

        return DialogState(self.description, [Exchange(q, a) for q, a in self.exchanges])


# -- helpers ---------------------------------------------------------------------------------------
def _refuse_test(split: str, what: str) -> None:
    if split == "test":
        raise ConvirError(f"--split test {TEST_SPLIT_REFUSED} ({what})")


def cycle_pick(texts: Sequence[str], k: int) -> str:
    return texts[k % len(texts)]


def _load_items(dataset: str, path: str | Path, split: str) -> list[Any]:
    from convir.eval.retrieval import load_items

    return load_items(dataset, path, split)


# -- encoder sources --------------------------------------------------------------------------------
def coco5k_sim_pairs(path: str | Path, split: str = "dev", dataset: str = "coco5k-sim") -> PairSet:
    """Pairs from the items of a simulated protocol's split, without an LLM.

    Per item with captions c_0..c_n: every caption is a query for the next one (the eval's
    query is one caption, its gallery text two others), and one dialogue-style query
    "c_0, c_3, c_4" (the description, then details the held-out captions add, joined as the
    ``concat`` strategy joins turns) is a query for c_1.
    """
    if dataset not in SIM_BASE:
        raise ConvirError(f"unknown --dataset {dataset!r}; available: {', '.join(SIM_BASE)}")
    _refuse_test(split, dataset)
    if dataset == "flickr8k-sim" and split != "all":
        raise ConvirError("flickr8k-sim has no documented dev/test split: use --split all")
    items = _load_items(SIM_BASE[dataset], path, split)
    pairs: list[Pair] = []
    docs: dict[str, list[str]] = {}
    for it in items:
        caps = [c.strip() for c in it.captions if c.strip()]
        docs[it.id] = caps
        for j, c in enumerate(caps):
            pairs.append(Pair(c, caps[(j + 1) % len(caps)], it.id))
        if len(caps) > 3:
            pairs.append(Pair(", ".join([caps[0], *caps[3:5]]), caps[1], it.id))
    images = {it.id: it.image for it in items if it.image}
    return PairSet(pairs, docs, f"{dataset} {path} --split {split}", images)


def run_pairs(run_dir: str | Path) -> PairSet:
    """Every turn's searched query of a finished simulated ``eval dialog`` run -> its target."""
    run_dir = Path(run_dir)
    cfg_path, targets_path = run_dir / "config.json", run_dir / "targets.jsonl"
    if not cfg_path.is_file() or not targets_path.is_file():
        raise ConvirError(f"{run_dir} is not an eval run folder (needs config.json and targets.jsonl)")
    try:
        config = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataFormatError(f"{cfg_path}: cannot read run config ({exc})") from exc
    dataset = config.get("dataset") if isinstance(config, dict) else None
    if dataset not in SIM_BASE or not config.get("path"):
        raise ConvirError(
            f"{run_dir} is not a simulated `convir eval dialog --dataset coco5k-sim|flickr8k-sim` run: "
            "only those record the gallery text of each target"
        )
    _refuse_test(str(config.get("split")), f"the run {run_dir}")
    items = {it.id: it for it in _load_items(SIM_BASE[dataset], config["path"], "all")}
    pairs: list[Pair] = []
    docs: dict[str, list[str]] = {}
    for lineno, rec in iter_jsonl(targets_path):
        where = f"{targets_path}, line {lineno}"
        target = nonempty_str(rec, "target", where)
        if target not in items:
            raise DataFormatError(f"{where}: target {target!r} is not in {config['path']}")
        turns = (rec.get("extra") or {}).get("turns")
        if not isinstance(turns, list):
            raise DataFormatError(f"{where}: no per-turn log (extra.turns); was it written by eval dialog?")
        gallery_text = list(items[target].captions[1:3])
        docs[target] = gallery_text
        seen: set[str] = set()
        for t, turn in enumerate(turns):
            query = turn.get("query") if isinstance(turn, dict) else None
            if query is None:
                continue  # a turn where nothing was asked keeps the previous ranking
            if not isinstance(query, str):
                raise DataFormatError(f"{where}: extra.turns[{t}].query must be a string")
            if query.strip() and query not in seen:
                seen.add(query)
                pairs.append(Pair(query, cycle_pick(gallery_text, len(seen) - 1), target))
    return PairSet(pairs, docs, f"run {run_dir}")


def _index_texts(index_dir: str | Path) -> tuple[Any, dict[str, list[str]]]:
    from convir.search import open_index

    idx = open_index(index_dir)
    found = idx.store.items(list(idx.ids))
    return idx, {i: [c for c in found[i].captions if c.strip()] for i in idx.ids if i in found}


def _need_texts(texts: dict[str, list[str]], targets: Iterable[str], index_dir: Any, what: str) -> None:
    targets = list(targets)
    missing = [t for t in targets if not texts.get(t)]
    if len(missing) == len(targets):
        raise ConvirError(
            f"none of the {what} targets has captions in the index {index_dir} "
            f"(e.g. {missing[0]!r}): the index must hold the target images with their captions"
        )


def chatir_pairs(
    dialogues_file: str | Path, index_dir: str | Path, split: str = "dev", rounds: str = "all"
) -> PairSet:
    """ChatIR dialogues: the query after round t is ", ".join(dialog[:t+1]) (ChatIR's protocol)."""
    from convir.datasets import load_chatir, split_items

    _refuse_test(split, str(dialogues_file))
    dialogues, _ = load_chatir(dialogues_file)
    chosen = split_items(dialogues, split, "chatir" if len(dialogues) == 2064 else None)
    _idx, texts = _index_texts(index_dir)
    _need_texts(texts, [d.target for d in chosen], index_dir, "ChatIR")
    pairs = []
    for d in chosen:
        caps = texts.get(d.target)
        if not caps:
            continue
        last = [len(d.turns) - 1] if rounds == "last" else range(len(d.turns))
        for t in last:
            pairs.append(Pair(", ".join(d.turns[: t + 1]), cycle_pick(caps, t), d.target))
    docs = {d.target: texts[d.target] for d in chosen if texts.get(d.target)}
    return PairSet(pairs, docs, f"chatir {dialogues_file} --split {split} + index {index_dir}")


def recqr_pairs(path: str | Path, index_dir: str | Path | None = None) -> PairSet:
    """ReCQR records: the whole dialogue -> the target's captions (with an index) or the gold rewrite."""
    from convir.datasets import load_recqr_jsonl

    records = load_recqr_jsonl(path)
    texts: dict[str, list[str]] = {}
    if index_dir is not None:
        _idx, texts = _index_texts(index_dir)
        _need_texts(texts, [r.target for r in records], index_dir, "ReCQR")
    pairs, docs = [], {}
    for r in records:
        positives = texts.get(r.target) if index_dir is not None else [str(r.rewritten)]
        if not positives:
            continue
        docs.setdefault(r.target, []).extend(p for p in positives if p not in docs.get(r.target, []))
        pairs.append(Pair(", ".join(r.turns), cycle_pick(positives, len(pairs)), r.target))
    return PairSet(pairs, docs, f"recqr {path}" + (f" + index {index_dir}" if index_dir else ""))


PAIR_KEYS = frozenset({"query", "positive", "negative", "group", "image"})


def jsonl_pairs(path: str | Path) -> PairSet:
    """``{"query": str, "positive": str, "negative"?: str, "group"?: str|int, "image"?: str}`` per line.

    ``group`` names the item the positive belongs to (default: the positive text itself);
    pairs of one group are never in-batch negatives of each other. ``image`` is the target's
    image file (relative paths are relative to the JSONL file), needed by image-text encoders,
    which learn against the image instead of ``positive`` (then optional).
    """
    path = Path(path)
    pairs: list[Pair] = []
    docs: dict[str, list[str]] = {}
    images: dict[str, str] = {}
    for lineno, rec in iter_jsonl(path):
        where = f"{path}, line {lineno}"
        unknown = set(rec) - PAIR_KEYS
        if unknown:
            raise DataFormatError(
                f"{where}: unknown key(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(PAIR_KEYS))}"
            )
        query = nonempty_str(rec, "query", where)
        image = nonempty_str(rec, "image", where) if "image" in rec else None
        # an image-text encoder learns against the image; the positive text is then optional
        positive = nonempty_str(rec, "positive", where) if image is None or "positive" in rec else image
        negative = nonempty_str(rec, "negative", where) if "negative" in rec else None
        group = str(require(rec, "group", (str, int), where)) if "group" in rec else (image or positive)
        if image is not None:
            images[group] = str((path.parent / image) if not Path(image).is_absolute() else Path(image))
        pairs.append(Pair(query, positive, group, negative))
        if positive not in docs.setdefault(group, []):
            docs[group].append(positive)
    return PairSet(pairs, docs, f"pairs {path}", images)


# -- batching -------------------------------------------------------------------------------------
def group_unique_order(groups: Sequence[str], batch_size: int, epochs: int, seed: int) -> list[int]:
    """Row order for ``epochs`` passes, cut by the trainer into batches of ``batch_size``, in
    which no batch holds two rows of one group (except in the last few, when only rows of a
    handful of groups are left).

    MultipleNegativesRankingLoss treats every other row of a batch as a negative; two captions
    of the same image in one batch would teach the model to push paraphrases apart. Each epoch
    is a seeded shuffle; a row whose group is already in the current batch waits for the next
    batch, so every batch is full and the trainer's fixed-size cuts line up with ours.
    """
    from collections import deque

    rng = random.Random(seed)
    stream: deque[int] = deque()
    for _ in range(epochs):
        rows = list(range(len(groups)))
        rng.shuffle(rows)
        stream.extend(rows)
    pending: deque[int] = deque()
    order: list[int] = []
    while stream or pending:
        batch: list[int] = []
        in_batch: set[str] = set()
        waiting: deque[int] = deque()
        for source in (pending, stream):
            while source and len(batch) < batch_size:
                i = source.popleft()
                if groups[i] in in_batch:
                    waiting.append(i)
                else:
                    batch.append(i)
                    in_batch.add(groups[i])
        if len(batch) < batch_size and waiting:  # the tail: only clashing rows are left
            while waiting and len(batch) < batch_size:
                batch.append(waiting.popleft())
        pending = waiting + pending
        order.extend(batch)
    return order


# -- rewriter sources -------------------------------------------------------------------------------
def _near_misses(items: list[Any], seed: int) -> dict[str, str]:
    """For each item, the caption of another item of the split that shares content words with
    its description (what a search would plausibly show): the image of an M record."""
    from convir.dialog.strategies import content_words

    rng = random.Random(seed)
    by_word: dict[str, list[int]] = {}
    words = [content_words(it.captions[0]) for it in items]
    for i, ws in enumerate(words):
        for w in ws:
            by_word.setdefault(w, []).append(i)
    out: dict[str, str] = {}
    for i, it in enumerate(items):
        scores: dict[int, int] = {}
        for w in words[i]:
            bucket = by_word.get(w, [])
            if len(bucket) > 200:  # too common a word ("man", "sitting") says little
                continue
            for j in bucket:
                if j != i:
                    scores[j] = scores.get(j, 0) + 1
        if scores:
            best = max(scores.values())
            j = rng.choice(sorted(k for k, v in scores.items() if v == best))
        else:
            j = rng.choice([k for k in range(len(items)) if k != i])
        out[it.id] = items[j].captions[1]
    return out


def sim_rewrite_records(
    path: str | Path, split: str = "dev", seed: int = 0, dataset: str = "coco5k-sim", for_eval: bool = False
) -> list[RewriteRecord]:
    """Rewriting records from the items of a simulated protocol, without an LLM.

    The description is captions[0]; the user then volunteers details from the held-out
    captions[3:] (as in coco5k-sim, where answers come only from them); the self-contained
    query to learn is captions[1], a caption the gallery holds for the target. T records are
    text only; each M record also shows, before the user's details, an image of another
    item (its caption, "[image: ...]") that the user rejects, so the rewrite must leave it out.
    ``for_eval`` allows the test split: held-out records to measure a rewriter on.
    """
    if dataset not in SIM_BASE:
        raise ConvirError(f"unknown --dataset {dataset!r}; available: {', '.join(SIM_BASE)}")
    if not for_eval:
        _refuse_test(split, dataset)
    items = [it for it in _load_items(SIM_BASE[dataset], path, split) if len(it.captions) >= 4]
    if not items:
        raise ConvirError(f"{dataset} {path} --split {split}: no item has the 4 captions a record needs")
    rng = random.Random(seed)
    shown = _near_misses(items, seed)
    records: list[RewriteRecord] = []
    for it in items:
        caps = [c.strip().rstrip(".") for c in it.captions]
        details = caps[3 : 3 + rng.choice((1, 2))]
        exchanges: list[tuple[str | None, str]] = [(None, d) for d in details]
        records.append(RewriteRecord(f"{it.id}#T", caps[0], tuple(exchanges), caps[1], it.id))
        image = shown[it.id].strip().rstrip(".")
        m_ex = [(f"is it like this one? [image: {image}]", "no"), *exchanges]
        records.append(RewriteRecord(f"{it.id}#M", caps[0], tuple(m_ex), caps[1], it.id, (image,)))
    return records


def recqr_rewrite_records(path: str | Path) -> list[RewriteRecord]:
    """ReCQR JSONL as rewriting records. A history turn ``{"image": ..., "caption": ...}`` is
    not a string, so images are given as an ``images`` key: ``[{"turn": i, "caption": str}]``
    (the caption is inserted as "[image: ...]" before turn i), or already inline in a turn as
    ``[photo: caption]`` / ``[image: caption]`` (how ``convir datagen recqr`` writes Stage Two
    records), which counts as an image in the history too."""
    from convir.datasets import load_recqr_jsonl

    path = Path(path)
    out = []
    for lineno_rec in zip(_recqr_lines(path), load_recqr_jsonl(path), strict=True):
        lineno, rec = lineno_rec
        where = f"{path}, line {lineno}"
        turns = list(rec.turns)
        images: list[str] = []
        raw_images = rec.meta.get("images", [])
        if not isinstance(raw_images, list):
            raise DataFormatError(f"{where}: key 'images' must be a list of {{'turn', 'caption'}}")
        for k, img in sorted(
            enumerate(raw_images), key=lambda kv: -(kv[1].get("turn", 0) if isinstance(kv[1], dict) else 0)
        ):
            if not isinstance(img, dict):
                raise DataFormatError(f"{where}: images[{k}] must be an object {{'turn', 'caption'}}")
            turn = require(img, "turn", int, f"{where}, images[{k}]")
            caption = nonempty_str(img, "caption", f"{where}, images[{k}]")
            if not 0 <= turn <= len(turns):
                raise DataFormatError(f"{where}: images[{k}].turn {turn} is outside the dialogue")
            turns.insert(turn, f"[image: {caption}]")
            images.append(caption)
        for t in rec.turns:  # images written inline by datagen: the caption is already there
            images += [m.group(1).strip() for m in _INLINE_IMAGE.finditer(t) if m.group(1).strip()]
        description, rest = turns[0], turns[1:]
        exchanges = tuple(_split_turn(t) for t in rest)
        out.append(
            RewriteRecord(rec.id, description, exchanges, str(rec.rewritten), rec.target, tuple(images))
        )
    return out


_INLINE_IMAGE = re.compile(r"\[(?:photo|image):\s*([^\]]+)\]")


def _recqr_lines(path: Path) -> list[int]:
    return [lineno for lineno, _ in iter_jsonl(path)]


def _split_turn(turn: str) -> tuple[str | None, str]:
    """ "question? answer" -> (question, answer); other text is volunteered (None, text)."""
    q, sep, a = turn.partition("?")
    if sep and a.strip():
        return q.strip() + "?", a.strip()
    return None, turn.strip()


def run_rewrite_records(run_dir: str | Path) -> list[RewriteRecord]:
    """Dialogues of a finished simulated run: its questions and the simulator's answers; the
    target query is the target's first gallery caption (captions[1])."""
    run_dir = Path(run_dir)
    run_pairs(run_dir)  # validates the folder, its records and its split
    config = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    items = {it.id: it for it in _load_items(SIM_BASE[config["dataset"]], config["path"], "all")}
    out = []
    for lineno, rec in iter_jsonl(run_dir / "targets.jsonl"):
        target = rec["target"]
        caps = items[target].captions
        exchanges = []
        for turn in rec["extra"]["turns"][1:]:
            if isinstance(turn, dict) and turn.get("question") and turn.get("answer"):
                exchanges.append((str(turn["question"]), str(turn["answer"])))
        if exchanges:
            out.append(RewriteRecord(f"{target}#{lineno}", caps[0], tuple(exchanges), caps[1], target))
    if not out:
        raise ConvirError(f"{run_dir}: no dialogue with answered questions")
    return out
