"""One writer per index directory: an exclusive ``flock`` on ``INDEX_DIR/convir.lock``.

A second ``convir index`` on the same ``--out`` waits for the first to finish (saying so), or
with ``--no-wait`` refuses at once; after waiting it sees the first run's items, so the same
gallery is not encoded twice and a different gallery is refused as "another gallery". The
kernel drops the lock when its holder exits, ``kill -9`` included, so a stale lock file never
blocks anyone. Readers (search, chat, serve) take no lock: they serve the published build.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from convir.errors import ConvirError, DiskFullError, is_disk_full

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no locking
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = "convir.lock"


class IndexBusyError(ConvirError):
    """Another writer holds the index and the caller asked not to wait."""


def lock_holder(root: Path) -> str | None:
    """What the lock file says about its holder (a pid), if anything."""
    try:
        text = (Path(root) / LOCK_NAME).read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return text or None


def is_locked(root: Path) -> bool:
    """True when a writer holds the index lock right now."""
    path = Path(root) / LOCK_NAME
    if fcntl is None or not path.exists():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


class IndexLock:
    """Context manager holding the writer lock of ``root`` (created if needed)."""

    def __init__(self, root: Path, wait: bool = True, on_wait: Callable[[str], None] | None = None) -> None:
        self.root = Path(root)
        self.wait = wait
        self.on_wait = on_wait
        self._fd: int | None = None

    @property
    def path(self) -> Path:
        return self.root / LOCK_NAME

    def acquire(self) -> None:
        try:
            self._acquire()
        except OSError as exc:  # a read-only disk, no permission, ...
            if is_disk_full(exc):
                raise DiskFullError(self.root) from exc
            raise ConvirError(f"cannot write the index folder {self.root}: {exc.strerror or exc}") from exc

    def _acquire(self) -> None:
        if fcntl is None:  # pragma: no cover
            return
        self.root.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = lock_holder(self.root)
                who = f" (pid {holder})" if holder else ""
                if not self.wait:
                    os.close(fd)
                    raise IndexBusyError(
                        f"another `convir index` run{who} is writing to {self.root}; "
                        "wait for it to finish, or drop --no-wait to queue behind it"
                    ) from None
                if self.on_wait:
                    self.on_wait(f"waiting for another `convir index` run{who} on {self.root} to finish ...")
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                except BaseException:
                    os.close(fd)
                    raise
            # the previous holder may have removed the folder (a failed first run cleans up):
            # a lock on an unlinked file protects nothing, so take the one now at the path
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
            self.root.mkdir(parents=True, exist_ok=True)
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except BaseException:  # a full disk: not holding the lock, or this process could never retake it
            os.close(fd)
            raise
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # releases the flock
            self._fd = None

    def __enter__(self) -> IndexLock:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
