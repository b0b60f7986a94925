"""Issue 26: Ctrl-C in `convir index` and `convir chat` says what was kept and the command that
continues, and exits 130. A real subprocess gets a real SIGINT at a known moment: `index`
pauses at its encode checkpoint (CONVIR_TEST_PAUSE_AT), `chat` once its session file is saved."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import run_cli, start_cli
from convir import ingest
from convir.gallery.ingest import PAUSE_ENV


def _wait_for(path: Path, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 300
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the command never reached the point to interrupt"
        time.sleep(0.05)


def test_ctrl_c_in_index_says_what_was_kept_and_how_to_finish(gallery: Path, tmp_path: Path) -> None:
    out = tmp_path / "ix"
    marker = tmp_path / "paused"
    args = ("index", str(gallery), "--out", str(out), "--batch-size", "2")
    proc = start_cli(*args, columns=300, env={PAUSE_ENV: f"encode:{marker}"})
    _wait_for(marker, proc)  # the first batch is stored
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    command = shlex.join(["convir", *args])
    assert f"interrupted: 2 items encoded and kept; re-run `{command}` to finish" in err.splitlines()
    res = run_cli(*args)
    assert res.returncode == 0 and "added 4, updated 0, unchanged 2" in res.stdout, res.stdout + res.stderr


def test_ctrl_c_in_chat_says_how_to_resume(gallery: Path, tmp_path: Path) -> None:
    out = tmp_path / "ix"
    ingest(gallery, out)
    session = tmp_path / "s.json"
    proc = start_cli(
        "chat", str(out), "--save", str(session), "--previews", "off", columns=300, stdin=subprocess.PIPE
    )
    assert proc.stdin is not None
    proc.stdin.write("a skier on a snowy mountain\n")
    proc.stdin.flush()  # stdin stays open: chat waits at its prompt
    _wait_for(session, proc)  # saved after the first results
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert f"interrupted; resume with `convir chat {out} --resume {session}`" in stdout.splitlines()
    res = subprocess.run(
        [sys.executable, "-m", "convir.cli", "chat", str(out), "--resume", str(session), "--previews", "off"],
        input="/quit\n",
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "300"},
    )
    assert res.returncode == 0 and f"continue with --resume {session}" in res.stdout, res.stderr
