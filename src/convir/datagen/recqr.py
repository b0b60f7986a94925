"""The ReCQR construction pipeline: images -> judged conversational query-rewriting records.

Stage One, per image I: caption C (a VLM looking at the image, or the gallery's own caption),
target query T = LLM(C; recqr_target), dialogue history D = LLM(T; recqr_dialogue) as
user/system turns ending with the system's turn, entity sets E_D and E_T (spaCy) and their
overlap, and the elliptical original query O = LLM(D, T, overlap; recqr_ellipsis) with
few-shot examples S drawn from a file. Stage Two, per kept pair (I1, I2) whose captions'
entities are related in a knowledge graph: D2 = D1 + LLM(T2, D1, C1; recqr_dialogue2) (the
user shares I1, the system replies), O2 as above. An LLM judge scores every (dialogue,
original query, target query) 1-5 on coherence, omission and reconstructability; a record
whose mean is below ``min_score`` is kept in the file but not accepted.

The output is one JSON object per line, appended and fsynced as each record finishes, so a
killed run loses at most the record in progress and a re-run skips finished ones. A model
failure (server down, timeout) leaves that record unwritten (the re-run retries it); an
answer that cannot be parsed is deterministic at temperature 0, so it is written as
``status: "invalid"`` with the raw text instead of being retried forever. Every usable record
also carries the ReCQR loader keys (``history``, ``query``, ``rewrite``, ``target``), so
:func:`convir.datasets.load_recqr_jsonl` reads the split files as they are.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from convir.errors import ConvirError
from convir.llm.base import GenParams, LLMError

log = logging.getLogger("convir")

PARTS = ("text", "multimodal")
SPLIT_NAMES = ("train", "dev", "test")
# ReCQR's Table 2 proportions could not be retrieved here (see docs/datagen.md): 8:1:1.
DEFAULT_RATIOS = (0.8, 0.1, 0.1)
CRITERIA = ("coherence", "omission", "reconstruct")
SCORE_DIGITS = ("1", "2", "3", "4", "5")
JUDGE_MODES = ("auto", "text", "expected")
_TURN = re.compile(r"(?:^|\n|\|)\s*(user|system|assistant)\s*:\s*", re.IGNORECASE)
_LABEL = r"^\s*(request|next message|short message|message|caption|query|user)\s*:\s*"
_PHOTO = re.compile(r"^\s*\[(?:photo|image)[^\]]*\]\s*", re.IGNORECASE)


class InvalidOutput(Exception):
    """An LLM answer the pipeline cannot use (recorded, not retried)."""

    def __init__(self, step: str, raw: str, why: str) -> None:
        super().__init__(f"{step}: {why}")
        self.step, self.raw, self.why = step, raw, why


@dataclass
class SourceImage:
    """One image of the input: an id, an optional image file, and any captions it came with."""

    id: str
    image: str | None = None
    captions: list[str] = field(default_factory=list)


@dataclass
class RecqrConfig:
    llm: str
    judge_llm: str | None = None
    vlm: str | None = None
    entities: str = "auto"
    kg: str = "embedding"
    kg_min: float | None = None
    pairs: int | None = None  # most Stage Two records; None = one per accepted first image with a partner
    min_score: float = 3.0
    judge_mode: str = "auto"  # auto | text | expected (see RecqrGenerator.judge)
    n_examples: int = 3
    examples: str | None = None
    seed: int = 0
    ratios: tuple[float, float, float] = DEFAULT_RATIOS

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ----------------------------------------------------------------------------- text helpers


def render_turn(turn: dict[str, Any]) -> str:
    who = "User" if turn["role"] == "user" else "System"
    photo = f"[photo: {turn['image_caption']}] " if turn.get("image_caption") else ""
    return f"{who}: {photo}{turn['text']}".rstrip()


def render_dialogue(turns: list[dict[str, Any]]) -> str:
    """One line, turns joined by " | " (few-shot examples are one line each; models copy that)."""
    return " | ".join(render_turn(t) for t in turns)


def parse_turns(text: str, first_role: str = "user") -> list[dict[str, str]]:
    """``User: ... | System: ...`` (or one turn per line) -> [{"role", "text"}], merged so
    roles alternate; text before the first label belongs to ``first_role``."""
    text = text.strip()
    if not _TURN.match(text):
        text = f"{'User' if first_role == 'user' else 'System'}: {text}"
    parts = _TURN.split(text)
    turns: list[dict[str, str]] = []
    for label, body in zip(parts[1::2], parts[2::2], strict=True):
        role = "user" if label.lower() == "user" else "system"
        body = " ".join(body.split()).strip(" |")
        if not body:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["text"] += " " + body
        else:
            turns.append({"role": role, "text": body})
    return turns


def one_line(text: str) -> str:
    """First non-empty line, without a leading label or quotes."""
    for line in (text or "").strip().splitlines():
        line = re.sub(_LABEL, "", line, flags=re.IGNORECASE)
        line = line.strip().strip('"').strip()
        if line:
            return line
    return ""


def _norm(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def parse_scores(text: str) -> dict[str, int] | None:
    """``coherence 5, omission 4, reconstruct 5`` (or three bare digits) -> scores, else None."""
    found: dict[str, int] = {}
    for name in CRITERIA:
        m = re.search(rf"{name[:5]}\w*\D{{0,3}}([1-5])", text, re.IGNORECASE)
        if m:
            found[name] = int(m.group(1))
    if len(found) == 3:
        return found
    digits = re.findall(r"(?<!\d)([1-5])(?!\d)", text)
    if len(digits) >= 3:
        return dict(zip(CRITERIA, map(int, digits[:3]), strict=True))
    return None


def load_examples(path: str | Path | None = None) -> list[dict[str, str]]:
    """The few-shot pool S for the ellipsis prompt: JSONL ``{"id", "dialogue", "target",
    "overlap", "query"}`` (default: the examples shipped in ``convir/datagen/data``)."""
    if path is None:
        text = resources.files("convir.datagen").joinpath("data/ellipsis_examples.jsonl").read_text("utf-8")
        where = "the bundled ellipsis examples"
    else:
        try:
            text = Path(path).expanduser().read_text(encoding="utf-8")
        except OSError as exc:
            raise ConvirError(f"cannot read --examples {path}: {exc.strerror or exc}") from exc
        where = str(path)
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConvirError(f"{where}, line {n}: invalid JSON ({exc.msg})") from exc
        keys = ("dialogue", "target", "overlap", "query")
        if not isinstance(rec, dict) or not all(isinstance(rec.get(k), str) for k in keys):
            raise ConvirError(f"{where}, line {n}: needs string keys {', '.join(keys)}")
        rec.setdefault("id", f"ex{n}")
        out.append(rec)
    if not out:
        raise ConvirError(f"{where} has no examples")
    return out


def format_example(ex: dict[str, str]) -> str:
    return (
        f"Chat: {ex['dialogue']}\nRequest: {ex['target']}\nAlready said: {ex['overlap'] or 'nothing'}\n"
        f"Short message: {ex['query']}"
    )


def _rng(seed: int, key: str) -> np.random.Generator:
    return np.random.default_rng([seed, int(hashlib.sha256(key.encode("utf-8")).hexdigest()[:12], 16)])


# ----------------------------------------------------------------------------- the generator


class RecqrGenerator:
    """The steps of one record; every LLM call goes through ``ask`` (prompt files + cache)."""

    def __init__(
        self,
        cfg: RecqrConfig,
        llm: Any,
        judge: Any,
        extractor: Any,
        examples: list[dict[str, str]],
        vlm: Any = None,
    ) -> None:
        self.cfg, self.llm, self.judge_llm, self.vlm = cfg, llm, judge, vlm
        self.extractor, self.examples = extractor, examples

    # -- one LLM step, timed ------------------------------------------------------------
    def _ask(
        self, llm: Any, name: str, log_: dict[str, Any], step: str, max_tokens: int, **values: str
    ) -> str:
        from convir.llm.prompts import ask

        stop = ("\n\n",) if llm.instruct else ("\n",)
        start = time.perf_counter()
        out = ask(llm, name, GenParams(max_tokens=max_tokens, stop=stop), **values)
        log_["seconds"][step] = round(time.perf_counter() - start, 4)
        log_["cached"][step] = bool(getattr(llm, "last_hit", False))
        log_["raw"][step] = out
        return out

    def caption(self, item: SourceImage, log_: dict[str, Any]) -> tuple[str, str]:
        """(caption, source): the VLM's when there is one and an image file, else the gallery's."""
        if self.vlm is not None and item.image and Path(item.image).is_file():
            from convir.simulate.vlm import image_part, vlm_messages

            start = time.perf_counter()
            out = self.vlm.chat(
                vlm_messages("recqr_caption", [image_part(item.image)]),
                GenParams(max_tokens=60, stop=("\n",)),
            )
            log_["seconds"]["caption"] = round(time.perf_counter() - start, 4)
            log_["cached"]["caption"] = bool(getattr(self.vlm, "last_hit", False))
            log_["raw"]["caption"] = out
            cap = one_line(out)
            if len(cap.split()) < 3:
                raise InvalidOutput("caption", out, "the VLM's caption has fewer than 3 words")
            return cap, self.vlm.spec
        if item.captions:
            return " ".join(item.captions[0].split()), "gallery"
        raise ConvirError(f"{item.id}: no caption and no VLM to caption it (give --vlm SPEC)")

    def target(self, caption: str, log_: dict[str, Any], step: str = "target") -> str:
        out = self._ask(self.llm, "recqr_target", log_, step, 48, caption=caption)
        query = one_line(out).rstrip(" .")
        if len(query.split()) < 2:
            raise InvalidOutput(step, out, "the target query has fewer than 2 words")
        return query

    def dialogue(self, target: str, log_: dict[str, Any]) -> list[dict[str, Any]]:
        out = self._ask(self.llm, "recqr_dialogue", log_, "dialogue", 96, target=target)
        turns = parse_turns(out, "user")[:6]
        if turns and turns[-1]["role"] == "user":  # the dialogue ends with the system's turn
            turns = turns[:-1]
        if len(turns) < 2 or turns[0]["role"] != "user":
            raise InvalidOutput("dialogue", out, "no user turn followed by a system turn")
        if _norm(target) in _norm(" ".join(t["text"] for t in turns)):
            raise InvalidOutput("dialogue", out, "the dialogue already states the whole target query")
        return turns

    def continuation(
        self, d1: list[dict[str, Any]], c1: str, target2: str, image1: str, log_: dict[str, Any]
    ) -> list[dict[str, Any]]:
        out = self._ask(
            self.llm,
            "recqr_dialogue2",
            log_,
            "dialogue2",
            100,
            dialogue=render_dialogue(d1),
            caption=c1,
            target=target2,
        )
        turns = parse_turns(out, "user")
        if len(turns) < 2 or turns[0]["role"] != "user":
            raise InvalidOutput("dialogue2", out, "no user turn followed by a system turn")
        user = {
            "role": "user",
            "text": _PHOTO.sub("", turns[0]["text"]).strip() or "Here is the photo.",
            "image": image1,
            "image_caption": c1,
        }
        return [user, {"role": "system", "text": turns[1]["text"]}]

    def entities(self, dialogue: list[dict[str, Any]], target: str) -> dict[str, list[str]]:
        text = " . ".join(
            [t["text"] for t in dialogue] + [t["image_caption"] for t in dialogue if t.get("image_caption")]
        )
        e_d, e_t = self.extractor(text), self.extractor(target)
        overlap = [h for h in e_t.heads if h in set(e_d.heads)]
        return {
            "dialogue": list(e_d.heads),
            "target": list(e_t.heads),
            "overlap": overlap,
            "extractor": self.extractor.kind,
        }

    def ellipsis(
        self,
        record_id: str,
        dialogue: list[dict[str, Any]],
        target: str,
        overlap: list[str],
        log_: dict[str, Any],
    ) -> tuple[str, list[str]]:
        rng = _rng(self.cfg.seed, record_id)
        k = min(self.cfg.n_examples, len(self.examples))
        picked = [self.examples[int(i)] for i in sorted(rng.choice(len(self.examples), k, replace=False))]
        out = self._ask(
            self.llm,
            "recqr_ellipsis",
            log_,
            "ellipsis",
            48,
            examples="\n\n".join(format_example(e) for e in picked),
            dialogue=render_dialogue(dialogue),
            target=target,
            overlap=", ".join(overlap) or "nothing",
        )
        query = one_line(out)
        if not query:
            raise InvalidOutput("ellipsis", out, "empty original query")
        return query, [e["id"] for e in picked]

    def judge_mode(self) -> str:
        """``expected`` when the judge gives token probabilities and the mode is ``auto``."""
        from convir.llm.cache import can_score_options

        mode = self.cfg.judge_mode
        if mode == "auto":
            return "expected" if can_score_options(self.judge_llm) else "text"
        if mode == "expected" and not can_score_options(self.judge_llm):
            raise ConvirError(
                f"--judge-mode expected needs token probabilities, which {self.judge_llm.spec} does not "
                "give; use a llamacpp: or hf: judge, or --judge-mode text"
            )
        return mode

    def judge(
        self, dialogue: list[dict[str, Any]], query: str, target: str, log_: dict[str, Any]
    ) -> dict[str, Any]:
        """Scores 1-5 for coherence, omission and reconstructability, and their mean.

        ``text`` reads the digits the judge writes. ``expected`` (G-Eval's probability-weighted
        rating) reads the judge's next-token distribution over "1".."5" after each criterion
        of the few-shot prompt and takes its mean; the greedy digit is written before the
        next criterion, as the judge itself would. A 270M judge writes the same three digits
        for nearly every record, while its probabilities still move with the record."""
        if self.judge_mode() == "expected":
            return self._judge_expected(dialogue, query, target, log_)
        out = self._ask(
            self.judge_llm,
            "recqr_judge",
            log_,
            "judge",
            16,
            dialogue=render_dialogue(dialogue),
            query=query,
            target=target,
        )
        text = out if self.judge_llm.instruct else f"coherence {out}"
        scores = parse_scores(text)
        if scores is None:
            return {"score": None, "raw": out, "llm": self.judge_llm.spec, "why": "unparseable judge answer"}
        return {
            **scores,
            "score": round(sum(scores.values()) / 3, 4),
            "mode": "text",
            "llm": self.judge_llm.spec,
        }

    def _judge_expected(
        self, dialogue: list[dict[str, Any]], query: str, target: str, log_: dict[str, Any]
    ) -> dict[str, Any]:
        from convir.llm.prompts import fewshot_prompt

        llm = self.judge_llm
        text = fewshot_prompt("recqr_judge", dialogue=render_dialogue(dialogue), query=query, target=target)
        if not text.rstrip().endswith(CRITERIA[0]):
            raise ConvirError(
                f"the recqr_judge few-shot prompt must end with '{CRITERIA[0]}' for --judge-mode expected"
            )
        text = text.rstrip()
        start = time.perf_counter()
        scores: dict[str, float] = {}
        probs: dict[str, list[float]] = {}
        hits = []
        for i, name in enumerate(CRITERIA):
            if i:
                text += f", {name}"
            p = llm.option_probs(text + " ", SCORE_DIGITS)
            hits.append(bool(getattr(llm, "last_hit", False)))
            scores[name] = round(sum(int(d) * p[d] for d in SCORE_DIGITS), 4)
            probs[name] = [round(p[d], 4) for d in SCORE_DIGITS]
            text += " " + max(SCORE_DIGITS, key=lambda d: p[d])
        log_["seconds"]["judge"] = round(time.perf_counter() - start, 4)
        log_["cached"]["judge"] = all(hits)
        log_["raw"]["judge"] = text[text.rindex("Scores:") :] if "Scores:" in text else ""
        return {
            **scores,
            "score": round(sum(scores.values()) / 3, 4),
            "mode": "expected",
            "probs": probs,
            "llm": llm.spec,
        }

    # -- whole records --------------------------------------------------------------------
    def _finish(self, rec: dict[str, Any], log_: dict[str, Any]) -> dict[str, Any]:
        rec.update(log_)
        rec["seconds"]["total"] = round(sum(v for k, v in log_["seconds"].items() if k != "total"), 4)
        if rec.get("status") == "ok":
            rec["history"] = [render_turn(t) for t in rec["dialogue"]]
            rec["query"], rec["rewrite"] = rec["original_query"], rec["target_query"]
        rec["accepted"] = accepted(rec, self.cfg.min_score)
        return rec

    def _new_log(self) -> dict[str, Any]:
        return {"seconds": {}, "cached": {}, "raw": {}}

    def stage_one(self, item: SourceImage) -> dict[str, Any]:
        rid = f"s1:{item.id}"
        log_ = self._new_log()
        rec: dict[str, Any] = {"id": rid, "part": "text", "stage": 1, "target": item.id, "image": item.image}
        rec["llm"] = self.llm.spec
        try:
            rec["caption"], rec["caption_source"] = self.caption(item, log_)
            rec["target_query"] = self.target(rec["caption"], log_)
            rec["dialogue"] = self.dialogue(rec["target_query"], log_)
            self._ellipsis_and_judge(rid, rec, log_)
        except InvalidOutput as exc:
            rec.update(status="invalid", invalid_step=exc.step, why=exc.why)
        return self._finish(rec, log_)

    def stage_two(self, first: dict[str, Any], second: SourceImage, pair: Any) -> dict[str, Any]:
        rid = f"s2:{first['target']}"
        log_ = self._new_log()
        rec: dict[str, Any] = {
            "id": rid,
            "part": "multimodal",
            "stage": 2,
            "target": second.id,
            "image": second.image,
            "first": {"id": first["target"], "image": first.get("image"), "caption": first["caption"]},
            "pair": {
                "first_entity": pair.first_entity,
                "second_entity": pair.second_entity,
                "weight": pair.weight,
            },
            "llm": self.llm.spec,
        }
        try:
            rec["caption"], rec["caption_source"] = self.caption(second, log_)
            rec["target_query"] = self.target(rec["caption"], log_)
            cont = self.continuation(
                first["dialogue"], first["caption"], rec["target_query"], first["target"], log_
            )
            rec["dialogue"] = [*first["dialogue"], *cont]
            self._ellipsis_and_judge(rid, rec, log_)
        except InvalidOutput as exc:
            rec.update(status="invalid", invalid_step=exc.step, why=exc.why)
        return self._finish(rec, log_)

    def _ellipsis_and_judge(self, rid: str, rec: dict[str, Any], log_: dict[str, Any]) -> None:
        """The steps both stages share once the dialogue exists: entities, the elliptical
        original query, the rule checks, the judge."""
        rec["entities"] = self.entities(rec["dialogue"], rec["target_query"])
        rec["original_query"], rec["examples"] = self.ellipsis(
            rid, rec["dialogue"], rec["target_query"], rec["entities"]["overlap"], log_
        )
        self._check_query(rec, log_)
        rec["judge"] = self.judge(rec["dialogue"], rec["original_query"], rec["target_query"], log_)
        rec["status"] = "ok"

    def _check_query(self, rec: dict[str, Any], log_: dict[str, Any]) -> None:
        """The original query must be elliptical: not the target query word for word."""
        q = self.extractor(rec["original_query"]).heads
        rec["entities"]["query"] = list(q)
        rec["entities"]["omitted"] = [e for e in rec["entities"]["overlap"] if e not in set(q)]
        raw = log_["raw"].get("ellipsis", "")
        if _norm(rec["original_query"]) == _norm(rec["target_query"]):
            raise InvalidOutput("ellipsis", raw, "the original query repeats the target query")
        if any(_norm(rec["original_query"]) == _norm(e["query"]) for e in self.examples):
            raise InvalidOutput("ellipsis", raw, "the original query copies a few-shot example")
        from convir.dialog.strategies import content_words

        said = content_words(rec["target_query"] + " " + render_dialogue(rec["dialogue"]))
        words = content_words(rec["original_query"])
        if words and len(words & said) / len(words) < 0.5:
            raise InvalidOutput(
                "ellipsis", raw, "most words of the original query are in neither the dialogue nor the target"
            )


def accepted(rec: dict[str, Any], min_score: float) -> bool:
    """A human decision when there is one, else judge score >= ``min_score``."""
    human = (rec.get("human") or {}).get("decision")
    if human in ("accept", "reject"):
        return human == "accept"
    score = (rec.get("judge") or {}).get("score")
    return rec.get("status") == "ok" and score is not None and score >= min_score


# ----------------------------------------------------------------------------- the file


def read_records(path: Path) -> tuple[list[dict[str, Any]], int]:
    """(records, number of unreadable lines): a line torn by a kill is dropped, not fatal.
    A later line of the same id replaces the earlier one (``datagen judge`` appends updated
    records), keeping the first line's place in the order."""
    if not path.exists():
        return [], 0
    good: dict[str, dict[str, Any]] = {}
    bad = 0
    with path.open(encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                bad += 1
                continue
            if not isinstance(rec, dict) or not isinstance(rec.get("id"), str):
                bad += 1
                continue
            good[rec["id"]] = rec
    return list(good.values()), bad


def write_records(path: Path, records: Iterable[dict[str, Any]]) -> None:
    from convir.atomic import write_text

    write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


class RecordLog:
    """Append-only JSONL: one fsynced line per finished record."""

    def __init__(self, path: Path) -> None:
        self.path = path
        records, bad = read_records(path)
        if bad:  # rewrite without the torn/garbled lines so appends start on a clean line
            log.warning("%s: dropped %d unreadable line(s) (an interrupted write?)", path, bad)
            write_records(path, records)
        self.records = {r["id"]: r for r in records}
        path.parent.mkdir(parents=True, exist_ok=True)

    def add(self, rec: dict[str, Any]) -> None:
        line = json.dumps(rec, ensure_ascii=False) + "\n"
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
        self.records[rec["id"]] = rec


# ----------------------------------------------------------------------------- splits


def assign_splits(
    records: list[dict[str, Any]], ratios: tuple[float, float, float], seed: int
) -> dict[str, str]:
    """Record id -> train/dev/test. Groups are first images (a Stage Two record goes with its
    first image's Stage One record, so no dialogue straddles two splits); the groups are
    shuffled with ``seed`` and cut by ``ratios``, separately per part so both parts keep the
    proportions."""
    if len(ratios) != 3 or min(ratios) < 0 or not np.isclose(sum(ratios), 1.0):
        raise ConvirError(f"split ratios must be 3 non-negative numbers summing to 1, got {ratios}")
    group_of = {r["id"]: (r.get("first") or {}).get("id", r.get("target")) for r in records}
    part_of_group: dict[str, str] = {}
    for r in records:  # a group's part: multimodal if it has a Stage Two record
        g = group_of[r["id"]]
        if r.get("part") == "multimodal" or g not in part_of_group:
            part_of_group[g] = r.get("part", "text")
    out: dict[str, str] = {}
    for part in PARTS:
        groups = sorted(g for g, p in part_of_group.items() if p == part)
        order = np.random.default_rng([seed, PARTS.index(part)]).permutation(len(groups))
        n = len(groups)
        cut1 = round(ratios[0] * n)
        cut2 = cut1 + round(ratios[1] * n)
        split_of = {}
        for rank, gi in enumerate(order):
            split_of[groups[gi]] = "train" if rank < cut1 else "dev" if rank < cut2 else "test"
        for rid, g in group_of.items():
            if g in split_of:
                out[rid] = split_of[g]
    return out


# ----------------------------------------------------------------------------- the run


@dataclass
class RunSummary:
    out: str
    stage_one: dict[str, int] = field(default_factory=dict)
    stage_two: dict[str, int] = field(default_factory=dict)
    accepted: dict[str, int] = field(default_factory=dict)
    acceptance_rate: dict[str, float | None] = field(default_factory=dict)
    splits: dict[str, dict[str, int]] = field(default_factory=dict)
    seconds_per_record: dict[str, float | None] = field(default_factory=dict)
    failed: list[tuple[str, str]] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)
    entities: str = ""
    kg: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def split_files(out: Path) -> dict[str, Path]:
    stem = out.name[: -len(".jsonl")] if out.name.endswith(".jsonl") else out.name
    return {s: out.with_name(f"{stem}.{s}.jsonl") for s in SPLIT_NAMES} | {
        "review": out.with_name(f"{stem}.review.csv")
    }


