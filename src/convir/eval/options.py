"""Command-line options shared by `convir eval ...`, `convir chat` and `convir serve`.

One definition per flag, with help texts drawn from the component registry
(:data:`convir.specs.REGISTRY`), so every command names components the same way and lists
the same choices. Kept free of numpy/torch imports: the CLI imports this at startup.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from convir.specs import REGISTRY

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

PromptTurnsOpt = Annotated[
    int,
    typer.Option(
        min=0,
        help="Exchanges an LLM prompt shows besides the description (the most recent ones; "
        "0 = all, as the papers): keeps every LLM call's time flat as the dialogue grows. "
        "rewrite adds any older answer its output lost back to the query.",
    ),
]

StrategyOpt = Annotated[
    str,
    typer.Option(help=f"Query builder: {REGISTRY.choices('strategy')} (all but concat need --llm)."),
]
LLMOpt = Annotated[
    str | None,
    typer.Option(
        help="LLM spec: llamacpp:smollm2, llamacpp:gemma3-270m, openai:BASE_URL#MODEL, hf:MODEL_ID_OR_PATH."
    ),
]
RerankerOpt = Annotated[
    str,
    typer.Option(
        help="--strategy rerank, second stage: llm (LLM rates each candidate 0-9, fused with the "
        "first-stage order) | llm-list (LLM orders the candidates) | cross:PATH_OR_ID (cross-encoder, "
        "needs no --llm)."
    ),
]


# imagination options (see docs/imagination.md)
ImagineOpt = Annotated[
    str | None,
    typer.Option(
        help=f"Imagination: {REGISTRY.choices('imagination')} (generate images of the target and "
        "search with them)."
    ),
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
