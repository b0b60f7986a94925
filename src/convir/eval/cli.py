"""``convir eval ...`` and ``convir report ...`` commands (kept apart from cli.py to stay small)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from convir.errors import ConvirError
from convir.imagine.options import imagination_options, imagination_report, imagine_settings
from convir.index import DEFAULT_ALPHA, DEFAULT_FUSION

eval_app = typer.Typer(
    help="Evaluate retrieval and conversation methods with the published protocols.", no_args_is_help=True
)
report_app = typer.Typer(help="Summarise and plot evaluation runs.", no_args_is_help=True)

OutOpt = Annotated[
    Path | None,
    typer.Option(
        "--out",
        help="Run folder (report.json, report.md, per-target "
        "cache). Default: runs/<command>-<config hash>; "
        "re-running the same command resumes it.",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the metrics as JSON.")]
# imagination options, shared with `convir chat` (see docs/imagination.md)
ImagineOpt = Annotated[
    str | None,
    typer.Option(help="Imagination: dar | refiner (generate images of the target and search with them)."),
]
GeneratorOpt = Annotated[
    str,
    typer.Option(
        help="With --imagine: image generator spec: text: (offline, each image is its prompt), "
        "diffusers:MODEL_ID_OR_PATH, openai-images:BASE_URL#MODEL."
    ),
]
GeneratorOptionOpt = Annotated[
    list[str] | None,
    typer.Option(
        help="Generator option KEY=VALUE (repeatable): device, dtype, steps, guidance, size, seed, variant."
    ),
]
ImagesPerTurnOpt = Annotated[
    int | None, typer.Option(min=1, help="Images generated per turn (default: dar 3, refiner 1).")
]


def _run_dir(out: Path | None, kind: str, config: dict[str, Any]) -> Path:
    if out is not None:
        return out
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return Path("runs") / f"{kind}-{digest}"


def _progress(quiet: bool) -> Any:
    """Dialogues done / total with elapsed time; hidden with --json."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("[bold]dialogues"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), disable=quiet
    )


