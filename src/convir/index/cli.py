"""``convir check``: verify an index directory and say how to repair it (registered in convir.cli)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer


def check_cmd(
    index_dir: Annotated[Path, typer.Argument(help="Index directory built by `convir index`.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print the findings as JSON.")] = False,
) -> None:
    """Verify an index: SQLite integrity, stored items, build files, ids vs items.

    Exit code 0 when the index is sound, 1 when it has problems, missing image files included
    (the output names the command that repairs them: for a moved gallery, the one that
    re-points the index), 2 when INDEX_DIR is not an index.
    """
    from rich.console import Console

    from convir.index.check import check_index

    report = check_index(index_dir)
    if json_out:
        typer.echo(json.dumps(report.to_dict(), indent=2))
        raise typer.Exit(0 if report.ok else 1)
    console = Console(highlight=False)
    for line in report.ok_lines:
        console.print("[green]ok:[/] ", end="")
        console.print(line, markup=False, soft_wrap=True)
    for line in report.notes:
        console.print("[bold]note:[/] ", end="")
        console.print(line, markup=False, soft_wrap=True)
    for line in report.problems:
        console.print("[bold red]problem:[/] ", end="")
        console.print(line, markup=False, soft_wrap=True)
    if report.repair:
        console.print("[bold]repair:[/] ", end="")
        console.print(report.repair, markup=False, soft_wrap=True)
    if report.ok:
        console.print(f"{report.index_dir}: no problems found")
    raise typer.Exit(0 if report.ok else 1)


def duplicates_cmd(
    index_dir: Annotated[Path, typer.Argument(help="Index directory built by `convir index`.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print the groups as JSON.")] = False,
    min_similarity: Annotated[
        float, typer.Option("--min-similarity", help="Cosine similarity of the vectors, at least.")
    ] = 0.95,
    max_hash_distance: Annotated[
        int, typer.Option("--max-hash-distance", help="Perceptual-hash bits that may differ (of 64).")
    ] = 8,
) -> None:
    """Group near-identical photos: close vectors and alike perceptual hashes (see docs/index.md).

    Exit code 0 (groups found or not), 2 when INDEX_DIR is not an index.
    """
    from rich.console import Console
    from rich.table import Table

    from convir.index.duplicates import find_duplicates

    groups = find_duplicates(index_dir, min_similarity, max_hash_distance)
    if json_out:
        typer.echo(json.dumps([{"keep": g.keep, "items": g.items} for g in groups], indent=2))
        return
    console = Console(highlight=False)
    if not groups:
        console.print(f"{index_dir}: no duplicates found")
        return
    table = Table("group", "id", "keep", "similarity", "hash distance", "path")
    for n, g in enumerate(groups, 1):
        for it in g.items:
            dist = "-" if it["hash_distance"] is None else str(it["hash_distance"])
            table.add_row(
                str(n),
                it["id"],
                "yes" if it["id"] == g.keep else "",
                f"{it['similarity']:.3f}",
                dist,
                it["path"] or "",
            )
    console.print(table)
    console.print(f"{len(groups)} group(s), {sum(len(g.items) - 1 for g in groups)} duplicate(s)")