def finalize(out: Path, records: list[dict[str, Any]], cfg: RecqrConfig) -> dict[str, dict[str, int]]:
    """Re-apply the acceptance rule, assign splits, rewrite OUT and write OUT.{train,dev,test}.jsonl
    (accepted records) and the review CSV (annotations already in it are kept)."""
    from convir.datagen.review import export_review

    for r in records:
        r["judge_accepted"] = accepted({**r, "human": None}, cfg.min_score)
        r["accepted"] = accepted(r, cfg.min_score)
    splits = assign_splits(records, cfg.ratios, cfg.seed)
    for r in records:
        r["split"] = splits.get(r["id"])
    write_records(out, records)
    files = split_files(out)
    counts: dict[str, dict[str, int]] = {}
    for s in SPLIT_NAMES:
        chosen = [r for r in records if r["accepted"] and r["split"] == s]
        write_records(files[s], chosen)
        counts[s] = {p: sum(r.get("part") == p for r in chosen) for p in PARTS}
    export_review(records, files["review"])
    return counts


def run_recqr(
    cfg: RecqrConfig,
    items: list[SourceImage],
    out: Path,
    pool: list[SourceImage] | None = None,
    llm: Any = None,
    judge: Any = None,
    vlm: Any = None,
    extractor: Any = None,
    relation: Any = None,
    on_total: Callable[[str, int], None] = lambda stage, n: None,
    on_done: Callable[[str], None] = lambda stage: None,
    max_consecutive_failures: int = 5,
) -> RunSummary:
    """Build (or continue) the dataset in ``out`` from ``items`` (Stage One) and pairs drawn
    from ``pool`` (default ``items``) for Stage Two. Models may be passed in (tests, reuse);
    otherwise they are loaded from the config's specs."""
    from convir.datagen.entities import load_entities
    from convir.datagen.knowledge import find_pairs, load_relation
    from convir.llm import load_llm

    out = Path(out)
    examples = load_examples(cfg.examples)
    extractor = extractor or load_entities(cfg.entities)
    relation = relation or load_relation(cfg.kg, cfg.kg_min)
    llm = llm or load_llm(cfg.llm)
    judge = judge or (load_llm(cfg.judge_llm) if cfg.judge_llm and cfg.judge_llm != cfg.llm else llm)
    if vlm is None and cfg.vlm:
        from convir.simulate.vlm import load_vlm

        vlm = load_vlm(cfg.vlm)
    gen = RecqrGenerator(cfg, llm, judge, extractor, examples, vlm)
    gen.judge_mode()  # an impossible --judge-mode fails here, not once per record
    book = RecordLog(out)
    summary = RunSummary(str(out), entities=extractor.kind, kg=getattr(relation, "spec", str(relation)))
    streak = 0

    def attempt(stage: str, fn: Callable[[], dict[str, Any]], key: str) -> None:
        nonlocal streak
        try:
            book.add(fn())
            streak = 0
        except LLMError as exc:
            streak += 1
            summary.failed.append((key, str(exc)))
            log.warning("%s: the model failed (%s); it will be retried on the next run", key, exc)
            if streak >= max_consecutive_failures:
                raise ConvirError(
                    f"{streak} records in a row failed (last: {exc}); stopped. Finished records are kept "
                    f"in {out}: fix the model and re-run the same command to continue"
                ) from exc
        except ConvirError as exc:  # an item the pipeline cannot use (no caption, unreadable image)
            summary.failed.append((key, str(exc)))
            log.warning("%s: skipped (%s)", key, exc)
        finally:
            on_done(stage)

    todo = [it for it in items if f"s1:{it.id}" not in book.records]
    summary.stage_one["done_before"] = len(items) - len(todo)
    on_total("stage one", len(todo))
    for it in todo:
        attempt("stage one", lambda it=it: gen.stage_one(it), f"s1:{it.id}")

    # Stage Two: pair accepted first images with related images of the pool
    pool = pool if pool is not None else items
    by_id = {it.id: it for it in pool} | {it.id: it for it in items}
    firsts = [
        book.records[f"s1:{it.id}"]
        for it in items
        if f"s1:{it.id}" in book.records and book.records[f"s1:{it.id}"].get("accepted")
    ]
    pair_ents: dict[str, list[str]] = {}
    for it in by_id.values():
        rec = book.records.get(f"s1:{it.id}")
        cap = rec.get("caption") if rec else (it.captions[0] if it.captions else None)
        if cap:
            pair_ents[it.id] = list(extractor(cap).heads)
    budget = cfg.pairs
    pairs = find_pairs(pair_ents, [f["target"] for f in firsts], relation, cfg.seed) if budget != 0 else {}
    done2 = [f for f in firsts if f"s2:{f['target']}" in book.records]
    todo2 = [f for f in firsts if f["target"] in pairs and f"s2:{f['target']}" not in book.records]
    if budget is not None:
        todo2 = todo2[: max(0, budget - len(done2))]
    summary.stage_two["pairs_found"] = len(pairs)
    summary.stage_two["done_before"] = len(done2)
    on_total("stage two", len(todo2))
    for f in todo2:
        p = pairs[f["target"]]
        attempt("stage two", lambda f=f, p=p: gen.stage_two(f, by_id[p.second], p), f"s2:{f['target']}")

    records = list(book.records.values())
    summary.splits = finalize(out, records, cfg)
    for stage, part in ((1, "text"), (2, "multimodal")):
        recs = [r for r in records if r.get("stage") == stage]
        ok = [r for r in recs if r.get("status") == "ok"]
        acc = [r for r in recs if r.get("accepted")]
        target = summary.stage_one if stage == 1 else summary.stage_two
        target |= {
            "records": len(recs),
            "invalid": len(recs) - len(ok),
            "judged": sum((r.get("judge") or {}).get("score") is not None for r in ok),
        }
        summary.accepted[part] = len(acc)
        summary.acceptance_rate[part] = round(len(acc) / len(recs), 4) if recs else None
        fresh = [r["seconds"]["total"] for r in recs if r.get("seconds") and not any(r["cached"].values())]
        summary.seconds_per_record[part] = round(float(np.mean(fresh)), 3) if fresh else None
    summary.files = {k: str(v) for k, v in split_files(out).items()}
    return summary


