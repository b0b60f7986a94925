"""Simulated multi-turn evaluation (coco5k-sim, flickr8k-sim) through the shared conversation loop.

coco5k-sim: gallery item = its captions[1:3] (as `eval retrieval`), the user's initial
description = captions[0], and the simulated user answers only from captions[3:] (held
out from the gallery, so answers add information the gallery text can confirm but never
copy). Ranks are recorded at turns 0..T for every target; each target is written as soon
as it finishes (resumable), and LLM calls are cached on disk (repeatable reruns).

flickr8k-sim: the same protocol on a Flickr8k folder (captions.txt + images/; 5 captions per
image, so 2 held-out captions), plus the target image files, so the simulated user can also
be a vision-language model looking at the photo (``--answerer vlm``).

Every target gets its own conversation from :func:`convir.dialog.session.build_conversation`
(the same builder as chat and the service); models are shared across targets.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from convir.dialog.defaults import PROMPT_TURNS
from convir.errors import ConvirError


@dataclass
class SimTarget:
    id: str
    position: int
    description: str


SIM_DATASETS = {
    "coco5k-sim": "coco5k folder (Search_Space_coco.json + coco_captions.json); splits dev | test | all",
    "flickr8k-sim": "Flickr8k folder (captions.txt + images/), with target images; split all",
    "jsonl-sim": "your own collection: a JSONL file, one item per line (docs/evaluation.md); split all",
}
SIM_WITH_IMAGES = frozenset({"flickr8k-sim", "jsonl-sim"})  # targets may have image files (--answerer vlm)
GALLERIES = ("split", "all")
# v2: the captions simulator answers "no" to yes/no questions about what none of the target's
# captions mention (v1 said "unknown"); v3: not to alternative questions ("indoors or
# outdoors?"); v4: answers read by convir.dialog.reading (idk, negations anywhere, corrections),
# which changes what the system takes from the same simulated replies; recorded so a run folder
# is never resumed by another version
SIMULATOR_VERSION = 4


@dataclass
class SimData:
    gallery: Any
    targets: list[SimTarget]
    held_out: dict[str, list[str]]  # what the simulated user knows (captions[3:]) by id
    images: dict[str, str]  # image file by id (the vlm answerer); {} when the dataset has none
    all_text: dict[str, list[str]] = field(default_factory=dict)  # every caption of a target (for "no")


def parse_start(start: str) -> int | None:
    """``full`` -> None; ``vague:N`` -> N (the description is the first N words of captions[0])."""
    if start == "full":
        return None
    kind, _, n = start.partition(":")
    if kind != "vague" or not n.isdigit() or int(n) < 1:
        raise ConvirError(f"--start must be full or vague:N (N >= 1 words), not {start!r}")
    return int(n)


def check_sim_dataset(
    dataset: str, split: str, answerer: str | None, gallery: str = "split", start: str = "full"
) -> None:
    """Dataset, split, gallery, start and answerer fit together (checked before anything loads)."""
    if dataset not in SIM_DATASETS:
        raise ConvirError(f"unknown --dataset {dataset!r}; available: {', '.join(SIM_DATASETS)}")
    if dataset != "coco5k-sim" and split != "all":
        raise ConvirError(f"{dataset} has no documented dev/test split: use --split all")
    if gallery not in GALLERIES:
        raise ConvirError(f"--gallery must be split or all, not {gallery!r}")
    parse_start(start)
    if answerer == "human":
        raise ConvirError(
            "--answerer human is the person at the terminal: talk to an index with `convir chat`; "
            "eval dialog's simulated users are facts (no LLM), captions (--llm) and vlm (--vlm)"
        )
    if answerer == "vlm" and dataset not in SIM_WITH_IMAGES:
        raise ConvirError(
            f"--answerer vlm needs the target images, which {dataset} does not have: "
            f"use --dataset {' or '.join(sorted(SIM_WITH_IMAGES))}"
        )


def load_sim(
    dataset: str, path: str, split: str, encoder: Any, gallery: str = "split", start: str = "full"
) -> SimData:
    """Gallery, targets, held-out captions and target images of a simulated protocol.

    ``gallery``: "split" = the split's own items (the default, as in `eval retrieval`), "all"
    = every item of the dataset (targets still come from the split: 5x the distractors on
    coco5k test). ``start``: "full" = captions[0] is the description, "vague:N" = only its first
    N words (DIR-TIR's vague start: "a dog is playing")."""
    from convir.eval.retrieval import load_items

    check_sim_dataset(dataset, split, None, gallery, start)
    words = parse_start(start)
    if dataset == "jsonl-sim":
        from convir.datasets.simjsonl import load_sim_jsonl

        return _sim_from_records(load_sim_jsonl(path), encoder, words)
    source = "coco5k" if dataset == "coco5k-sim" else "flickr8k"
    items = load_items(source, path, "all" if gallery == "all" else split)
    chosen = {it.id for it in load_items(source, path, split)} if gallery == "all" else None
    sim = _sim_from_items(items, encoder, chosen, words)
    if dataset == "flickr8k-sim":
        sim.images = {it.id: it.image for it in items if it.image}
    return sim


def _description(caption: str, words: int | None) -> str:
    return caption if words is None else " ".join(caption.split()[:words])


def _sim_from_items(
    items: list[Any], encoder: Any, targets: set[str] | None = None, words: int | None = None
) -> SimData:
    from convir.gallery.memory import MemoryGallery

    gallery_caps = [list(it.captions[1:3]) for it in items]
    gallery = MemoryGallery.from_captions([it.id for it in items], gallery_caps, encoder)
    sim_targets = [
        SimTarget(it.id, i, _description(it.captions[0], words))
        for i, it in enumerate(items)
        if targets is None or it.id in targets
    ]
    held_out = {t.id: list(items[t.position].captions[3:]) for t in sim_targets}
    all_text = {t.id: list(items[t.position].captions) for t in sim_targets}
    return SimData(gallery, sim_targets, held_out, {}, all_text)


def _sim_from_records(records: list[Any], encoder: Any, words: int | None) -> SimData:
    """A jsonl-sim collection: gallery text (or images) per item, targets with a description."""
    from convir.encoders import has_image_tower
    from convir.gallery.memory import MemoryGallery

    use_images = has_image_tower(encoder)
    if not use_images and any(not r.text for r in records):
        bad = next(r for r in records if not r.text)
        raise ConvirError(
            f'{bad.where}: item {bad.id!r} has no "text"; without gallery text the simulation needs '
            "an image-text encoder (--encoder open_clip:... or hf:...)"
        )
    if use_images and all(r.image for r in records):
        from pathlib import Path

        vectors = encoder.encode_images([Path(r.image) for r in records])
        gallery = MemoryGallery([r.id for r in records], [list(r.text) for r in records], vectors, encoder)
    else:
        gallery = MemoryGallery.from_captions(
            [r.id for r in records], [list(r.text) for r in records], encoder
        )
    targets = [
        SimTarget(r.id, i, _description(r.description, words)) for i, r in enumerate(records) if r.description
    ]
    if not targets:
        raise ConvirError('the simulation file has no target: give some items a "description"')
    by_id = {r.id: r for r in records}
    held_out = {t.id: list(by_id[t.id].facts) for t in targets}
    all_text = {t.id: [*by_id[t.id].facts, *by_id[t.id].text, by_id[t.id].description] for t in targets}
    images = {r.id: r.image for r in records if r.image}
    return SimData(gallery, targets, held_out, images, all_text)


def coco5k_sim(path: str, split: str, encoder: Any) -> tuple[Any, list[SimTarget], dict[str, list[str]]]:
    """(gallery, targets, held-out captions by id) for the coco5k-sim protocol."""
    sim = load_sim("coco5k-sim", path, split, encoder)
    return sim.gallery, sim.targets, sim.held_out


# -- one simulated dialogue -------------------------------------------------------------------


def target_rank(ranking: Any, target_pos: int, depth: int) -> int:
    """1-based rank of the target in a ranking of ``depth`` items (depth + 1 when absent)."""
    hit = np.flatnonzero(np.asarray(ranking.positions[:depth]) == target_pos)
    return int(hit[0]) + 1 if len(hit) else depth + 1


def simulate(
    conv: Any, description: str, target_id: str, target_pos: int, answerer: Any, turns: int
) -> tuple[list[int], list[dict[str, Any]]]:
    """Run one simulated dialogue: ranks at turns 0..turns and per-turn details/timings."""
    res = conv.start(description)
    ranks = [target_rank(res.ranking, target_pos, conv.depth)]
    log: list[dict[str, Any]] = [{"query": res.ranking.query, **res.timings, **_turn_log(res)}]
    for _ in range(turns):
        q = res.question
        if q is None:  # nothing to ask: the ranking stays as it is
            ranks.append(ranks[-1])
            log.append({"question": None})
            continue
        if res.options:  # an image-choice question: the user picks the closest option
            t = time.perf_counter()
            vecs = conv.gallery.ranker.vectors[[conv.gallery.position[o] for o in res.options]]
            pick = answerer.choose(vecs, target_id, list(res.options))
            answer_s = time.perf_counter() - t
            chosen = res.options[pick] if pick is not None else None
            res = conv.choose(chosen)
            ranks.append(target_rank(res.ranking, target_pos, conv.depth))
            log.append(
                {
                    "question": q,
                    "options": list(conv.state.exchanges[-1].options),
                    "chosen": chosen,
                    "target_offered": target_id in conv.state.exchanges[-1].options,
                    "query": res.ranking.query,
                    "answer_s": answer_s,
                    **res.timings,
                    **_turn_log(res),
                }
            )
            continue
        t = time.perf_counter()
        answer = answerer.answer(q, target_id)
        answer_s = time.perf_counter() - t
        feedback: dict[str, Any] = {}
        if answer.raw:  # the simulator's own reply, when grounding replaced it
            feedback["answer_raw"] = answer.raw
        if res.image_question and res.images and hasattr(answerer, "differences"):
            # the simulated user says how the generated image differs from the target (refiner)
            t = time.perf_counter()
            shown = res.images[0]
            feedback["image_feedback"] = answerer.differences(shown.prompt, target_id, shown.path)
            feedback["feedback_s"] = time.perf_counter() - t
        res = conv.reply(answer.text, image_feedback=feedback.get("image_feedback"))
        ranks.append(target_rank(res.ranking, target_pos, conv.depth))
        log.append(
            {
                "question": q,
                "answer": answer.text,
                "query": res.ranking.query,
                "answer_s": answer_s,
                **feedback,
                **res.timings,
                **_turn_log(res),
            }
        )
    if conv.state is not None and conv.state.imagination_off:
        log[-1]["imagination_off"] = conv.state.imagination_off
    return ranks, log


def _turn_log(res: Any) -> dict[str, Any]:
    """The turn's generated images and how its question was chosen, for the per-target log:
    how many LLM questions were rejected and why, and whether the questioner fell back
    (``plain`` inside ``candidates``, or a ``generic`` question). Lets a run show, e.g., that a
    small LLM's questions mostly fail the "Uncertain" test."""
    out: dict[str, Any] = {}
    if res.images:
        out["images"] = [vars(i).copy() for i in res.images]
    info = res.question_info or {}
    reasons: dict[str, int] = {}
    for _, why in info.get("rejected", []):
        reasons[why] = reasons.get(why, 0) + 1
    if reasons:
        out["question_rejected"] = reasons
    fallback = info.get("fallback")
    if fallback:
        out["question_fallback"] = "generic" if fallback is True else str(fallback)
    return out


def run_simulated(
    gallery: Any,
    targets: list[SimTarget],
    spec: Any,
    answerer: Any,
    writer: Any,
    turns: int,
    on_done: Callable[[int], None] | None = None,
    llm: Any = None,
) -> np.ndarray:
    """(n_targets, turns + 1) rank matrix; finished targets come from ``writer``'s cache. Each
    target's conversation is built from ``spec`` (:class:`~convir.dialog.session.SessionSpec`)."""
    from convir.dialog.session import build_conversation

    done = writer.done()
    rows = []
    for tgt in targets:
        if tgt.id in done and len(done[tgt.id]) == turns + 1:
            rows.append(done[tgt.id])
        else:
            conv = build_conversation(spec, gallery, llm=llm)
            ranks, log = simulate(conv, tgt.description, tgt.id, tgt.position, answerer, turns)
            writer.add(tgt.id, ranks, {"turns": log})
            rows.append(ranks)
        if on_done:
            on_done(1)
    return np.asarray(rows, dtype=np.int64)


# -- the `convir eval dialog` command's work ----------------------------------------------------


def sim_config(
    spec: Any,
    dataset: str,
    path: Path,
    split: str,
    encoder: str,
    turns: int,
    gallery: str = "split",
    start: str = "full",
) -> dict[str, Any]:
    """The run's config.json. Settings are recorded only when not the default, so earlier
    runs' configs (and run folders, which are named by a hash of it) stay valid."""
    config: dict[str, Any] = {
        "command": "eval dialog",
        "dataset": dataset,
        "path": str(path),
        "split": split,
        "encoder": encoder,
        "strategy": spec.strategy,
        "questioner": spec.questioner,
        "answerer": spec.answerer,
        "llm": spec.llm,
        "turns": turns,
    }
    config |= {"gallery": gallery} if gallery != "split" else {}
    config |= {"start": start} if start != "full" else {}
    config |= {"answers": spec.answers} if spec.answers != "aware" else {}
    config |= {"prompt_turns": spec.prompt_turns} if spec.prompt_turns != PROMPT_TURNS else {}
    config |= {"simulator": SIMULATOR_VERSION}
    config |= {"vlm": spec.vlm} if spec.vlm else {}
    config |= {"reranker": spec.reranker} if spec.reranker not in (None, "llm") else {}
    config |= spec.imagination_settings() or {}
    return config


def run_sim_eval(
    spec: Any,
    dataset: str,
    path: Path | None,
    split: str,
    encoder: str,
    limit: int | None,
    turns: int,
    out: Path | None,
    progress: Any,
    gallery: str = "split",
    start: str = "full",
    gallery_captions: str = "shown",
) -> tuple[dict[str, Any], Path]:
    """Validate everything, load the protocol and models, simulate every target (resuming a
    run folder), write the report. Returns (report, run folder)."""
    from convir.dialog.session import build_answerer, load_session_llm
    from convir.encoders import load_encoder
    from convir.eval.metrics import turn_metrics
    from convir.eval.runs import RunWriter, run_dir_for

    check_sim_dataset(dataset, split, spec.answerer, gallery, start)
    spec = spec.validate()  # names and options, before any model loads
    if path is None:
        raise ConvirError(f"--dataset {dataset} needs the dataset folder as PATH")
    model = load_session_llm(spec)
    enc = load_encoder(encoder)
    if gallery_captions not in ("shown", "hidden"):
        raise ConvirError(f"--gallery-captions must be shown or hidden, not {gallery_captions!r}")
    if gallery_captions == "hidden" and spec.mode != "dense":
        raise ConvirError(f"--gallery-captions hidden ranks by vectors; --mode {spec.mode} reads captions")
    sim = load_sim(dataset, str(path), split, enc, gallery, start)
    if gallery_captions == "hidden":  # the photo-library setting: vectors, no caption text
        from convir.dialog.attributes import CaptionFreeGallery

        sim = replace(sim, gallery=CaptionFreeGallery(sim.gallery))
    targets = sim.targets[:limit] if limit else sim.targets
    images: dict[str, str] = {}
    if spec.answerer == "vlm":
        images = {t.id: sim.images[t.id] for t in targets if t.id in sim.images}
        missing = [t.id for t in targets if not Path(images.get(t.id, "")).is_file()]
        if missing:
            raise ConvirError(
                f"--answerer vlm: {len(missing)} target images are missing, "
                f"e.g. {sim.images.get(missing[0], missing[0])}"
            )
    answerer = build_answerer(
        spec,
        llm=model,
        captions_by_id=sim.held_out,
        image_paths_by_id=images,
        all_captions_by_id=sim.all_text,
        encoder=enc,
    )
    config = sim_config(spec, dataset, path, split, enc.spec, turns, gallery, start)
    config |= {"gallery_captions": gallery_captions} if gallery_captions != "shown" else {}
    kind = f"sim-{spec.strategy}-{spec.questioner}" + (f"-{spec.imagine}" if spec.imagine else "")
    run_dir = run_dir_for(out, kind, config)
    writer = RunWriter(run_dir, {**config, "limit": limit})
    with progress as bar:
        task = bar.add_task("simulate", total=len(targets))
        ranks = run_simulated(
            sim.gallery,
            targets,
            spec,
            answerer,
            writer,
            turns,
            on_done=lambda n: bar.advance(task, n),
            llm=model,
        )
    ids = [t.id for t in targets]
    extra: dict[str, Any] = {"latency": latency(writer, ids)}
    if spec.imagine:
        from convir.eval.imagination import imagination_report

        extra["imagination"] = imagination_report(writer, spec.imagination_settings(), ids)
    return writer.finish(turn_metrics(ranks), extra, targets=ids), run_dir


def latency(writer: Any, targets: list[str] | None = None) -> dict[str, Any]:
    """p50/p95 seconds per turn and per stage, from the per-target logs in targets.jsonl.
    ``turn_s`` is every stage; ``system_s`` leaves out the simulated user's own time
    (``answer_s``, ``feedback_s``): what a person would wait for."""
    from convir.eval.metrics import turn_stage_seconds
    from convir.eval.runs import latest_records

    stages: dict[str, list[float]] = {}
    for rec in latest_records(writer.targets_path, targets).values():
        for turn in (rec.get("extra") or {}).get("turns", []):
            for k, v in turn_stage_seconds(turn).items():
                stages.setdefault(k, []).append(v)
    return {
        k: {"p50": float(np.percentile(v, 50)), "p95": float(np.percentile(v, 95)), "n": len(v)}
        for k, v in stages.items()
    }
