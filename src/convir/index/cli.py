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
