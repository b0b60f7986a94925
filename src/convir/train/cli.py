"""``convir train encoder`` and ``convir train rewriter`` (see docs/training.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from convir.errors import ConvirError

train_app = typer.Typer(
    help="Fine-tune the retriever's text encoder or the query rewriter (docs/training.md).",
    no_args_is_help=True,
)

PathArg = Annotated[
    Path | None, typer.Argument(help="Dataset folder for --dataset (e.g. ../shared/data/coco5k).")
]
DatasetOpt = Annotated[
    str | None,
    typer.Option(help="coco5k-sim | flickr8k-sim: build examples from the split's items (no LLM needed)."),
]
SplitOpt = Annotated[str, typer.Option(help="dev (coco5k 0-3999, ChatIR 0-1499) | all; test is refused.")]
RunOpt = Annotated[
    Path | None,
    typer.Option(
        "--run", help="A finished `convir eval dialog --dataset ...-sim` run folder (its dialogues)."
    ),
]
RecqrOpt = Annotated[Path | None, typer.Option(help="ReCQR-style JSONL (history, query, rewrite, target).")]
OutOpt = Annotated[Path, typer.Option("--out", help="Folder of the trained model (written when finished).")]
SeedOpt = Annotated[int, typer.Option(help="Seed of data order, negatives and initialisation.")]
SaveStepsOpt = Annotated[
    int, typer.Option(min=1, help="Checkpoint every N steps (a killed run resumes from the last one).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the training summary as JSON.")]


def _one_source(**sources: Any) -> str:
    given = [k for k, v in sources.items() if v]
    if len(given) != 1:
        names = ", ".join("--" + k.replace("_", "-") for k in sources)
        raise ConvirError(
            f"give exactly one training data source: {names}"
            + (f" (got {', '.join(given)})" if given else "")
        )
    return given[0]


def _print(info: dict[str, Any], json_out: bool) -> None:
    if json_out:  # without the per-step losses (they are in OUT/convir_train.json)
        slim = {k: v for k, v in info.items() if k != "loss"}
        if "stages" in slim:
            stages = slim["stages"].items()
            slim["stages"] = {s: {k: v for k, v in d.items() if k != "loss"} for s, d in stages}
        typer.echo(json.dumps(slim, indent=2))
        return
    typer.echo(
        f"trained {info['spec']} in {info['wall_s']:.0f} s ({info['steps']} steps, "
        f"{info['examples']} examples, peak memory {info['peak_rss_mib']:.0f} MiB, "
        f"load average {info['load_start']} -> {info['load_end']})"
    )


@train_app.command("encoder")
def encoder_cmd(
    path: PathArg = None,
    dataset: DatasetOpt = None,
    split: SplitOpt = "dev",
    run: RunOpt = None,
    chatir: Annotated[
        Path | None, typer.Option(help="ChatIR dialogue file (needs --index holding the targets' captions).")
    ] = None,
    recqr: RecqrOpt = None,
    pairs: Annotated[
        Path | None, typer.Option(help='Pairs JSONL: {"query", "positive", "negative"?, "group"?} per line.')
    ] = None,
    index: Annotated[
        Path | None, typer.Option(help="With --chatir / --recqr: index whose items are the targets.")
    ] = None,
    base: Annotated[
        str,
        typer.Option(help="Encoder to start from: caption:minilm | caption:PATH | open_clip:... | hf:..."),
    ] = "caption:minilm",
    out: OutOpt = Path("encoder-finetuned"),
    epochs: Annotated[int, typer.Option(min=1, help="Passes over the examples.")] = 1,
    batch_size: Annotated[int, typer.Option(min=2, help="Examples per batch (the in-batch negatives).")] = 64,
    lr: Annotated[float, typer.Option(help="Peak learning rate (linear warm-up and decay).")] = 5e-5,
    max_pairs: Annotated[
        int, typer.Option(min=0, help="Train on at most N examples (seeded, spread over items); 0 = all.")
    ] = 3000,
    hard_negatives: Annotated[
        str, typer.Option(help="Rank window LO-HI of mined hard negatives (QueryFormer: 50-70), or none.")
    ] = "50-70",
    image_root: Annotated[
        str | None, typer.Option(help="coco5k-sim with an image-text --base: folder of the COCO images.")
    ] = None,
    seed: SeedOpt = 0,
    save_steps: SaveStepsOpt = 10,
    device: Annotated[str, typer.Option(help="torch device: cpu | cuda | mps")] = "cpu",
    json_out: JsonOpt = False,
) -> None:
    """Fine-tune a text encoder for dialogue queries (InfoNCE + hard negatives).

    The result plugs in wherever an encoder spec goes: --encoder caption:OUT (index, eval,
    chat, serve). Re-run the same command after an interruption to resume.
    """
    from convir.train.encoder import EncoderOptions, parse_window, validate

    source = _one_source(dataset=dataset, run=run, chatir=chatir, recqr=recqr, pairs=pairs)
    opts = EncoderOptions(
        base=base,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        max_pairs=max_pairs or None,
        hard_negatives=parse_window(hard_negatives),
        seed=seed,
        save_steps=save_steps,
        device=device,
    )
    validate(opts)
    if source == "dataset" and path is None:
        raise ConvirError(f"--dataset {dataset} needs the dataset folder as PATH")
    if source == "chatir" and index is None:
        raise ConvirError(
            "--chatir needs --index: an index whose items are the dialogue targets (their captions)"
        )
    from convir.train.run import WorkFolder

    WorkFolder(out, {}).check_out() if out.exists() else None
    data = _encoder_data(source, path, dataset, split, run, chatir, recqr, pairs, index, image_root)
    from convir.train.encoder import train_encoder

    info = train_encoder(data, out, opts, quiet=json_out)
    _print(info, json_out)


def _encoder_data(
    source: str,
    path: Path | None,
    dataset: str | None,
    split: str,
    run: Path | None,
    chatir: Path | None,
    recqr: Path | None,
    pairs: Path | None,
    index: Path | None,
    image_root: str | None,
) -> Any:
    from convir.train import data as d

    if source == "dataset":
        ps = d.coco5k_sim_pairs(str(path), split, str(dataset))
        if image_root:
            from convir.datasets import load_coco5k

            ps.images = {
                it.id: str(it.image) for it in load_coco5k(str(path), image_root) if it.id in ps.docs
            }
        return ps
    if source == "run":
        return d.run_pairs(run)  # type: ignore[arg-type]
    if source == "chatir":
        return d.chatir_pairs(chatir, index, split)  # type: ignore[arg-type]
    if source == "recqr":
        return d.recqr_pairs(recqr, index)  # type: ignore[arg-type]
    return d.jsonl_pairs(pairs)  # type: ignore[arg-type]


@train_app.command("rewriter")
def rewriter_cmd(
    path: PathArg = None,
    dataset: DatasetOpt = None,
    split: SplitOpt = "dev",
    run: RunOpt = None,
    recqr: RecqrOpt = None,
    base: Annotated[
        str,
        typer.Option(
            help="Causal LM to start from: llamacpp:smollm2 | llamacpp:gemma3-270m | llamacpp:FILE.gguf "
            "(dequantised by transformers) | hf:MODEL_ID_OR_PATH"
        ),
    ] = "llamacpp:smollm2",
    out: OutOpt = Path("rewriter-finetuned"),
    stages: Annotated[
        str, typer.Option(help="T (text-only records), then M (history with images, continues from T).")
    ] = "T,M",
    max_t: Annotated[int, typer.Option(min=0, help="Records for stage T (seeded subset).")] = 80,
    max_m: Annotated[int, typer.Option(min=0, help="Records for stage M (seeded subset).")] = 32,
    epochs: Annotated[int, typer.Option(min=1, help="Passes over each stage's records.")] = 1,
    batch_size: Annotated[int, typer.Option(min=1, help="Records per step.")] = 4,
    lr: Annotated[float, typer.Option(help="LoRA learning rate.")] = 3e-4,
    lora_r: Annotated[int, typer.Option(min=1, help="LoRA rank (all linear layers).")] = 8,
    max_length: Annotated[
        int, typer.Option(min=32, help="Tokens per record (prompt start cut first).")
    ] = 384,
    seed: SeedOpt = 0,
    save_steps: SaveStepsOpt = 10,
    device: Annotated[str, typer.Option(help="torch device: cpu | cuda | mps")] = "cpu",
    json_out: JsonOpt = False,
) -> None:
    """LoRA-tune a causal LM to rewrite a dialogue into one self-contained search query.

    The merged model is a transformers folder: use it as --llm hf:OUT with any strategy
    (it was trained on the `rewrite` prompt). Re-run the same command to resume.
    """
    from convir.train.rewriter import RewriterOptions, validate

    source = _one_source(dataset=dataset, run=run, recqr=recqr)
    opts = RewriterOptions(
        base=base,
        stages=tuple(s.strip().upper() for s in stages.split(",") if s.strip()),
        max_t=max_t,
        max_m=max_m,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        lora_r=lora_r,
        lora_alpha=2 * lora_r,
        max_length=max_length,
        seed=seed,
        save_steps=save_steps,
        device=device,
    )
    validate(opts)
    if source == "dataset" and path is None:
        raise ConvirError(f"--dataset {dataset} needs the dataset folder as PATH")
    from convir.train import data as d
    from convir.train.run import WorkFolder

    WorkFolder(out, {}).check_out() if out.exists() else None
    if source == "dataset":
        records = d.sim_rewrite_records(str(path), split, seed, str(dataset))
        label = f"{dataset} {path} --split {split}"
    elif source == "run":
        records, label = d.run_rewrite_records(run), f"run {run}"  # type: ignore[arg-type]
    else:
        records, label = d.recqr_rewrite_records(recqr), f"recqr {recqr}"  # type: ignore[arg-type]
    from convir.train.rewriter import train_rewriter

    info = train_rewriter(records, label, out, opts, quiet=json_out)
    _print(info, json_out)
