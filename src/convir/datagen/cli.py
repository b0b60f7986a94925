"""``convir datagen ...`` commands and ``convir eval recqr`` (registered onto the eval app).

Only typer is imported here: models, spaCy and numpy load inside the commands.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from convir.errors import ConvirError

datagen_app = typer.Typer(
    help="Build datasets from images or captioned galleries (ReCQR-style query rewriting).",
    no_args_is_help=True,
)

SOURCES = ("auto", "folder", "manifest", "coco5k", "flickr8k")
JUDGE_MODE_HELP = (
    "How the judge's 1-5 scores are read: text (the digits it writes) | expected (the mean of "
    "its token probabilities over 1-5, G-Eval style; llamacpp: and hf: judges) | auto (expected "
    "where the judge gives probabilities, else text)."
)


def _check_judge_mode(mode: str) -> None:
    from convir.datagen.recqr import JUDGE_MODES

    if mode not in JUDGE_MODES:
        raise ConvirError(f"unknown --judge-mode {mode!r}; use one of: {', '.join(JUDGE_MODES)}")


def _console(stderr: bool = False) -> Any:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


def _progress(quiet: bool) -> Any:
    """A progress bar per stage on stderr (off with --json, whose stdout must stay clean)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=_console(stderr=True),
        disable=quiet,
    )


def _ratios(text: str) -> tuple[float, float, float]:
    try:
        vals = tuple(float(x) for x in text.replace("/", ",").split(","))
    except ValueError as exc:
        raise ConvirError(f"--split-ratios {text!r}: expected three numbers, e.g. 0.8,0.1,0.1") from exc
    if len(vals) != 3 or min(vals) < 0 or abs(sum(vals) - 1.0) > 1e-6:
        raise ConvirError(
            f"--split-ratios {text!r}: need three non-negative numbers summing to 1 (train,dev,test)"
        )
    return vals  # type: ignore[return-value]


def _check_specs(llm: str, judge_llm: str | None, vlm: str | None, entities: str, kg: str) -> None:
    """Every spec is checked before a model, spaCy or ConceptNet loads."""
    from convir.llm import KINDS as LLM_KINDS
    from convir.specs import parse_spec

    parse_spec(llm, LLM_KINDS)
    if judge_llm:
        parse_spec(judge_llm, LLM_KINDS)
    if vlm:
        from convir.simulate.vlm import KINDS as VLM_KINDS

        parse_spec(vlm, VLM_KINDS)
    if entities.split(":", 1)[0] not in ("auto", "rules", "spacy"):
        raise ConvirError(f"unknown --entities {entities!r}; use auto, rules or spacy:NAME")
    kind, _, rest = kg.partition(":")
    if kind not in ("conceptnet", "embedding"):
        raise ConvirError(f"unknown --kg {kg!r}; use embedding[:ENCODER] or conceptnet:PATH")
    if kind == "conceptnet" and not Path(rest).expanduser().is_file():
        raise ConvirError(
            f"--kg {kg}: ConceptNet assertions file {rest!r} not found (download "
            "conceptnet-assertions-5.7.0.csv.gz from ConceptNet 5's downloads page, or use --kg embedding)"
        )


def load_images(
    path: Path, source: str, split: str, image_root: Path | None
) -> tuple[list[Any], list[tuple[str, str]]]:
    """(images of the split, [(id, why)] skipped) from a dataset folder, image folder or manifest."""
    from convir.datagen.recqr import SourceImage
    from convir.datasets import load_coco5k, load_flickr8k, split_items

    if source not in SOURCES:
        raise ConvirError(f"unknown --dataset {source!r}; choose one of: {', '.join(SOURCES)}")
    if not path.exists():
        raise ConvirError(f"{path} does not exist")
    if split != "all" and source != "coco5k":
        raise ConvirError(f"--split {split}: only coco5k has documented dev/test splits; use --split all")
    skipped: list[tuple[str, str]] = []
    if source in ("coco5k", "flickr8k"):
        items = load_coco5k(path, image_root) if source == "coco5k" else load_flickr8k(path)
        items = split_items(items, split, "coco5k" if source == "coco5k" else None)
        return [SourceImage(it.id, it.image, list(it.captions)) for it in items], skipped
    from convir.gallery.sources import open_source

    ignored: list[tuple[str, str]] = []
    out = []
    for it in open_source(path, source, ignored):
        if it.error:
            skipped.append((it.id, it.error))
            continue
        out.append(SourceImage(it.id, str(it.image) if it.image else None, list(it.captions)))
    return out, skipped


