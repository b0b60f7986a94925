"""Per-user bearer tokens kept hashed in a file (``convir serve --tokens FILE``).

One ``USER sha256:HEX`` per line (``#`` comments and blank lines allowed); HEX is the SHA-256
of the token. The server keeps only the hashes, so a leaked file gives no token away. Tokens
are random (``convir tokens add`` makes 256-bit ones), which is why one SHA-256 suffices
and no slow password hash is needed. A user may have several tokens (one per device); a
token maps to exactly one user. The server re-reads the file when it changes, so adding or
revoking a user needs no restart; a file that stops parsing, lists no user or is deleted keeps
the last good table (and says so in the log): to shut every user out, stop the server.
Light on purpose: ``convir tokens`` imports this without FastAPI.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import time
from pathlib import Path

from convir.errors import ConvirError

log = logging.getLogger("convir.server")
USER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
HASH_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
HEADER = (
    "# convir tokens: one 'USER sha256:HEX' per line, HEX = SHA-256 of the token.\n"
    "# Add a user: convir tokens add FILE USER   (prints the new token once)\n"
)


def hash_token(token: str | bytes) -> str:
    """``sha256:HEX`` of a token, as the tokens file stores it."""
    raw = token.encode() if isinstance(token, str) else token
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


def parse_tokens(text: str, where: str) -> dict[str, str]:
    """{``sha256:HEX``: user} from a tokens file's text; ConvirError naming the bad line."""
    table: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2 or not USER_RE.match(parts[0]) or not HASH_RE.match(parts[1]):
            raise ConvirError(
                f"{where} line {n}: expected 'USER sha256:HEX' (USER: letters, digits, . _ @ -; "
                "HEX: 64 lowercase hex digits of the token's SHA-256)"
            )
        user, digest = parts
        if table.get(digest, user) != user:
            raise ConvirError(f"{where} line {n}: this token hash is already given to {table[digest]!r}")
        table[digest] = user
    return table


def read_tokens(path: Path) -> dict[str, str]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConvirError(
            f"tokens file {path} does not exist (create it with: convir tokens add FILE USER)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConvirError(f"cannot read tokens file {path}: {exc}") from exc
    return parse_tokens(text, str(path))


class TokenTable:
    """The users of a tokens file; :meth:`user` maps a presented token to its user or None."""

    def __init__(self, path: str | Path, recheck_s: float = 1.0) -> None:
        self.path = Path(path)
        self.recheck_s = recheck_s
        self._table = read_tokens(self.path)
        if not self._table:
            raise ConvirError(f"tokens file {self.path} lists no user: add one with convir tokens add")
        self._stamp = self._file_stamp()
        self._checked = time.monotonic()

    def _file_stamp(self) -> tuple[int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def _maybe_reload(self) -> None:
        now = time.monotonic()
        if now - self._checked < self.recheck_s:
            return
        self._checked = now
        stamp = self._file_stamp()
        if stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            table = read_tokens(self.path)
        except ConvirError as exc:  # unparsable, unreadable or deleted
            log.warning("keeping the previous token list: %s", exc)
            return
        if not table:  # emptied (mid-write, or by mistake): locking everyone out needs a stop
            log.warning("keeping the previous token list: %s lists no user", self.path)
            return
        self._table = table
        log.info("re-read %s: %d users", self.path, len(set(self._table.values())))

    def user(self, token: bytes) -> str | None:
        """The user a token belongs to, or None. Only the token's hash is compared."""
        self._maybe_reload()
        if not token:
            return None
        return self._table.get(hash_token(token))

    @property
    def users(self) -> set[str]:
        return set(self._table.values())