def _print_metrics(report: dict[str, Any], run_dir: Path, json_out: bool) -> None:
    if json_out:
        typer.echo(
            json.dumps(
                {
                    "run_dir": str(run_dir),
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
    from convir.eval.report import RunWriter
    from convir.eval.retrieval import RetrievalConfig, run_retrieval

    if split != "all" and dataset != "coco5k":
        raise ConvirError(f"{dataset} has no documented dev/test split: use --split all")
    cfg = RetrievalConfig(dataset, str(path), split, encoder, mode, fusion, alpha, image_root)
    config = {"command": "eval retrieval", **cfg.to_dict()}
    run_dir = _run_dir(out, f"retrieval-{dataset}-{split}-{mode}", config)
    writer = RunWriter(run_dir, config)
    result = run_retrieval(cfg)
    for target, ranks in result["ranks"].items():
        writer.add(target, ranks)
    report = writer.finish(
        result["metrics"],
        {"surrogate": result["surrogate"], "timings": result["timings"], "encoder": result["encoder"]},
    )
    _print_metrics(report, run_dir, json_out)


def _embedding_backend(corpus_embeddings: Path, search_space: list[str], text_encoder: str) -> Any:
    from convir.encoders import load_encoder
    from convir.eval.backends import EmbeddingBackend, load_corpus_embeddings

    corpus = load_corpus_embeddings(corpus_embeddings, expected_rows=len(search_space))
    return EmbeddingBackend(corpus, load_encoder(text_encoder))


def _replay(
    kind: str,
    config: dict[str, Any],
    dialogues: list[Any],
    positions: list[int],
    backend: Any,
    strategy_name: str,
    turns: int | None,
    out: Path | None,
    json_out: bool,
    llm: str | None = None,
) -> None:
    from convir.dialog.strategies import load_strategy
    from convir.eval.dialog import replay
    from convir.eval.report import RunWriter, turn_metrics

    strategy = load_strategy(strategy_name, _load_llm(llm))
    run_dir = _run_dir(out, kind, config)
    writer = RunWriter(run_dir, config)
    with _progress(json_out) as progress:
        task = progress.add_task("replay", total=len(dialogues))
        ranks = replay(
            dialogues,
            positions,
            strategy,
            backend,
            writer,
            turns,
            on_done=lambda n: progress.advance(task, n),
        )
    report = writer.finish(turn_metrics(ranks))
    _print_metrics(report, run_dir, json_out)


def _select(dialogues: list[Any], split: str, limit: int | None, dataset: str | None) -> list[Any]:
    from convir.eval.datasets import split_items

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
        run_dir = _run_dir(out, "chatir", plans[0].config)
        dirs = [run_dir]
    else:
        base = out or _run_dir(None, "chatir", {"runs": [p.config for p in plans]})
        dirs = [base / stem for stem in stems]
    reports = []
    with _progress(json_out) as progress:
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
    dialogues: Annotated[
        Path | None,
        typer.Option(
            help='Replay fixed dialogues instead: a ChatIR .json file or JSONL {"id", "target", "turns"}.'
        ),
    ] = None,
    index: Annotated[
        Path | None, typer.Option(help="Replay: index directory whose item ids are the targets.")
    ] = None,
    corpus_embeddings: Annotated[
        Path | None, typer.Option(help="Replay: [N, d] embeddings instead of --index.")
    ] = None,
    search_space: Annotated[
        Path | None, typer.Option(help="With --corpus-embeddings: the image list.")
    ] = None,
    text_encoder: Annotated[
        str | None, typer.Option(help="With --corpus-embeddings: the text encoder.")
    ] = None,
    encoder: Annotated[str, typer.Option(help="coco5k-sim: gallery/query encoder.")] = "caption:minilm",
    strategy: Annotated[
        str, typer.Option(help="Query builder: concat | rewrite | expand | rerank")
    ] = "concat",
    questioner: Annotated[str, typer.Option(help="coco5k-sim: plain | candidates | none")] = "plain",
    answerer: Annotated[
        str,
        typer.Option(
            help="Simulated user: captions (LLM answers from held-out captions) | vlm (a "
            "vision-language model looks at the target image; needs --vlm and a dataset with "
            "images, e.g. flickr8k-sim)"
        ),
    ] = "captions",
    llm: Annotated[
        str | None,
        typer.Option(help="LLM spec: llamacpp:smollm2, llamacpp:gemma3-270m, openai:URL#MODEL, hf:MODEL"),
    ] = None,
    vlm: Annotated[
        str | None,
        typer.Option(
            help="--answerer vlm: vision-language model spec, hf:MODEL_ID_OR_PATH (transformers) "
            "or openai:BASE_URL#MODEL (OpenAI-compatible server with vision)."
        ),
    ] = None,
    reranker: Annotated[
        str,
        typer.Option(
            help="--strategy rerank, second stage: llm (LLM rates each candidate 0-9, fused with the "
            "first-stage order) | llm-list (LLM orders the candidates) | cross:PATH_OR_ID (cross-encoder)"
        ),
    ] = "llm",
    mode: Annotated[str, typer.Option(help="Replay with --index: dense | bm25 | hybrid")] = "dense",
    split: Annotated[str, typer.Option(help="dev | test | all")] = "all",
    limit: Annotated[int | None, typer.Option(min=1, help="Only the first N targets/dialogues.")] = None,
    turns: Annotated[
        int | None,
        typer.Option(
            min=0, help="Question rounds after the description (coco5k-sim default 10; replay: all)."
        ),
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
    out: OutOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Multi-turn evaluation: per-turn ranks of every target, Hits@K (cumulative) and Recall@K per turn.

    Simulated (--dataset coco5k-sim|flickr8k-sim PATH): the full loop of strategy, questioner
    and a simulated user. Replay (--dialogues FILE): fixed dialogues through a strategy.
    """
    if dataset is not None:
        _simulated(
            path,
            dataset,
            encoder,
            strategy,
            questioner,
            answerer,
            llm,
            split,
            limit,
            10 if turns is None else turns,
            out,
            json_out,
            vlm=vlm,
            reranker=reranker,
            imagine=imagine_settings(
                imagine, generator, generator_option, images_per_turn, dar_schedule, dar_fusion
            ),
        )
        return
    if imagine:
        raise ConvirError("--imagine needs the simulated loop (--dataset ...): replayed dialogues are fixed")
    if dialogues is None:
        raise ConvirError("give --dataset coco5k-sim PATH (simulated) or --dialogues FILE (replay)")
    if reranker != "llm" or vlm:
        raise ConvirError(
            "--reranker and --vlm need the simulated loop (--dataset ...): a replay only searches "
            "each strategy's query text"
        )
    from convir.eval.datasets import load_chatir, load_dialogues_jsonl

    if dialogues.suffix == ".jsonl":
        dlgs = load_dialogues_jsonl(dialogues)
        space = None
    else:
        dlgs, space = load_chatir(dialogues, search_space)
    chosen = _select(dlgs, split, limit, "chatir" if len(dlgs) == 2064 else None)
    config: dict[str, Any] = {
        "command": "eval dialog",
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
        backend: Any = RankerBackend(idx.ranker, idx.encoder, mode)
        where = idx.position
        config |= {"index": str(index), "encoder": idx.encoder_spec, "mode": mode}
    elif corpus_embeddings is not None and text_encoder and (space or search_space):
        from convir.eval.datasets import load_search_space

        space = space or load_search_space(search_space)  # type: ignore[arg-type]
        backend = _embedding_backend(corpus_embeddings, space, text_encoder)
        where = {p: i for i, p in enumerate(space)}
        config |= {"corpus_embeddings": str(corpus_embeddings), "text_encoder": text_encoder}
    else:
        raise ConvirError("give --index DIR, or --corpus-embeddings with --search-space and --text-encoder")
    missing = [d.target for d in chosen if d.target not in where]
    if missing:
        raise ConvirError(f"{len(missing)} dialogue targets are not in the gallery, e.g. {missing[0]!r}")
    _replay(
        "dialog",
        {**config, "limit": limit},
        chosen,
        [where[d.target] for d in chosen],
        backend,
        strategy,
        turns,
        out,
        json_out,
        llm,
    )


def _simulated(
    path: Path | None,
    dataset: str,
    encoder: str,
    strategy: str,
    questioner: str,
    answerer: str,
    llm: str | None,
    split: str,
    limit: int | None,
    turns: int,
    out: Path | None,
    json_out: bool,
    imagine: dict[str, Any] | None = None,
    vlm: str | None = None,
    reranker: str = "llm",
) -> None:
    from convir.dialog.questioners import load_questioner
    from convir.dialog.strategies import load_strategy
    from convir.encoders import load_encoder
    from convir.eval.report import RunWriter, turn_metrics
    from convir.eval.simulated import SIM_DATASETS, SIM_WITH_IMAGES, load_sim, run_simulated
    from convir.simulate.answerers import load_answerer

    if dataset not in SIM_DATASETS:
        raise ConvirError(f"unknown --dataset {dataset!r}; available: {', '.join(SIM_DATASETS)}")
    if path is None:
        raise ConvirError(f"--dataset {dataset} needs the dataset folder as PATH")
    if answerer == "vlm" and not vlm:
        raise ConvirError("--answerer vlm needs --vlm SPEC (hf:MODEL_ID_OR_PATH or openai:BASE_URL#MODEL)")
    if vlm and answerer != "vlm":
        raise ConvirError("--vlm is only used by --answerer vlm")
    if vlm:  # a malformed spec fails now, not after the gallery is encoded
        from convir.simulate.vlm import KINDS as VLM_KINDS
        from convir.specs import parse_spec

        parse_spec(vlm, VLM_KINDS)
    if answerer == "vlm" and dataset not in SIM_WITH_IMAGES:
        raise ConvirError(
            f"--answerer vlm needs the target images, which {dataset} does not have: "
            f"use --dataset {' or '.join(sorted(SIM_WITH_IMAGES))} (captions.txt + images/)"
        )
    model = _load_llm(llm)
    enc = load_encoder(encoder)
    sim = load_sim(dataset, str(path), split, enc)
    gallery, held_out = sim.gallery, sim.held_out
    targets = sim.targets[:limit] if limit else sim.targets
    images: dict[str, str] = {}
    if answerer == "vlm":
        images = {t.id: sim.images[t.id] for t in targets if t.id in sim.images}
        missing = [t.id for t in targets if not Path(images.get(t.id, "")).is_file()]
        if missing:
            raise ConvirError(
                f"--answerer vlm: {len(missing)} target images are missing, "
                f"e.g. {sim.images.get(missing[0], missing[0])}"
            )
    strat = load_strategy(strategy, model, reranker=reranker)
    quest = load_questioner(questioner, model)
    ans = load_answerer(answerer, llm=model, captions_by_id=held_out, vlm=vlm, image_paths_by_id=images)
    config = {
        "command": "eval dialog",
        "dataset": dataset,
        "path": str(path),
        "split": split,
        "encoder": enc.spec,
        "strategy": strategy,
        "questioner": questioner,
        "answerer": answerer,
        "llm": llm,
        "turns": turns,
    }
    # recorded only when not the default, so earlier runs' configs (and folders) stay valid
    config |= {"vlm": vlm} if vlm else {}
    config |= {"reranker": reranker} if reranker != "llm" else {}
    imag = None
    if imagine:  # recorded only when on, so earlier runs' configs (and folders) stay valid
        from convir.imagine import load_imagination

        config |= imagine
        imag = load_imagination(
            imagine["imagine"], imagine["generator"], model, **imagination_options(imagine)
        )
    kind = f"sim-{strategy}-{questioner}" + (f"-{imagine['imagine']}" if imagine else "")
    run_dir = _run_dir(out, kind, config)
    writer = RunWriter(run_dir, {**config, "limit": limit})
    with _progress(json_out) as progress:
        task = progress.add_task("simulate", total=len(targets))
        ranks = run_simulated(
            gallery,
            targets,
            strat,
            quest,
            ans,
            writer,
            turns,
            on_done=lambda n: progress.advance(task, n),
            imagination=imag,
        )
    extra: dict[str, Any] = {"latency": _latency(writer)}
    if imagine:
        extra["imagination"] = imagination_report(writer, imag, imagine)
    report = writer.finish(turn_metrics(ranks), extra)
    _print_metrics(report, run_dir, json_out)


def _load_llm(spec: str | None) -> Any:
    if spec is None:
        return None
    from convir.llm import load_llm

    return load_llm(spec)


def _latency(writer: Any) -> dict[str, Any]:
    """p50/p95 seconds per turn and per stage, from the per-target logs in targets.jsonl.
    ``turn_s`` is every stage; ``system_s`` leaves out the simulated user's own time
    (``answer_s``, ``feedback_s``): what a person would wait for."""
    import numpy as np

    from convir.eval.report import turn_stage_seconds

    stages: dict[str, list[float]] = {}
    for line in writer.targets_path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        for turn in (rec.get("extra") or {}).get("turns", []):
            for k, v in turn_stage_seconds(turn).items():
                stages.setdefault(k, []).append(v)
    return {
        k: {"p50": float(np.percentile(v, 50)), "p95": float(np.percentile(v, 95)), "n": len(v)}
        for k, v in stages.items()
    }


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