def judge_key(judgement: dict[str, Any] | None) -> tuple[str, str] | None:
    """(judge spec, mode) of a stored judgement; records from before modes existed read as text."""
    if not judgement or judgement.get("score") is None:
        return None
    return str(judgement.get("llm")), str(judgement.get("mode", "text"))


def rejudge(
    out: Path,
    cfg: RecqrConfig,
    judge: Any = None,
    on_total: Callable[[int], None] = lambda n: None,
    on_done: Callable[[], None] = lambda: None,
    max_consecutive_failures: int = 5,
) -> dict[str, Any]:
    """Score the rule-checked records of ``out`` again with ``cfg.judge_llm`` (default
    ``cfg.llm``) in ``cfg.judge_mode``, e.g. a strong judge over data a small model made.

    Each re-judged record is appended at once (the last line of an id wins), so a killed run
    continues where it stopped; records already judged by the same (judge, mode) are skipped.
    The earlier judgement stays in ``judge_earlier``. Then acceptance and splits are redone."""
    from convir.llm import load_llm

    book = RecordLog(out)
    judge = judge or load_llm(cfg.judge_llm or cfg.llm)
    gen = RecqrGenerator(cfg, judge, judge, extractor=None, examples=[])
    mode = gen.judge_mode()
    want = (judge.spec, mode)
    ok = [r for r in book.records.values() if r.get("status") == "ok"]
    todo = [r for r in ok if judge_key(r.get("judge")) != want]
    on_total(len(todo))
    failed: list[tuple[str, str]] = []
    streak = 0
    for r in todo:
        log_: dict[str, Any] = {"seconds": {}, "cached": {}, "raw": {}}
        try:
            new = gen.judge(r["dialogue"], r["original_query"], r["target_query"], log_)
        except LLMError as exc:
            streak += 1
            failed.append((r["id"], str(exc)))
            if streak >= max_consecutive_failures:
                raise ConvirError(
                    f"{streak} records in a row failed (last: {exc}); stopped. Re-judged records are kept "
                    f"in {out}: re-run the same command to continue"
                ) from exc
            continue
        finally:
            on_done()
        streak = 0
        earlier = [*(r.get("judge_earlier") or []), *([r["judge"]] if r.get("judge") else [])]
        book.add(
            {**r, "judge": new, "judge_earlier": earlier, "rejudge_seconds": log_["seconds"].get("judge")}
        )
    records = list(book.records.values())
    splits = finalize(out, records, cfg)
    result: dict[str, Any] = {"judge": judge.spec, "mode": mode, "rejudged": len(todo) - len(failed)}
    result["skipped"] = len(ok) - len(todo)
    result["failed"] = failed
    for part in PARTS:
        recs = [r for r in records if r.get("part") == part]
        scores = [r["judge"]["score"] for r in recs if judge_key(r.get("judge")) == want]
        result[part] = {
            "records": len(recs),
            "judged": len(scores),
            "accepted": sum(bool(r.get("accepted")) for r in recs),
            "mean_score": round(float(np.mean(scores)), 4) if scores else None,
        }
    result["splits"] = splits
    return result
