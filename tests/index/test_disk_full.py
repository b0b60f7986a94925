"""Issue 26: a full disk is one line and exit 1, never "damaged" or a traceback, and it leaves
the published build and convir.sqlite as they were (search serves the old build, check passes).

The failure is injected where the system reports it: SQLite's own page limit (the real
SQLITE_FULL path), a short write as numpy reports it, ENOSPC from fsync; and, where this
machine lets root mount one, a real full tmpfs."""

from __future__ import annotations

import errno
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from conftest import GALLERY, make_image, run_cli
from convir import cli, ingest, open_index
from convir.gallery.store import DB_NAME
from convir.index import build as build_mod
from convir.index.check import check_index

MESSAGE = "error: no space left on the device holding {out}; free space and re-run"


def _gallery(root: Path, extra: int = 0) -> Path:
    for rel, (color, caps) in GALLERY.items():
        make_image(root / rel, color).with_suffix(".txt").write_text("\n".join(caps) + "\n", encoding="utf-8")
    for n in range(extra):
        make_image(root / "new" / f"tram{n}.png", (10, 200, n)).with_suffix(".txt").write_text(
            f"a green tram number {n} crossing a bridge in the rain\n"
        )
    return root


def _cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, str]:
    """The real console entry point, in this process (so the injected failure applies)."""
    monkeypatch.setattr(sys, "argv", ["convir", *args])
    monkeypatch.setenv("COLUMNS", "300")
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        cli.main()
    return int(exited.value.code or 0), capsys.readouterr().err


def _error(stderr: str) -> str:
    """The error line (after the progress bar, if any); a traceback is never acceptable."""
    assert "Traceback" not in stderr
    return stderr.strip().splitlines()[-1]


def _serves_the_old_build(out: Path, build: str) -> None:
    report = check_index(out)
    assert report.ok, report.problems
    idx = open_index(out)
    try:
        assert idx._build.path.name == build and len(idx) == len(GALLERY)
        assert idx.search("a skier on a snowy slope", k=1)[0].id == "snow.jpg"
    finally:
        idx.close()
    assert not [p.name for p in (out / "builds").iterdir() if p.name.startswith(".")]  # no temp folder left


@pytest.fixture()
def indexed(tmp_path: Path) -> Iterator[tuple[Path, Path, str]]:
    gallery = _gallery(tmp_path / "g")
    out = tmp_path / "ix"
    ingest(gallery, out)
    yield gallery, out, sorted(p.name for p in (out / "builds").iterdir())[0]


def test_sqlite_full_while_encoding_is_one_line_exit_1(
    indexed: tuple[Path, Path, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gallery, out, build = indexed
    _gallery(gallery, extra=20)
    real = sqlite3.connect

    def connect(*args: object, **kwargs: object) -> sqlite3.Connection:
        db = real(*args, **kwargs)  # type: ignore[arg-type]
        if str(args[0]).endswith(DB_NAME):  # the database may not grow: SQLite's own SQLITE_FULL
            db.execute(f"PRAGMA max_page_count = {db.execute('PRAGMA page_count').fetchone()[0]}")
        return db

    monkeypatch.setattr(sqlite3, "connect", connect)
    code, err = _cli(capsys, monkeypatch, "index", str(gallery), "--out", str(out))
    assert code == 1 and _error(err) == MESSAGE.format(out=out), err
    monkeypatch.undo()
    _serves_the_old_build(out, build)
    again = ingest(gallery, out)  # space freed: the re-run finishes
    assert (again.added, again.total) == (20, 26)


@pytest.mark.parametrize("how", ["numpy short write", "fsync ENOSPC"])
def test_disk_full_while_writing_a_build_is_one_line_exit_1(
    indexed: tuple[Path, Path, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    how: str,
) -> None:
    gallery, out, build = indexed
    if how == "numpy short write":
        real_save = np.save

        def save(file: Path, arr: np.ndarray) -> None:
            real_save(file, arr)
            size = Path(file).stat().st_size
            with open(file, "r+b") as fh:
                fh.truncate(size // 2)
            raise OSError(f"{size} requested and {size // 2} written")  # numpy's own words (no errno)

        monkeypatch.setattr(np, "save", save)
    else:

        def fsync(fd: int) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(build_mod.os, "fsync", fsync)
    code, err = _cli(capsys, monkeypatch, "index", str(gallery), "--out", str(out), "--rebuild")
    assert code == 1 and _error(err) == MESSAGE.format(out=out), err
    monkeypatch.undo()
    _serves_the_old_build(out, build)


def _mount_tmpfs(where: Path, size: str) -> bool:
    where.mkdir(parents=True, exist_ok=True)
    try:
        res = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
            capture_output=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return res.returncode == 0


def _fill(folder: Path, leave: int) -> Path:
    """Fill the device holding ``folder`` until ``leave`` bytes (or nothing) are free."""
    filler = folder / "filler"
    with open(filler, "wb") as fh:
        try:
            while shutil.disk_usage(folder).free > leave:
                fh.write(b"\0" * 4096)
                fh.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def test_a_really_full_tmpfs(tmp_path: Path) -> None:
    """Every way a run can meet a full device (the lock file, SQLite's -shm and WAL, numpy's
    vectors.npy, build.json) ends as the same one line and exit 1; the index stays sound."""
    mnt = tmp_path / "mnt"
    if not _mount_tmpfs(mnt, "6m"):
        pytest.skip("cannot mount a tmpfs here (needs root and mount permission)")
    try:
        gallery = _gallery(tmp_path / "g")
        out = mnt / "ix"
        ingest(gallery, out)
        build = sorted(p.name for p in (out / "builds").iterdir())[0]
        failures = 0
        for leave in (0, 16 * 1024, 48 * 1024, 96 * 1024):
            filler = _fill(mnt, leave)
            res = run_cli("index", str(gallery), "--out", str(out), "--rebuild", "--json")
            filler.unlink()
            if res.returncode == 0:
                build = sorted(p.name for p in (out / "builds").iterdir())[-1]
            else:
                failures += 1
                assert res.returncode == 1 and _error(res.stderr) == MESSAGE.format(out=out), res.stderr
            _serves_the_old_build(out, build)
        assert failures >= 1
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=30)
