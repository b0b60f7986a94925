"""``convir`` command line. Heavy libraries are imported inside commands so --help is instant."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from convir import __version__
from convir.dialog.defaults import PROMPT_TURNS
from convir.errors import ConvirError
from convir.eval.options import (
    GeneratorOpt,
    GeneratorOptionOpt,
    ImagesPerTurnOpt,
    ImagineOpt,
    LLMOpt,
    PromptTurnsOpt,
    RerankerOpt,
    StrategyOpt,
)
from convir.index import DEFAULT_ALPHA, DEFAULT_FUSION
from convir.specs import REGISTRY

app = typer.Typer(
    name="convir",
    help="Conversational image retrieval: index a gallery, search it, talk to it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _register_subcommands() -> None:
    from convir.datagen.cli import datagen_app, register_eval
    from convir.eval.cli import eval_app, report_app
    from convir.index.cli import check_cmd, duplicates_cmd

    register_eval(eval_app)
    app.add_typer(eval_app, name="eval")
    app.add_typer(report_app, name="report")
    from convir.server.cli import tokens_app

    app.add_typer(tokens_app, name="tokens")
    app.command("check")(check_cmd)
    app.command("duplicates")(duplicates_cmd)
    from convir.eval.embed import embed_app

    app.add_typer(embed_app, name="embed")
    from convir.train.cli import train_app

    app.add_typer(train_app, name="train")
    app.add_typer(datagen_app, name="datagen")


def _console(stderr: bool = False) -> Any:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


def _quiet_libraries() -> None:
    """Model-loading chatter (weight bars, hub notices) is noise next to our own progress."""
    import logging
    import os

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    for name in ("transformers", "sentence_transformers", "huggingface_hub", "bm25s", "open_clip"):
        logging.getLogger(name).setLevel(logging.ERROR)
    logging.basicConfig(format="%(levelname)s: %(message)s", level=logging.WARNING)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"convir {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    _quiet_libraries()


@app.command("index")
def index_cmd(
    gallery: Annotated[
        Path,
        typer.Argument(
            help="Folder of images (recursive; name.txt sidecar captions), "
            "a .jsonl manifest, or a dataset folder with --format."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Index directory to create or update.")],
    encoder: Annotated[
        str | None,
        typer.Option(
            help=f"Encoder spec ({REGISTRY.choices('encoder')}): caption:minilm (offline default), "
            "open_clip:ViT-B-32/openai, hf:MODEL. Defaults to the index's own encoder, or "
            "caption:minilm for a new index."
        ),
    ] = None,
    ann: Annotated[
        str | None, typer.Option(help="Vector index: flat (exact, default), hnsw, lsh, ivfpq.")
    ] = None,
    fmt: Annotated[
        str, typer.Option("--format", help="auto | folder | manifest | flickr8k | coco-captions")
    ] = "auto",
    batch_size: Annotated[
        int, typer.Option(min=1, help="Items encoded per batch (and per saved transaction).")
    ] = 256,
    long_text: Annotated[
        str,
        typer.Option(
            help="Captions over the encoder's context: chunk | truncate. Captions are capped at "
            "4,000 characters either way (with a warning)."
        ),
    ] = "chunk",
    replace: Annotated[bool, typer.Option(help="Let OUT switch to mirroring a different gallery.")] = False,
    rebuild: Annotated[
        bool,
        typer.Option(
            help="Rebuild the search files even if nothing changed; if convir.sqlite is damaged, set "
            "it aside and index the gallery from scratch."
        ),
    ] = False,
    max_pixels: Annotated[
        int | None,
        typer.Option(
            min=1,
            show_default=False,
            help="Skip (and list) images larger than this many pixels (width x height) before decoding "
            "them [default: the index's own setting, else 100,000,000].",
        ),
    ] = None,
    wait: Annotated[
        bool,
        typer.Option(
            help="When another `convir index` run is writing OUT: wait for it (default) or, with "
            "--no-wait, stop at once with an error."
        ),
    ] = True,
    json_out: Annotated[bool, typer.Option("--json", help="Print the run report as JSON.")] = False,
    store: Annotated[
        str | None,
        typer.Option(
            help="Vector store: faiss (files in OUT, the default) | milvus:http://HOST:19530 (a Milvus "
            "server; token from MILVUS_TOKEN) | milvus:PATH.db (Milvus Lite); milvus:URI#NAME names the "
            "collection. Recorded in the index [default: the index's own, else faiss]."
        ),
    ] = None,
    ray: Annotated[
        str | None,
        typer.Option(
            help="Encode with Ray workers: --ray alone starts a local Ray; --ray HOST:PORT | "
            "ray://HOST:10001 | auto joins a cluster (put a bare --ray last, or write --ray local)."
        ),
    ] = None,
    ray_workers: Annotated[
        int | None, typer.Option(min=1, show_default=False, help="Ray workers (encoder actors) [default: 2].")
    ] = None,
    max_file_size: Annotated[
        str,
        typer.Option(
            help="Skip (and list) image files larger than this (200MB, 1.5G, or bytes), judged from "
            "their size before any byte is read. Caption files over 1 MB and manifest lines over 64 MB "
            "are skipped too.",
        ),
    ] = "200MB",
    image_batch: Annotated[int, typer.Option(min=1, help="Images per model call (image encoders).")] = 32,
    threads: Annotated[
        int | None,
        typer.Option(
            min=1,
            show_default=False,
            help="Torch (or ONNX Runtime) threads for the model \\[default: one per core].",
        ),
    ] = None,
    decode_workers: Annotated[
        int | None,
        typer.Option(
            min=0,
            show_default=False,
            help="Threads decoding and resizing images while the model runs; 0 = in the model's "
            "thread \\[default: 2].",
        ),
    ] = None,
    captioner: Annotated[
        str | None,
        typer.Option(
            help="Generate a caption per photo, stored apart from user captions and used by BM25, "
            "search results and the conversation: hf:MODEL_ID_OR_PATH (transformers BLIP, BLIP-2, "
            "GIT, Florence-2) | openai:BASE_URL#MODEL (OpenAI-compatible vision server, e.g. llama.cpp "
            "with mmproj). Recorded in the index \\[default: the index's own, else none].",
        ),
    ] = None,
    runtime: Annotated[
        str,
        typer.Option(
            help="torch | onnx | onnx-int8: run an open_clip image tower on ONNX Runtime (exported "
            "once to the cache; faster start-up, less memory; needs convir\\[onnx]); onnx-int8 "
            "quantises its weights (faster still, image vectors slightly different).",
        ),
    ] = "torch",
) -> None:
    """Build or update a searchable index of a gallery.

    Re-running adds only new or changed items (content hash) and drops removed ones; a killed
    run (even kill -9) is finished by the next one. One run at a time per OUT (a second waits).
    Unreadable or oversized images, bad manifest lines and items without usable text are
    skipped and listed; the exit code is 1 when any item failed or the disk is full, 2 for a
    usage error, 130 after Ctrl-C (what was stored is kept: re-run to finish).
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from convir.encoders.pipeline import EncodeSettings
    from convir.gallery.ingest import ingest

    console = _console(stderr=True)
    progress = Progress(
        TextColumn("[bold]encoding"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        console=console,
        disable=json_out,
    )
    state: dict[str, Any] = {}

    def on_total(n: int) -> None:
        state["task"] = progress.add_task("encode", total=n, rate="")
        progress.start()

    def on_progress(n: int) -> None:
        progress.advance(state["task"], n)
        task = progress.tasks[0]
        if task.speed:
            progress.update(state["task"], rate=f"{task.speed:,.0f} items/s")

    try:
        report = ingest(
            gallery,
            out,
            encoder,
            ann,
            fmt,
            batch_size,
            replace,
            long_text,
            on_total,
            on_progress,
            rebuild=rebuild,
            max_pixels=max_pixels,
            wait=wait,
            on_wait=lambda msg: console.print(msg, markup=False),
            store=store,
            ray=ray,
            ray_workers=ray_workers,
            settings=EncodeSettings(image_batch, threads, decode_workers, runtime),
            max_file_size=max_file_size,
            captioner=captioner,
        )
    except KeyboardInterrupt as exc:
        progress.stop()
        kept = getattr(exc, "kept", 0)
        console.print(
            f"interrupted: {kept} items encoded and kept; re-run `{_command_line()}` to finish",
            markup=False,
            soft_wrap=True,
        )
        raise typer.Exit(130) from None
    finally:
        progress.stop()
    if json_out:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        _print_report(report)
    raise typer.Exit(0 if report.ok else 1)


def _command_line() -> str:
    """The command being run, as the user can type it again (for "re-run ..." messages)."""
    import shlex

    return shlex.join(["convir", *sys.argv[1:]])


def _print_report(report: Any) -> None:
    console = _console()
    rate = (report.added + report.updated) / report.encode_seconds if report.encode_seconds else 0.0
    console.print(
        f"[bold]{report.index_dir}[/]: {report.total} items ({report.encoder}, {report.ann}"
        + ("" if report.store == "faiss" else f", {report.store}")
        + (f", {report.workers} Ray workers" if report.workers else "")
        + ") - "
        f"added {report.added}, updated {report.updated}, unchanged {report.unchanged}, "
        f"removed {report.removed}, failed {len(report.failed)}"
        + (f", ignored {len(report.ignored)} non-image files" if report.ignored else "")
        + f" in {report.seconds:.1f}s"
        + (f" ({rate:,.0f} items/s encoding)" if rate else "")
    )
    if report.captioner:
        console.print(
            f"generated captions: {report.captioned} new ({report.captioner}"
            + (
                f", {report.captioned / report.caption_seconds:,.1f} photos/s"
                if report.caption_seconds
                else ""
            )
            + ")",
            markup=False,
        )
    if report.repointed:
        console.print(
            f"re-pointed {report.repointed} unchanged items to their new image paths (not re-encoded)",
            markup=False,
        )
    if report.rebuilt and not (report.added or report.updated or report.removed):
        console.print(f"rebuilt the search files: {report.rebuild_reason}", markup=False)
    if not report.bm25:
        console.print(
            "note: no caption text in this gallery, so the index has no BM25: search with --mode dense "
            "(hybrid ranks as dense; bm25 is refused)"
        )
    sections = (("failed", report.failed), ("warnings", report.warnings), ("ignored", report.ignored))
    for title, rows in sections:
        if rows:
            console.print(f"[bold red]{title}:[/]" if title == "failed" else f"[bold]{title}:[/]")
            for item_id, reason in rows[:30]:
                console.print(f"  {item_id}: {reason}", markup=False)
            if len(rows) > 30:
                console.print(f"  ... {len(rows) - 30} more in {report.index_dir}/last_index_report.json")


def _first_caption(hit: Any) -> str:
    """The caption shown for a hit: the user's first, else the generated one, marked as such."""
    if hit.captions:
        return hit.captions[0]
    return f"(generated) {hit.generated['caption']}" if hit.generated else ""


@app.command("search")
def search_cmd(
    index_dir: Annotated[Path, typer.Argument(help="Index directory built by `convir index`.")],
    query: Annotated[str | None, typer.Argument(help="Text describing the image.")] = None,
    k: Annotated[int, typer.Option("-k", "--top", min=1, help="How many results.")] = 10,
    mode: Annotated[
        str, typer.Option(help="dense (encoder) | bm25 (caption words) | hybrid (both, fused)")
    ] = "dense",
    fusion: Annotated[
        str, typer.Option(help="Hybrid fusion: rrf (reciprocal rank) | weighted (min-max scores).")
    ] = DEFAULT_FUSION,
    alpha: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Dense weight in hybrid fusion (0.5 = equal).")
    ] = DEFAULT_ALPHA,
    image: Annotated[
        Path | None,
        typer.Option(
            help="Search with an image (image-text encoders); with a QUERY: fused image + text vector."
        ),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    where: Annotated[
        str | None,
        typer.Option(
            help='Metadata filter, e.g. "meta.year >= 2020 and meta.place in ["beach", "park"]" '
            "(== != < <= > >=, in, and, or, not; docs/scale.md)."
        ),
    ] = None,
    encoder: Annotated[
        str | None,
        typer.Option(
            help="Query encoder (default: the index's own). An index built with caption:M also answers "
            "caption:M?backend=onnx queries (same model in ONNX Runtime fp32; docs/encoders.md)."
        ),
    ] = None,
) -> None:
    """Search an index with text (or an image) and print the ranked results."""
    from convir.search import open_index
    from convir.specs import REGISTRY

    if query is None and image is None:
        raise ConvirError("give a text QUERY or --image PATH")
    if where is not None:
        from convir.store.filters import parse_where

        parse_where(where)  # a typo fails before the index or the encoder loads
    if encoder is not None:
        REGISTRY.parse("encoder", encoder)  # a bad spec or option fails before the index opens
    idx = open_index(index_dir, encoder=encoder)
    hits = idx.search(query, k=k, mode=mode, image=image, fusion=fusion, alpha=alpha, where=where)
    if json_out:
        typer.echo(
            json.dumps({"query": query, "mode": mode, "results": [h.to_dict() for h in hits]}, indent=2)
        )
        return
    print_hits(hits, title=f"{query!r}" if query else str(image))


def print_hits(hits: list[Any], title: str = "") -> None:
    from rich.table import Table

    table = Table(title=title, title_justify="left", show_lines=False)
    table.add_column("#", justify="right")
    table.add_column("score", justify="right")
    table.add_column("id")
    table.add_column("caption")
    from convir.gallery.photometa import photo_line

    photos = [photo_line(getattr(h, "meta", None) or {}) for h in hits]
    if any(photos):  # a photo's own metadata: date, place, camera
        table.add_column("photo")
    for h, photo in zip(hits, photos, strict=True):
        row = [str(h.rank), f"{h.score:.3f}", h.id, _first_caption(h)]
        table.add_row(*row, *([photo] if any(photos) else []))
    _console().print(table)


@app.command("demo")
def demo_cmd(
    gallery: Annotated[
        Path | None, typer.Argument(help="Your own folder of images (default: the bundled sample).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Where to keep the demo index (default: a cache folder).")
    ] = None,
    query: Annotated[list[str] | None, typer.Option("--query", "-q", help="Extra queries to run.")] = None,
    k: Annotated[int, typer.Option("-k", min=1, help="Results per query.")] = 5,
) -> None:
    """Offline demo: index the bundled sample gallery (or GALLERY) and run example searches."""
    from convir.demo import EXAMPLE_DIALOGUE, EXAMPLE_QUERIES, gallery_path
    from convir.gallery.ingest import ingest
    from convir.search import open_index

    console = _console()
    src = gallery or gallery_path()
    target = out or _cache_dir() / (
        "demo-index" if gallery is None else f"demo-{abs(hash(str(src.resolve())))}"
    )
    console.print(f"[bold]1. Indexing[/] {src} -> {target} (encoder caption:minilm, offline)")
    report = ingest(src, target, replace=True)
    _print_report(report)
    idx = open_index(target)
    queries = list(query or []) or (EXAMPLE_QUERIES if gallery is None else [])
    if not queries:
        console.print("No queries given: pass --query 'a description' to search your gallery.")
    for n, q in enumerate(queries, 2):
        console.print(f"\n[bold]{n}. Search[/] (dense, caption:minilm)")
        print_hits(idx.search(q, k=k), title=repr(q))
    if gallery is None:
        console.print(
            "\n[bold]Refining a vague description turn by turn[/] (query = ', '.join(dialogue so far))"
        )
        for t in range(len(EXAMPLE_DIALOGUE)):
            q = ", ".join(EXAMPLE_DIALOGUE[: t + 1])
            print_hits(idx.search(q, k=3), title=f"turn {t}: {q!r}")
    console.print(f'\nTry it yourself: convir search {target} "your description" --mode hybrid')


@app.command("chat")
def chat_cmd(
    index_dir: Annotated[Path, typer.Argument(help="Index directory built by `convir index`.")],
    strategy: StrategyOpt = "concat",
    questioner: Annotated[
        str | None,
        typer.Option(
            help=f"{REGISTRY.choices('questioner')} (infogain, infogain-open and choice need no LLM; "
            "default: plain with --llm, else infogain-open)"
        ),
    ] = None,
    llm: LLMOpt = None,
    k: Annotated[int, typer.Option("-k", min=1, help="Results shown per turn.")] = 5,
    save: Annotated[Path | None, typer.Option(help="Session file, saved after every turn.")] = None,
    resume: Annotated[Path | None, typer.Option(help="Continue a saved session.")] = None,
    reranker: RerankerOpt = "llm",
    previews: Annotated[
        str,
        typer.Option(
            help="Thumbnails of the top results: auto (kitty/iTerm2 images or colour half blocks "
            "when stdout is a terminal) | on | off"
        ),
    ] = "auto",
    imagine: ImagineOpt = None,
    generator: GeneratorOpt = "text:",
    generator_option: GeneratorOptionOpt = None,
    images_per_turn: ImagesPerTurnOpt = None,
    overwrite: Annotated[
        bool, typer.Option(help="Let --save replace an existing session file (default: refuse).")
    ] = False,
    prompt_turns: PromptTurnsOpt = PROMPT_TURNS,
    like: Annotated[
        str | None,
        typer.Option(help="Start from this item (its id): the query fuses its vector with your words."),
    ] = None,
    image: Annotated[
        Path | None,
        typer.Option(help="Start from this photo (image-text encoders): fused with your words."),
    ] = None,
    like_weight: Annotated[
        float | None,
        typer.Option(min=0.0, max=1.0, help="Weight of the --like / --image photo in the fused query."),
    ] = None,
) -> None:
    """Find an image by talking: describe it, answer questions, mark the one you wanted.
    --like ITEM_ID or --image PHOTO start from a photo ("like this, but at night")."""
    from convir.chat import run_chat
    from convir.dialog.session import SessionSpec
    from convir.imagine.options import imagine_settings

    settings = imagine_settings(imagine, generator, generator_option, images_per_turn)
    spec = SessionSpec.with_imagination(
        settings,
        strategy=strategy,
        questioner=questioner,
        llm=llm,
        reranker=None if reranker == "llm" else reranker,
        k=k,
        prompt_turns=prompt_turns,
        **({} if like_weight is None else {"reference_weight": like_weight}),
    )
    console = _console()
    try:
        run_chat(
            index_dir,
            spec,
            save or resume,
            resume,
            console,
            console.input,
            previews=previews,
            overwrite=overwrite,
            like=like,
            image=image,
        )
    except KeyboardInterrupt:
        raise typer.Exit(130) from None  # run_chat said what was kept and how to resume


@app.command("serve")
def serve_cmd(
    index_dir: Annotated[Path, typer.Argument(help="Index directory built by `convir index`.")],
    host: Annotated[
        str, typer.Option(help="Address to bind; the default (loopback) is reachable from this machine only.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port.")] = 8000,
    token: Annotated[
        str | None,
        typer.Option(
            envvar="CONVIR_TOKEN",
            show_default=False,
            help="Bearer token every API call must send (Authorization: Bearer TOKEN). "
            "Prefer the environment variable: a command line is visible to other users.",
        ),
    ] = None,
    tokens: Annotated[
        Path | None,
        typer.Option(
            help="File of per-user hashed tokens instead of one shared --token (add users with "
            "`convir tokens add FILE USER`); each user sees only their own sessions.",
        ),
    ] = None,
    llm: Annotated[
        str | None, typer.Option(help="LLM spec for questions and LLM strategies, e.g. llamacpp:smollm2")
    ] = None,
    strategy: Annotated[
        str, typer.Option(help=f"Default strategy: {REGISTRY.choices('strategy')}")
    ] = "concat",
    questioner: Annotated[
        str | None,
        typer.Option(
            help=f"Default questioner: {REGISTRY.choices('questioner')} (default: plain with --llm, "
            "else infogain-open)"
        ),
    ] = None,
    k: Annotated[int, typer.Option("-k", min=1, max=50, help="Results shown per turn (default).")] = 8,
    imagine: Annotated[
        str | None, typer.Option(help="Default imagination method (dar | refiner); off when omitted.")
    ] = None,
    generator: Annotated[
        str | None,
        typer.Option(
            help="Image generator sessions may use, e.g. diffusers:stabilityai/sd-turbo (text: always)."
        ),
    ] = None,
    allow_host: Annotated[
        list[str] | None,
        typer.Option(help="Extra Host header to accept (e.g. a reverse proxy's name); repeatable."),
    ] = None,
    prompt_turns: PromptTurnsOpt = PROMPT_TURNS,
    header_timeout: Annotated[
        float,
        typer.Option(
            min=0.1, help="Seconds a client may take to send a request's headers (then 408, closed)."
        ),
    ] = 10.0,
    body_timeout: Annotated[
        float, typer.Option(min=0.1, help="Seconds a client may take to send a request's body (then 408).")
    ] = 30.0,
    max_connections: Annotated[
        int, typer.Option(min=1, help="Open connections served at once; more are answered 503 and closed.")
    ] = 512,
    llm_budget: Annotated[
        float,
        typer.Option(
            min=0,
            help="Seconds of LLM time (waiting for the shared model included) one turn may use; past "
            "it the turn finishes without the LLM and its response says so. 0 = no limit.",
        ),
    ] = 60.0,
    max_sessions: Annotated[
        int, typer.Option(min=0, help="Sessions kept in all (429 beyond; 0: no limit).")
    ] = 10_000,
    max_sessions_per_owner: Annotated[
        int, typer.Option(min=0, help="Sessions one owner secret (a browser) may hold; 0: no limit.")
    ] = 500,
    max_sessions_per_user: Annotated[
        int, typer.Option(min=0, help="Sessions one user of --tokens may hold; 0: no limit.")
    ] = 2_000,
    session_idle_days: Annotated[
        float, typer.Option(min=0, help="Delete a session not used for this many days; 0: keep for ever.")
    ] = 30,
    reset_sessions: Annotated[
        bool,
        typer.Option(
            "--reset-sessions",
            help="Set INDEX_DIR/sessions.sqlite aside (renamed, not deleted; e.g. when damaged) and "
            "start with no sessions.",
        ),
    ] = False,
) -> None:
    """Serve the web page and the HTTP API for conversational search over INDEX_DIR.

    Sessions are kept in INDEX_DIR/sessions.sqlite, so a restart continues every open one.
    API and curl examples: docs/server.md.
    """
    try:
        from convir.server import serve
        from convir.server.security import is_loopback
    except ImportError as exc:
        raise ConvirError(
            f"convir serve needs the server extra: pip install 'convir[server]' ({exc})"
        ) from exc

    if token and tokens:
        raise ConvirError("give --token (or CONVIR_TOKEN) or --tokens, not both")
    if not is_loopback(host) and not token and not tokens:
        _console(stderr=True).print(
            f"[bold yellow]warning:[/] serving on {host} without a token: anyone who can reach this "
            "port can use it (set CONVIR_TOKEN)"
        )
    if reset_sessions:
        _reset_sessions(index_dir, host, port)
    serve(
        index_dir,
        host=host,
        port=port,
        token=token,
        tokens=tokens,
        allowed_hosts=allow_host,
        llm=llm,
        strategy=strategy,
        questioner=questioner,
        k=k,
        imagine=imagine,
        generator=generator,
        prompt_turns=prompt_turns,
        header_timeout=header_timeout,
        body_timeout=body_timeout,
        max_connections=max_connections,
        llm_budget=llm_budget or None,
        max_sessions=max_sessions,
        max_sessions_per_owner=max_sessions_per_owner,
        max_sessions_per_user=max_sessions_per_user,
        session_idle_days=session_idle_days,
    )


def _reset_sessions(index_dir: Path, host: str, port: int) -> None:
    """``convir serve --reset-sessions``: the port is checked first (a server still running on
    it may be using the database), then the database is renamed aside."""
    from convir.server import check_port
    from convir.server.sessions import reset_sessions

    if not index_dir.is_dir():
        raise ConvirError(f"no index at {index_dir}")
    check_port(host, port)
    aside = reset_sessions(index_dir)
    msg = f"moved the sessions database aside to {aside}" if aside else "there was no sessions database"
    _console(stderr=True).print(msg, markup=False, soft_wrap=True)


def _cache_dir() -> Path:
    from convir.paths import cache_dir

    return cache_dir()


_register_subcommands()


def main() -> None:
    """Console entry point: user mistakes print one clear line, not a traceback.

    Usage errors (bad flags) are handled by typer itself (exit 2); our own ConvirError is
    caught here (its exit_code: 2, or 1 for a full disk); Ctrl-C keeps what was saved (exit
    130; typer turns it into a silent exit, so `index` and `chat` say what was kept themselves).
    """
    try:
        from convir.gallery.distributed import bare_ray_flag

        app(args=bare_ray_flag(sys.argv[1:]))
    except ConvirError as exc:
        console = _console(stderr=True)
        console.print("[bold red]error:[/] ", end="")
        console.print(str(exc), markup=False, soft_wrap=True)  # one line, however long
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        _console(stderr=True).print("interrupted: work saved so far is kept; re-run the command to resume")
        sys.exit(130)


if __name__ == "__main__":
    main()