@datagen_app.command("recqr")
def recqr_cmd(
    path: Annotated[
        Path,
        typer.Argument(
            help="Images to build from: a folder of images (name.txt captions optional), a .jsonl "
            "manifest, or a dataset folder with --dataset coco5k|flickr8k."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output JSONL (appended; re-running resumes).")],
    llm: Annotated[
        str,
        typer.Option(help="Generator LLM: llamacpp:gemma3-270m, llamacpp:smollm2, openai:URL#MODEL, hf:M"),
    ],
    dataset: Annotated[
        str, typer.Option(help="Input kind: auto | folder | manifest | coco5k | flickr8k")
    ] = "auto",
    split: Annotated[str, typer.Option(help="coco5k: dev (items 0-3999) | test (4000-4999) | all")] = "all",
    limit: Annotated[int | None, typer.Option(min=1, help="Stage One on the first N images only.")] = None,
    pairs: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="At most N Stage Two (multimodal) records; 0 = none "
            "(default: one per accepted image that has a related partner).",
        ),
    ] = None,
    judge_llm: Annotated[str | None, typer.Option(help="LLM-as-judge (default: --llm).")] = None,
    min_score: Annotated[
        float, typer.Option(min=1, max=5, help="Keep records whose mean judge score is at least this.")
    ] = 3.0,
    judge_mode: Annotated[str, typer.Option(help=JUDGE_MODE_HELP)] = "auto",
    vlm: Annotated[
        str | None,
        typer.Option(
            help="Caption images with a VLM (hf:MODEL or openai:URL#MODEL); "
            "default: the gallery's own captions."
        ),
    ] = None,
    image_root: Annotated[
        Path | None, typer.Option(help="coco5k: folder with the COCO images (for --vlm).")
    ] = None,
    entities: Annotated[
        str,
        typer.Option(
            help="Entity extractor: auto (en_core_web_sm if installed, else rules) | rules | spacy:NAME"
        ),
    ] = "auto",
    kg: Annotated[
        str,
        typer.Option(
            help="Relations for Stage Two pairs: embedding[:ENCODER] (offline) | "
            "conceptnet:ASSERTIONS.csv[.gz]"
        ),
    ] = "embedding",
    kg_min: Annotated[
        float | None,
        typer.Option(help="Minimum relation score: cosine (embedding, 0.5) or ConceptNet weight (1.0)."),
    ] = None,
    examples: Annotated[
        Path | None,
        typer.Option(
            help='Few-shot pool S for the ellipsis prompt (JSONL {"dialogue","target","overlap","query"}).'
        ),
    ] = None,
    n_examples: Annotated[int, typer.Option(min=0, help="Examples drawn from the pool per record.")] = 3,
    seed: Annotated[int, typer.Option(help="Seed for example draws, pairs and splits.")] = 0,
    split_ratios: Annotated[
        str, typer.Option(help="train,dev,test proportions of the output splits.")
    ] = "0.8,0.1,0.1",
    json_out: Annotated[bool, typer.Option("--json", help="Print the run summary as JSON.")] = False,
) -> None:
    """Build a ReCQR-style query-rewriting dataset: captions -> target queries -> dialogues ->
    elliptical original queries (Stage One), related-image pairs (Stage Two), LLM-as-judge.

    OUT gets one record per line as it finishes; OUT.{train,dev,test}.jsonl hold the accepted
    records by split and OUT.review.csv the sheet for human review (see `review-merge`).
    Exit code 1 when some records failed (re-run to retry them).
    """
    from convir.datagen.recqr import RecqrConfig, run_recqr

    ratios = _ratios(split_ratios)
    _check_judge_mode(judge_mode)
    _check_specs(llm, judge_llm, vlm, entities, kg)
    if examples is not None and not examples.is_file():
        raise ConvirError(f"--examples {examples} not found")
    if out.suffix != ".jsonl":
        raise ConvirError(f"--out {out}: the output must be a .jsonl file")
    images, skipped = load_images(path, dataset, split, image_root)
    if not images:
        raise ConvirError(f"no usable images in {path}")
    chosen = images[:limit] if limit else images
    cfg = RecqrConfig(
        llm=llm,
        judge_llm=judge_llm,
        vlm=vlm,
        entities=entities,
        kg=kg,
        kg_min=kg_min,
        pairs=pairs,
        min_score=min_score,
        judge_mode=judge_mode,
        n_examples=n_examples,
        examples=str(examples) if examples else None,
        seed=seed,
        ratios=ratios,
    )
    progress = _progress(json_out)
    tasks: dict[str, Any] = {}
    with progress:
        summary = run_recqr(
            cfg,
            chosen,
            out,
            pool=images,
            on_total=lambda stage, n: tasks.__setitem__(stage, progress.add_task(stage, total=n)),
            on_done=lambda stage: progress.advance(tasks[stage]),
        )
    from convir.atomic import write_json

    write_json(out.with_suffix(".meta.json"), {"config": cfg.to_dict(), "summary": summary.to_dict()})
    summary.failed += skipped
    if json_out:
        typer.echo(json.dumps(summary.to_dict(), indent=2))
    else:
        _print_summary(summary)
    raise typer.Exit(1 if summary.failed else 0)


