"""``convir eval ...`` and ``convir report ...`` commands (kept apart from cli.py to stay small)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from convir.dialog.defaults import PROMPT_TURNS
from convir.errors import ConvirError
from convir.eval.options import (
    GeneratorOpt,
    GeneratorOptionOpt,
    ImagesPerTurnOpt,
    ImagineOpt,
    JsonOpt,
    LLMOpt,
    OutOpt,
    PromptTurnsOpt,
    RerankerOpt,
    StrategyOpt,
)
from convir.index import DEFAULT_ALPHA, DEFAULT_FUSION
from convir.specs import REGISTRY

eval_app = typer.Typer(
    help="Evaluate retrieval and conversation methods with the published protocols.", no_args_is_help=True
)
report_app = typer.Typer(help="Summarise and plot evaluation runs.", no_args_is_help=True)

RANK_MODES = ("dense", "bm25", "hybrid")


def _check_mode(mode: str) -> None:
    if mode not in RANK_MODES:
        raise ConvirError(f"unknown --mode {mode!r}; choose one of: {', '.join(RANK_MODES)}")


def _progress(label: str) -> Any:
    """Dialogues done / total on stderr (a bar on a terminal, plain lines when redirected)."""
    from convir.progress import progress

    return progress(label)


def _print_metrics(report: dict[str, Any], run_dir: Path, json_out: bool) -> None:
    if json_out:
        typer.echo(
            json.dumps(
                {
                    "run_dir": str(run_dir),
                    "n_targets": report.get("n_targets"),
                    "metrics": report["metrics"],
                    **{k: report[k] for k in ("surrogate", "timings") if k in report},
                },
                indent=2,
            )
        )
        return
    from rich.console import Console

    console = Console(highlight=False)
    console.print((run_dir / "report.md").read_text(encoding="utf-8"), markup=False)
    console.print(f"written: {run_dir}/report.json, {run_dir}/report.md")
    if report.get("folder_targets"):
        console.print(
            f"(the run folder holds {report['folder_targets']} targets; this report covers the "
            f"{report['n_targets']} selected by --split/--limit)"
        )


@eval_app.command("retrieval")
def retrieval_cmd(
    path: Annotated[
        Path,
        typer.Argument(
            help="Dataset folder (coco5k: Search_Space_coco.json + "
            "coco_captions.json; flickr8k: captions.txt + images/)."
        ),
    ],
    dataset: Annotated[str, typer.Option(help="coco5k | flickr8k")] = "coco5k",
    split: Annotated[str, typer.Option(help="dev (coco5k 0-3999) | test (4000-4999) | all")] = "test",
    encoder: Annotated[
        str, typer.Option(help="Encoder spec (caption:minilm, open_clip:..., hf:...).")
    ] = "caption:minilm",
    mode: Annotated[str, typer.Option(help="dense | bm25 | hybrid")] = "dense",
    fusion: Annotated[str, typer.Option(help="Hybrid fusion: weighted | rrf")] = DEFAULT_FUSION,
    alpha: Annotated[
        float, typer.Option(min=0, max=1, help="Dense weight in hybrid fusion.")
    ] = DEFAULT_ALPHA,
    image_root: Annotated[
        str | None, typer.Option(help="Folder with the COCO images (image encoders).")
    ] = None,
    out: OutOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Caption-to-image retrieval, Recall@1/5/10 and MRR.

    Offline (caption encoders) each gallery image is represented by its captions[1:3] and
    captions[0] is the query; with an image-text encoder and --image-root the gallery is the
    images themselves. See docs/evaluation.md.
    """
    from convir.eval.retrieval import DATASETS, RetrievalConfig, run_retrieval
    from convir.eval.runs import RunWriter, run_dir_for
    from convir.index.hybrid import FUSIONS
    from convir.specs import REGISTRY

    if dataset not in DATASETS:
        raise ConvirError(f"unknown --dataset {dataset!r}; choose one of: {', '.join(DATASETS)}")
    if split not in ("dev", "test", "all"):
        raise ConvirError(f"unknown --split {split!r}; use dev, test or all")
    if split != "all" and dataset != "coco5k":
        raise ConvirError(f"{dataset} has no documented dev/test split: use --split all")
    _check_mode(mode)
    if fusion not in FUSIONS:
        raise ConvirError(f"unknown --fusion {fusion!r}; choose one of: {', '.join(FUSIONS)}")
    REGISTRY.parse("encoder", encoder)
    cfg = RetrievalConfig(dataset, str(path), split, encoder, mode, fusion, alpha, image_root)
    config = {"command": "eval retrieval", **cfg.to_dict()}
    run_dir = run_dir_for(out, f"retrieval-{dataset}-{split}-{mode}", config)
    writer = RunWriter(run_dir, config)
    result = run_retrieval(cfg)
    for target, ranks in result["ranks"].items():
        writer.add(target, ranks)
    report = writer.finish(
        result["metrics"],
        {"surrogate": result["surrogate"], "timings": result["timings"], "encoder": result["encoder"]},
    )
    _print_metrics(report, run_dir, json_out)


