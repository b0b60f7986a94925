"""User-facing errors.

Anything a user can cause (bad path, bad spec, wrong encoder for an index, malformed file)
raises :class:`ConvirError`; the CLI prints its message without a traceback and exits with
its ``exit_code`` (2, a usage error, unless the class says otherwise). Real bugs stay
ordinary exceptions so they are never hidden.
"""

from __future__ import annotations

import errno
import re
from pathlib import Path

# numpy's fwrite path reports a short write without errno: only a full disk (or quota) does that
_SHORT_WRITE = re.compile(r"^\d+ requested and \d+ written$")
_NEARLY_FULL = 1024**2  # bytes free below which an SQLite I/O error is taken for a full disk


class ConvirError(Exception):
    """An error caused by input or environment that the user can fix; the message says how."""

    exit_code = 2


class SpecError(ConvirError):
    """A component spec string (``kind:rest``) that cannot be resolved."""


class IndexMismatchError(ConvirError):
    """An index opened with an encoder/dimension other than the one it was built with."""


class DiskFullError(ConvirError):
    """No space left where convir writes. Not a usage error (exit 1) and not damage: SQLite
    rolled its transaction back and a half-written build folder is removed, so a re-run
    after freeing space finishes the work."""

    exit_code = 1

    def __init__(self, path: Path | str) -> None:
        super().__init__(f"no space left on the device holding {path}; free space and re-run")
        self.path = Path(path)


def is_disk_full(exc: BaseException, path: Path | str | None = None) -> bool:
    """Whether ``exc`` means the disk (or the user's quota) is full: ENOSPC/EDQUOT, SQLite's
    SQLITE_FULL ("database or disk is full"), or numpy's errno-less short write. SQLite
    reports some writes that fail for want of space (growing its -shm file, which even a
    reader may need) as a plain I/O error: that counts when the device holding ``path`` has
    no space left."""
    import shutil
    import sqlite3

    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        if code == sqlite3.SQLITE_FULL or "disk is full" in str(exc):
            return True
        if path is None or not (code is not None and code & 0xFF == sqlite3.SQLITE_IOERR):
            return False
        try:
            return shutil.disk_usage(path).free < _NEARLY_FULL
        except OSError:
            return False
    if isinstance(exc, OSError):
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        return exc.errno is None and bool(_SHORT_WRITE.match(str(exc)))
    return False
