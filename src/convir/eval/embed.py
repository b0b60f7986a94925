"""``convir embed ...``: compute corpus embeddings for the published protocols (kept light at import)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

embed_app = typer.Typer(
    help="Embed image collections for evaluation (e.g. ChatIR's 50k corpus).", no_args_is_help=True
)


@embed_app.command("corpus")
def corpus_cmd(
    images_root: Annotated[
        Path, typer.Argument(help="Folder the search-space paths are relative to (holds unlabeled2017/).")
    ],
    search_space: Annotated[
        Path,
        typer.Option(help="JSON list of image paths, row order of the output (Search_Space_val_50k.json)."),
    ],
    encoder: Annotated[
        str,
        typer.Option(
            help="Image-text encoder: blip:MODEL_OR_CHECKPOINT, open_clip:ARCH/PRETRAINED, hf:MODEL "
            "(e.g. blip:/w/chatir_weights.ckpt?image_size=224, open_clip:ViT-B-32/openai)."
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="corpus.npy (float32 [N, d]) or corpus.pt/.pth (the official torch (ids, vectors) cache).",
        ),
    ],
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:1, mps.")] = "cpu",
    dtype: Annotated[
        str, typer.Option(help="auto (float32 on CPU, as stored on GPU) | float32 | float16 | bfloat16.")
    ] = "auto",
    batch_size: Annotated[int, typer.Option(min=1, help="Images per model call.")] = 64,
    workers: Annotated[
        int | None,
        typer.Option(min=1, help="Threads decoding images ahead of the model (default min(8, CPUs))."),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Embed every image of a search space, row i = image i, for `convir eval chatir --corpus-embeddings`.

    Resumable: shards go to OUT.parts/ and a killed run continues where it stopped. A missing or
    corrupt image is listed (OUT.failures.json) and the final file is NOT written (exit 1): fix the
    files and rerun; only those images are read again. No row is ever silently zero.
    """
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from convir.eval.corpus import embed_corpus, failures_file, prepare, sidecar

    job = prepare(images_root, search_space, encoder, out, device, dtype, batch_size, workers)
    console = Console(stderr=True, highlight=False)
    progress = Progress(
        TextColumn("[bold]embedding"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=json_out,
    )
    state: dict[str, Any] = {}

    def on_start(total: int, done: int) -> None:
        state["task"] = progress.add_task("embed", total=total, completed=done, rate="")
        progress.start()

    def on_progress(n: int) -> None:
        progress.advance(state["task"], n)
        speed = progress.tasks[0].speed
        if speed:
            progress.update(state["task"], rate=f"{speed:,.1f} images/s")

    try:
        result = embed_corpus(job, on_start, on_progress)
    finally:
        progress.stop()
    summary = {
        "out": str(result.out),
        "rows": result.rows,
        "dim": result.dim,
        "encoded": result.encoded,
        "seconds": round(result.seconds, 2),
        "images_per_s": round(result.encoded / result.seconds, 2) if result.seconds else None,
        "up_to_date": result.up_to_date,
        "failed": len(result.failures),
        "metadata": str(sidecar(result.out)) if result.ok else None,
        "failures": str(failures_file(result.out)) if result.failures else None,
    }
    if json_out:
        typer.echo(json.dumps(summary, indent=2))
    elif result.up_to_date:
        typer.echo(f"{result.out} is up to date ({result.rows} x {result.dim}); nothing to do")
    elif result.ok:
        rate = f", {summary['images_per_s']} images/s" if summary["images_per_s"] else ""
        typer.echo(
            f"wrote {result.out}: {result.rows} x {result.dim} ({result.encoded} images embedded in "
            f"{result.seconds:.1f}s{rate}); metadata {sidecar(result.out)}"
        )
    else:
        err = Console(stderr=True, highlight=False)
        err.print(
            f"[bold red]{len(result.failures)} of {result.rows} images could not be embedded[/]; "
            f"{result.out} was NOT written (a corpus with holes would change the search space).",
        )
        for f in result.failures[:20]:
            err.print(f"  row {f['row']}: {f['path']}: {f['reason']}", markup=False)
        if len(result.failures) > 20:
            err.print(f"  ... {len(result.failures) - 20} more")
        err.print(
            f"All listed in {failures_file(result.out)}. Fix or restore those files and run the same command "
            "again: finished shards are kept and only the failed images are read again."
        )
    raise typer.Exit(0 if result.ok else 1)