def _print_summary(s: Any) -> None:
    c = _console()
    for stage, part, d in (("Stage One", "text", s.stage_one), ("Stage Two", "multimodal", s.stage_two)):
        rate = s.acceptance_rate.get(part)
        sec = s.seconds_per_record.get(part)
        c.print(
            f"[bold]{stage}[/] ({part}): {d.get('records', 0)} records "
            f"({d.get('done_before', 0)} from earlier runs), "
            f"{d.get('invalid', 0)} invalid, {s.accepted.get(part, 0)} accepted"
            + (f" ({100 * rate:.0f}%)" if rate is not None else "")
            + (f"; {sec:.1f} s per uncached record" if sec else "")
            + (f"; {d['pairs_found']} pairs found" if "pairs_found" in d else "")
        )
    c.print("splits: " + ", ".join(f"{k} {v['text']}+{v['multimodal']}" for k, v in s.splits.items()))
    c.print(f"entities: {s.entities}; relations: {s.kg}")
    c.print("written: " + ", ".join(s.files.values()), markup=False)
    for rid, why in s.failed[:20]:
        c.print(f"  failed {rid}: {why}", markup=False)
    if len(s.failed) > 20:
        c.print(f"  ... {len(s.failed) - 20} more")


def _meta(out: Path) -> dict[str, Any]:
    meta = out.with_suffix(".meta.json")
    if meta.is_file():
        return json.loads(meta.read_text(encoding="utf-8")).get("config", {})
    return {}