def _select(dialogues: list[Any], split: str, limit: int | None, dataset: str | None) -> list[Any]:
    from convir.datasets import split_items

    chosen = split_items(dialogues, split, dataset)
    return chosen[:limit] if limit else chosen


@eval_app.command("chatir")
def chatir_cmd(
    dialogues: Annotated[
        list[Path],
        typer.Option(
            help="ChatIR dialogue file, e.g. ChatGPT_BLIP2.json. Repeat for several: one run folder "
            "each (--out/<file name>), models loaded once."
        ),
    ],
    corpus_embeddings: Annotated[
        Path,
        typer.Option(
            help="Image embeddings, row i = search-space image i: .npy [N, d] (convir embed corpus), "
            ".pt/.pth tensor, or the official ChatIR cache torch.save((ids, vectors), path)."
        ),
    ],
    text_encoder: Annotated[
        str,
        typer.Option(
            help="Text tower of the model that embedded the corpus (blip:..., open_clip:..., hf:...)."
        ),
    ],
    search_space: Annotated[
        Path | None,
        typer.Option(help="Search-space list (default: Search_Space_val_50k.json next to --dialogues)."),
    ] = None,
    split: Annotated[
        str, typer.Option(help="dev (0-1499) | test (1500-2063) | all (the official 2,064-dialogue numbers)")
    ] = "test",
    limit: Annotated[int | None, typer.Option(min=1, help="Only the first N dialogues of the split.")] = None,
    long_text: Annotated[
        str,
        typer.Option(
            help="Queries longer than the text tower's context: truncate (as the official baselines: "
            "CLIP 77 tokens, BLIP max_length 200) | chunk (encode word windows, average)."
        ),
    ] = "truncate",
    k: Annotated[
        list[int] | None,
        typer.Option("--k", min=1, help="Cut-off K of Hits@K / Recall@K (repeatable; default 1, 5, 10)."),
    ] = None,
    rounds: Annotated[
        int | None,
        typer.Option(
            min=0, help="Question rounds after the caption (turns 0..N; default: all, 10 for ChatIR)."
        ),
    ] = None,
    query: Annotated[
        str,
        typer.Option(
            help="concat: turn t searches ', '.join(dialog[:t+1]) (ChatIR) | per-turn: dialog\\[t] alone "
            "(PlugIR's --split)."
        ),
    ] = "concat",
    device: Annotated[str, typer.Option(help="Text encoder device: cpu, cuda, cuda:1, mps.")] = "cpu",
    batch_size: Annotated[int, typer.Option(min=1, help="Queries encoded per batch.")] = 64,
    imagine: Annotated[
        str | None, typer.Option(help="dar: search with text + generated images (DAR's fused query).")
    ] = None,
    generator: GeneratorOpt = "text:",
    generator_option: GeneratorOptionOpt = None,
    images_per_turn: ImagesPerTurnOpt = None,
    dar_schedule: Annotated[
        str, typer.Option(help="DAR a/b weights per turn (the last pair holds for later turns).")
    ] = "0.7/0.3,0.7/0.3,0.5/0.5",
    llm: Annotated[
        str | None,
        typer.Option(help="With --imagine dar: LLM writing the diffusion prompts (else templates)."),
    ] = None,
    out: OutOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """The ChatIR protocol as the official eval.py runs it: Hits@K (first hit) per turn 0..10.

    Query at turn t = ", ".join(dialog[:t+1]), truncated by the text tower, inner product against
    the normalised corpus. Ties are broken by search-space index (deterministic; the official
    torch.argsort is not). See docs/evaluation.md for what matches the official code exactly.
    """
    from convir.eval import chatir
    from convir.eval.runs import run_dir_for
    from convir.imagine.options import imagine_settings

    settings = imagine_settings(imagine, generator, generator_option, images_per_turn, dar_schedule)
    protocol = chatir.Protocol(query=query, rounds=rounds, long_text=long_text)
    stems = [f.stem for f in dialogues]
    if len(set(stems)) != len(stems):
        raise ConvirError("several --dialogues files share a name; their run folders would collide")
    plans = [  # every file is checked before any model loads
        chatir.plan(f, corpus_embeddings, text_encoder, search_space, split, limit, protocol, k, device,
                    batch_size, settings, llm)
        for f in dialogues
    ]  # fmt: skip
    if len(plans) == 1:
        run_dir = run_dir_for(out, "chatir", plans[0].config)
        dirs = [run_dir]
    else:
        base = out or run_dir_for(None, "chatir", {"runs": [p.config for p in plans]})
        dirs = [base / stem for stem in stems]
    reports = []
    with _progress("dialogues") as progress:
        for plan, run_dir in zip(plans, dirs, strict=True):
            task = progress.add_task("chatir", total=len(plan.dialogues))
            reports.append(chatir.run(plan, run_dir, on_done=lambda n, t=task: progress.advance(t, n)))
    if len(plans) == 1:
        _print_metrics(reports[0], dirs[0], json_out)
        return
    if json_out:
        runs = [
            {"dialogues": str(f), "run_dir": str(d), "metrics": r["metrics"]}
            for f, d, r in zip(dialogues, dirs, reports, strict=True)
        ]
        typer.echo(json.dumps({"runs": runs}, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    cut = max(plans[0].ks)
    table = Table(title=f"Hits@{cut} (%) per turn, {text_encoder}")
    table.add_column("dialogues", no_wrap=True)
    n_turns = len(reports[0]["metrics"][f"hits@{cut}"])
    for t in range(n_turns):
        table.add_column(str(t), justify="right")
    for f, r in zip(dialogues, reports, strict=True):
        table.add_row(f.stem, *(f"{100 * v:.1f}" for v in r["metrics"][f"hits@{cut}"]))
    console = Console(highlight=False)
    console.print(table)
    console.print("written: " + ", ".join(str(d / "report.json") for d in dirs), markup=False)


@eval_app.command("dialog")
def dialog_cmd(
    path: Annotated[
        Path | None, typer.Argument(help="Dataset folder for --dataset (e.g. ../shared/data/coco5k).")
    ] = None,
    dataset: Annotated[
        str | None,
        typer.Option(
            help="Simulated protocol: coco5k-sim or flickr8k-sim (gallery = captions[1:3], "
            "description = captions[0], answers from captions[3:]; flickr8k-sim also has the "
            "target images, for --answerer vlm)."
        ),
    ] = None,
    encoder: Annotated[str, typer.Option(help="Gallery/query encoder spec.")] = "caption:minilm",
    strategy: StrategyOpt = "concat",
    questioner: Annotated[
        str | None,
        typer.Option(
            help=f"{REGISTRY.choices('questioner')} (infogain and choice need no LLM; default: plain "
            "with --llm, else infogain-open)"
        ),
    ] = None,
    answerer: Annotated[
        str | None,
        typer.Option(
            help="Simulated user: facts (no LLM: yes / no / don't know and open answers by rule from "
            "the held-out captions) | captions (an LLM answers from the held-out captions; needs "
            "--llm) | vlm (a vision-language model looks at the target image; needs --vlm and a "
            "dataset with images, e.g. flickr8k-sim). Default: captions with --llm, else facts"
        ),
    ] = None,
    llm: LLMOpt = None,
    vlm: Annotated[
        str | None,
        typer.Option(
            help="--answerer vlm: vision-language model spec, hf:MODEL_ID_OR_PATH (transformers) "
            "or openai:BASE_URL#MODEL (OpenAI-compatible server with vision)."
        ),
    ] = None,
    reranker: RerankerOpt = "llm",
    split: Annotated[str, typer.Option(help="dev | test | all")] = "all",
    gallery: Annotated[
        str,
        typer.Option(
            help="coco5k-sim gallery: split (the split's own items) | all (all 5,000 items, targets "
            "still from --split: 5x the distractors on test)"
        ),
    ] = "split",
    start: Annotated[
        str,
        typer.Option(
            help="The first description: full (captions[0]) | vague:N (its first N words, e.g. "
            "vague:5 -> 'a man riding a wave')"
        ),
    ] = "full",
    answers: Annotated[
        str,
        typer.Option(
            help="aware (read yes/no answers into a posterior over the candidates; 'no' and "
            "'unknown' answers leave the query text) | text (every answer is query text, as the papers)"
        ),
    ] = "aware",
    prompt_turns: PromptTurnsOpt = PROMPT_TURNS,
    limit: Annotated[int | None, typer.Option(min=1, help="Only the first N targets.")] = None,
    turns: Annotated[
        int | None, typer.Option(min=0, help="Question rounds after the description (default 10).")
    ] = None,
    imagine: ImagineOpt = None,
    generator: GeneratorOpt = "text:",
    generator_option: GeneratorOptionOpt = None,
    images_per_turn: ImagesPerTurnOpt = None,
    dar_schedule: Annotated[
        str, typer.Option(help="DAR a/b weights per turn (the last pair holds for later turns).")
    ] = "0.7/0.3,0.7/0.3,0.5/0.5",
    dar_fusion: Annotated[
        str, typer.Option(help="DAR fusion: query (F = a*text + b*sum(images)) | score (re-rank)")
    ] = "query",
    dialogues: Annotated[
        Path | None,
        typer.Option(hidden=True, help="Deprecated: use `convir eval replay --dialogues FILE`."),
    ] = None,
    index: Annotated[Path | None, typer.Option(hidden=True)] = None,
    corpus_embeddings: Annotated[Path | None, typer.Option(hidden=True)] = None,
    search_space: Annotated[Path | None, typer.Option(hidden=True)] = None,
    text_encoder: Annotated[str | None, typer.Option(hidden=True)] = None,
    mode: Annotated[str, typer.Option(hidden=True)] = "dense",
    gallery_captions: Annotated[
        str,
        typer.Option(
            help="shown | hidden: hidden = no part of the conversation reads caption text (the "
            "photo-library setting; item vectors still come from the captions, the simulated user "
            "still answers from its held-out facts)"
        ),
    ] = "shown",
    out: OutOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Simulated multi-turn evaluation: strategy, questioner and a simulated user.

    On --dataset coco5k-sim|flickr8k-sim PATH: the target's rank at every turn, Hits@K
    (cumulative) and Recall@K per turn. Fixed dialogues: `convir eval replay`.
    """
    if dialogues is not None:  # the old single command; kept working
        import sys

        print(
            "note: `convir eval dialog --dialogues` is deprecated; use `convir eval replay --dialogues`",
            file=sys.stderr,
        )
        if dataset is not None:
            raise ConvirError("give --dataset (simulated) or --dialogues (replay), not both")
        if imagine:
            raise ConvirError(
                "--imagine needs the simulated loop (--dataset ...): replayed dialogues are fixed"
            )
        if reranker != "llm" or vlm:
            raise ConvirError(
                "--reranker and --vlm need the simulated loop (--dataset ...): a replay only searches "
                "each strategy's query text"
            )
        replay_cmd(
            dialogues,
            index,
            corpus_embeddings,
            search_space,
            text_encoder,
            strategy,
            llm,
            mode,
            split,
            limit,
            turns,
            out,
            json_out,
        )
        return
    if dataset is None:
        raise ConvirError(
            "give --dataset coco5k-sim PATH (simulated), or use `convir eval replay --dialogues FILE`"
        )
    from convir.dialog.session import SessionSpec
    from convir.eval.simulated import run_sim_eval
    from convir.imagine.options import imagine_settings

    settings = imagine_settings(
        imagine, generator, generator_option, images_per_turn, dar_schedule, dar_fusion
    )
    if answerer is None:  # no LLM, no problem: the rule-based simulated user
        answerer = "captions" if llm and llm.strip() else "facts"
    spec = SessionSpec.with_imagination(
        settings,
        strategy=strategy,
        questioner=questioner,
        llm=llm,
        answerer=answerer,
        vlm=vlm,
        reranker=None if reranker == "llm" else reranker,
        answers=answers,
        k=10,
        depth=100,
        prompt_turns=prompt_turns,
    )
    report, run_dir = run_sim_eval(
        spec,
        dataset,
        path,
        split,
        encoder,
        limit,
        10 if turns is None else turns,
        out,
        _progress("dialogues"),
        gallery=gallery,
        start=start,
        gallery_captions=gallery_captions,
    )
    _print_metrics(report, run_dir, json_out)


@eval_app.command("replay")
def replay_cmd(
    dialogues: Annotated[
        Path, typer.Option(help='Fixed dialogues: a ChatIR .json file or JSONL {"id", "target", "turns"}.')
    ],
    index: Annotated[
        Path | None, typer.Option(help="Index directory whose item ids are the targets.")
    ] = None,
    corpus_embeddings: Annotated[
        Path | None, typer.Option(help="[N, d] embeddings (.npy/.pt) instead of --index.")
    ] = None,
    search_space: Annotated[
        Path | None, typer.Option(help="With --corpus-embeddings: the image list (row i = image i).")
    ] = None,
    text_encoder: Annotated[
        str | None, typer.Option(help="With --corpus-embeddings: the text encoder of that model.")
    ] = None,
    strategy: StrategyOpt = "concat",
    llm: LLMOpt = None,
    mode: Annotated[str, typer.Option(help="With --index: dense | bm25 | hybrid")] = "dense",
    split: Annotated[str, typer.Option(help="dev | test | all")] = "all",
    limit: Annotated[int | None, typer.Option(min=1, help="Only the first N dialogues.")] = None,
    turns: Annotated[
        int | None, typer.Option(min=1, help="Turns to score (description = turn 0); default all.")
    ] = None,
    out: OutOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Replay fixed dialogues (ChatIR files or JSONL) through a strategy.

    The target's rank at every turn, Hits@K (cumulative) and Recall@K per turn.
    """
    from convir.datasets import load_chatir, load_dialogues_jsonl
    from convir.dialog.session import SessionSpec, load_session_llm
    from convir.dialog.strategies import load_strategy
    from convir.eval.replay import embedding_backend, run_replay

    _check_mode(mode)
    spec = SessionSpec(strategy=strategy, llm=llm).validate()  # names before anything loads
    if index is None and not (corpus_embeddings is not None and text_encoder):
        raise ConvirError("give --index DIR, or --corpus-embeddings with --search-space and --text-encoder")
    if dialogues.suffix == ".jsonl":
        dlgs = load_dialogues_jsonl(dialogues)
        space = None
    else:
        dlgs, space = load_chatir(dialogues, search_space)
    chosen = _select(dlgs, split, limit, "chatir" if len(dlgs) == 2064 else None)
    config: dict[str, Any] = {
        "command": "eval dialog",  # the run-folder key of replays made before `eval replay` existed
        "dialogues": str(dialogues),
        "strategy": strategy,
        "llm": llm,
        "split": split,
        "turns": turns,
    }
    if index is not None:
        from convir.eval.backends import RankerBackend
        from convir.search import open_index

        idx = open_index(index)
        backend: Any = RankerBackend(idx, mode)
        where = idx.position
        config |= {"index": str(index), "encoder": idx.encoder_spec, "mode": mode}
    else:
        from convir.datasets import load_search_space

        if space is None and search_space is None:
            raise ConvirError("--corpus-embeddings needs --search-space (the image list)")
        space = space or load_search_space(search_space)  # type: ignore[arg-type]
        backend = embedding_backend(corpus_embeddings, space, text_encoder)  # type: ignore[arg-type]
        where = {p: i for i, p in enumerate(space)}
        config |= {"corpus_embeddings": str(corpus_embeddings), "text_encoder": text_encoder}
    missing = [d.target for d in chosen if d.target not in where]
    if missing:
        raise ConvirError(f"{len(missing)} dialogue targets are not in the gallery, e.g. {missing[0]!r}")
    strat = load_strategy(spec.strategy, load_session_llm(spec))
    report, run_dir = run_replay(
        "dialog",
        config,
        chosen,
        [where[d.target] for d in chosen],
        backend,
        strat,
        turns,
        out,
        _progress("dialogues"),
        limit=limit,
    )
    _print_metrics(report, run_dir, json_out)


@report_app.command("plot")
def plot_cmd(
    run_dirs: Annotated[list[Path], typer.Argument(help="Run folders with report.json.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="PNG file to write.")] = Path("hits.png"),
    metric: Annotated[str, typer.Option(help="Per-turn metric: hits@10, recall@10, hits@1, ...")] = "hits@10",
    label: Annotated[list[str] | None, typer.Option(help="Legend label per run (repeat).")] = None,
    title: Annotated[str | None, typer.Option(help="Figure title.")] = None,
) -> None:
    """Draw a per-turn metric (Hits@10 by default) vs dialogue turn for several runs on one PNG."""
    from convir.eval.report import plot_runs

    path = plot_runs(run_dirs, out, metric=metric, labels=label, title=title)
    typer.echo(f"wrote {path}")
