"""``convir tokens``: manage the hashed per-user token file of ``convir serve --tokens FILE``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from convir.errors import ConvirError
from convir.server.tokens import HEADER, USER_RE, hash_token, new_token, read_tokens

tokens_app = typer.Typer(
    help="Per-user tokens for `convir serve --tokens FILE` (the file keeps only SHA-256 hashes).",
    no_args_is_help=True,
)
FileArg = Annotated[Path, typer.Argument(help="The tokens file (created by `add` if missing).")]


def _lines(path: Path) -> list[str]:
    if not path.exists():
        return []
    read_tokens(path)  # refuse to rewrite a file that does not parse
    return path.read_text(encoding="utf-8").splitlines()


def _write(path: Path, lines: list[str]) -> None:
    from convir.atomic import write_text

    body = "\n".join(lines) + "\n"
    write_text(path, body if body.startswith("#") else HEADER + body)  # mode 0600 (mkstemp)


@tokens_app.command("add")
def add(
    file: FileArg,
    user: Annotated[str, typer.Argument(help="User name: letters, digits, . _ @ - (up to 64).")],
) -> None:
    """Make a new random token for USER, store its hash in FILE and print the token (once).

    A user may have several tokens (one per device); `convir serve` picks up the change
    within a second, no restart needed. Use it as `T=$(convir tokens add FILE alice)`."""
    if not USER_RE.match(user):
        raise ConvirError(f"bad user name {user!r}: use letters, digits, . _ @ - (up to 64, no spaces)")
    if file.is_dir():
        raise ConvirError(f"{file} is a folder; give the path of the tokens file")
    if not file.parent.is_dir():  # a typo in the path should not create folders
        raise ConvirError(f"folder {file.parent} does not exist; create it first or fix the path")
    lines = _lines(file)
    token = new_token()
    _write(file, [*lines, f"{user} {hash_token(token)}"])
    print(token)
    print(f"added a token for {user} to {file}; it is shown only now", file=sys.stderr)


@tokens_app.command("remove")
def remove(file: FileArg, user: Annotated[str, typer.Argument(help="User whose tokens to revoke.")]) -> None:
    """Revoke every token of USER (a running server stops accepting them within a second)."""
    if not file.exists():
        raise ConvirError(f"tokens file {file} does not exist")
    lines = _lines(file)
    kept = [ln for ln in lines if ln.split()[:1] != [user]]
    if len(kept) == len(lines):
        raise ConvirError(f"{file} has no token for {user!r}")
    _write(file, kept)
    print(f"removed {len(lines) - len(kept)} token(s) of {user} from {file}", file=sys.stderr)


@tokens_app.command("list")
def list_users(file: FileArg) -> None:
    """Users in FILE and how many tokens each has (hashes only; tokens cannot be recovered)."""
    if not file.exists():
        raise ConvirError(f"tokens file {file} does not exist")
    counts: dict[str, int] = {}
    for user in read_tokens(file).values():
        counts[user] = counts.get(user, 0) + 1
    for user, n in sorted(counts.items()):
        print(f"{user}\t{n}")