@datagen_app.command("judge")
def judge_cmd(
    dataset: Annotated[Path, typer.Argument(help="JSONL written by `convir datagen recqr`.")],
    judge_llm: Annotated[
        str | None,
        typer.Option(help="The judge (default: the dataset's judge, else its generator LLM)."),
    ] = None,
    judge_mode: Annotated[str, typer.Option(help=JUDGE_MODE_HELP)] = "auto",
    min_score: Annotated[
        float | None,
        typer.Option(min=1, max=5, help="Acceptance threshold (default: the dataset's, else 3)."),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Judge a dataset's records again (another judge or mode), then redo acceptance and splits.

    Records that passed the rule checks are scored; those already judged by the same judge
    and mode are skipped, so a killed run continues. The earlier judgement is kept in each
    record's judge_earlier.
    """
    from convir.llm import KINDS as LLM_KINDS
    from convir.specs import parse_spec

    _check_judge_mode(judge_mode)
    if judge_llm:
        parse_spec(judge_llm, LLM_KINDS)
    if not dataset.is_file():
        raise ConvirError(f"{dataset} not found")
    meta = _meta(dataset)
    spec = judge_llm or meta.get("judge_llm") or meta.get("llm")
    if not spec:
        raise ConvirError(f"{dataset} has no .meta.json naming its LLM: give --judge-llm SPEC")
    from convir.datagen.recqr import DEFAULT_RATIOS, RecqrConfig, rejudge

    cfg = RecqrConfig(
        llm=str(meta.get("llm") or spec),
        judge_llm=spec,
        judge_mode=judge_mode,
        min_score=float(min_score if min_score is not None else meta.get("min_score", 3.0)),
        seed=int(meta.get("seed", 0)),
        ratios=tuple(meta.get("ratios", DEFAULT_RATIOS)),  # type: ignore[arg-type]
    )
    progress = _progress(json_out)
    task: list[Any] = []
    with progress:
        result = rejudge(
            dataset,
            cfg,
            on_total=lambda n: task.append(progress.add_task("judge", total=n)),
            on_done=lambda: progress.advance(task[0]),
        )
    meta_path = dataset.with_suffix(".meta.json")
    if meta_path.is_file():
        from convir.atomic import write_json

        full = json.loads(meta_path.read_text(encoding="utf-8"))
        full.setdefault("config", {}).update(
            judge_llm=spec, judge_mode=result["mode"], min_score=cfg.min_score
        )
        full["rejudge"] = result
        write_json(meta_path, full)
    if json_out:
        typer.echo(json.dumps(result, indent=2))
    else:
        c = _console()
        c.print(
            f"judge {result['judge']} ({result['mode']}): {result['rejudged']} records judged, "
            f"{result['skipped']} already judged so",
            markup=False,
        )
        for part in ("text", "multimodal"):
            d = result[part]
            c.print(
                f"  {part}: {d['accepted']} of {d['records']} records accepted; mean score "
                f"{d['mean_score'] if d['mean_score'] is not None else '-'} over {d['judged']}",
                markup=False,
            )
        c.print(
            "splits: " + ", ".join(f"{k} {v['text']}+{v['multimodal']}" for k, v in result["splits"].items())
        )
        for rid, why in result["failed"][:20]:
            c.print(f"  failed {rid}: {why}", markup=False)
    raise typer.Exit(1 if result["failed"] else 0)


@datagen_app.command("review-export")
def review_export_cmd(
    dataset: Annotated[Path, typer.Argument(help="JSONL written by `convir datagen recqr`.")],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="CSV (default: DATASET.review.csv).")
    ] = None,
    everything: Annotated[
        bool, typer.Option("--all", help="Every record, not only the judge-accepted.")
    ] = False,
) -> None:
    """Write the human-review sheet: annotator_1, annotator_2 (accept/reject), tie_breaker."""
    from convir.datagen.recqr import read_records, split_files
    from convir.datagen.review import export_review

    records, _bad = read_records(dataset)
    if not records:
        raise ConvirError(f"{dataset} has no records")
    target = out or split_files(dataset)["review"]
    n = export_review(records, target, everything)
    typer.echo(f"wrote {n} rows to {target}")


@datagen_app.command("review-merge")
def review_merge_cmd(
    dataset: Annotated[Path, typer.Argument(help="JSONL written by `convir datagen recqr`.")],
    review: Annotated[Path, typer.Argument(help="The review CSV with annotators' decisions.")],
) -> None:
    """Merge human decisions into the dataset (agreement, else the tie-breaker) and rewrite
    the split files; records nobody reviewed keep the judge's decision."""
    from convir.datagen.recqr import DEFAULT_RATIOS, RecqrConfig, finalize, read_records
    from convir.datagen.review import merge_review, read_review

    records, _bad = read_records(dataset)
    if not records:
        raise ConvirError(f"{dataset} has no records")
    counts = merge_review(records, read_review(review))
    meta = _meta(dataset)
    cfg = RecqrConfig(
        llm=meta.get("llm", ""),
        min_score=float(meta.get("min_score", 3.0)),
        seed=int(meta.get("seed", 0)),
        ratios=tuple(meta.get("ratios", DEFAULT_RATIOS)),  # type: ignore[arg-type]
    )
    splits = finalize(dataset, records, cfg)
    typer.echo(
        f"merged {review}: {counts['accept']} accepted, {counts['reject']} rejected, "
        f"{counts['unresolved']} unresolved (annotators disagree, no tie-breaker), "
        f"{counts['unreviewed']} unreviewed; splits: "
        + ", ".join(f"{k} {v['text']}+{v['multimodal']}" for k, v in splits.items())
    )
    if counts["unresolved"]:
        raise typer.Exit(1)


def recqr_eval_cmd(
    dataset: Annotated[
        Path, typer.Argument(help="JSONL from `convir datagen recqr` (or one of its split files).")
    ],
    index: Annotated[Path, typer.Option(help="Index directory of the gallery the dataset was built from.")],
    llm: Annotated[
        list[str] | None,
        typer.Option(
            help="Rewriter LLM (repeatable): llamacpp:smollm2, openai:URL#MODEL, hf:/fine-tuned/rewriter."
        ),
    ] = None,
    mode: Annotated[str, typer.Option(help="dense | bm25 | hybrid")] = "dense",
    split: Annotated[str, typer.Option(help="all | train | dev | test (the records' split field)")] = "all",
    include_rejected: Annotated[bool, typer.Option(help="Also score records the judge rejected.")] = False,
    plain_rewrite: Annotated[
        bool, typer.Option(help="Rewrite without the anchoring rules of the rewrite strategy.")
    ] = False,
    out: Annotated[Path | None, typer.Option("--out", help="Also write the report (.json and .md).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """ReCQR Table 3: R@1/5/10 of the target image for the original query, the target query,
    the caption, the concatenated dialogue and each --llm rewriter; text-only and multimodal parts."""
    from convir.datagen.bench import load_records, run_table3, table3_markdown

    if mode not in ("dense", "bm25", "hybrid"):
        raise ConvirError(f"unknown --mode {mode!r}; choose dense, bm25 or hybrid")
    if split not in ("all", "train", "dev", "test"):
        raise ConvirError(f"unknown --split {split!r}; choose all, train, dev or test")
    from convir.llm import KINDS as LLM_KINDS
    from convir.specs import parse_spec

    for spec in llm or []:
        parse_spec(spec, LLM_KINDS)
    records = load_records(dataset, split, include_rejected)
    from convir.search import open_index

    idx = open_index(index)
    rewriters = {}
    if llm:
        from convir.dialog.strategies import RewriteStrategy
        from convir.llm import load_llm

        for spec in llm:
            kw = {"anchor": False, "keep_answers": False} if plain_rewrite else {}
            rewriters[f"rewrite ({spec})"] = RewriteStrategy(load_llm(spec), **kw)
    with _progress(json_out or not rewriters) as progress:
        task = progress.add_task("rewrites", total=len(records) * len(rewriters))
        report = run_table3(records, idx, rewriters, mode, on_rewrite=lambda n: progress.advance(task, n))
    report |= {"dataset": str(dataset), "index": str(index), "split": split, "gallery": len(idx)}
    md = table3_markdown(report)
    if out is not None:
        from convir.atomic import write_json, write_text

        write_json(out.with_suffix(".json"), report)
        write_text(out.with_suffix(".md"), md + "\n")
    if json_out:
        typer.echo(json.dumps({k: v for k, v in report.items() if k != "rewrites"}, indent=2))
    else:
        _console().print(md, markup=False)


def register_eval(eval_app: typer.Typer) -> None:
    """Add ``recqr`` to ``convir eval`` (kept here so eval/cli.py needs no edit)."""
    eval_app.command("recqr")(recqr_eval_cmd)
