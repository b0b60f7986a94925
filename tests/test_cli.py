"""The real ``convir`` CLI in subprocesses: exit codes, messages, JSON, resume after SIGKILL."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import run_cli


def test_help_is_fast_and_imports_no_heavy_library() -> None:
    code = (
        "import sys, convir.cli; "
        "print(sorted({'torch', 'faiss', 'sentence_transformers', 'numpy'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    res = run_cli("--help")
    assert res.returncode == 0 and "index" in res.stdout and "search" in res.stdout


def test_index_then_search_json(gallery: Path, tmp_path: Path) -> None:
    res = run_cli("index", str(gallery), "--out", str(tmp_path / "ix"))
    assert res.returncode == 0, res.stderr
    assert "added 6" in res.stdout
    res = run_cli("search", str(tmp_path / "ix"), "a red sailboat", "-k", "2", "--json", "--mode", "hybrid")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["results"][0]["id"] == "beach/boat.png" and len(out["results"]) == 2


def test_user_mistakes_exit_2_with_a_message_not_a_traceback(gallery: Path, tmp_path: Path) -> None:
    res = run_cli("index", str(tmp_path / "missing"), "--out", str(tmp_path / "ix"))
    assert res.returncode == 2 and "does not exist" in res.stderr and "Traceback" not in res.stderr
    res = run_cli("search", str(tmp_path / "nowhere"), "x")
    assert res.returncode == 2 and "no index at" in res.stderr and "Traceback" not in res.stderr
    res = run_cli("index", str(gallery), "--out", str(tmp_path / "ix"), "--encoder", "bogus:thing")
    assert res.returncode == 2 and "available:" in res.stderr and "Traceback" not in res.stderr
    res = run_cli("index", str(gallery), "--out", str(tmp_path / "ix2"), "--ann", "annoy")
    assert res.returncode == 2 and "unknown --ann" in res.stderr


def test_failed_items_give_exit_1_and_are_listed(gallery: Path, tmp_path: Path) -> None:
    (gallery / "bad.png").write_bytes(b"garbage")
    (gallery / "bad.txt").write_text("caption\n")
    res = run_cli("index", str(gallery), "--out", str(tmp_path / "ix"))
    assert res.returncode == 1
    assert "failed 1" in res.stdout and "bad.png" in res.stdout and "corrupt" in res.stdout


@pytest.mark.e2e
def test_sigkilled_index_run_resumes_on_flickr8k(shared_data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "ix"
    cmd = [
        sys.executable,
        "-m",
        "convir.cli",
        "index",
        str(shared_data_dir / "flickr8k-1k"),
        "--format",
        "flickr8k",
        "--out",
        str(out),
        "--batch-size",
        "50",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db = out / "convir.sqlite"
    count = 0
    deadline = time.time() + 300
    while time.time() < deadline and count < 100:
        time.sleep(0.2)
        if db.exists():
            try:
                with sqlite3.connect(db) as con:
                    count = con.execute("SELECT COUNT(*) FROM items").fetchone()[0]
            except sqlite3.OperationalError:
                pass  # table not created yet
        assert proc.poll() is None, "indexing finished before it could be interrupted"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert count >= 100
    res = run_cli(
        "index", str(shared_data_dir / "flickr8k-1k"), "--format", "flickr8k", "--out", str(out), "--json"
    )
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["total"] == 1000 and report["failed"] == []
    assert report["unchanged"] >= 100 and report["added"] == 1000 - report["unchanged"]
    res = run_cli("search", str(out), "a dog jumps to catch a frisbee", "--json", "-k", "3")
    top = json.loads(res.stdout)["results"][0]
    assert "dog" in " ".join(top["captions"]).lower()


def test_demo_runs_offline_and_finds_the_examples(tmp_path: Path) -> None:
    from convir.demo import EXAMPLE_QUERIES

    res = run_cli("demo", "--out", str(tmp_path / "demo"), "-k", "1")
    assert res.returncode == 0, res.stderr
    assert "added 42" in res.stdout and "failed 0" in res.stdout and "ignored" not in res.stdout
    for query in EXAMPLE_QUERIES:
        assert query in res.stdout
    assert "red_bicycle_tree_sunset.png" in res.stdout and "sailboat_red_sail_sunset.png" in res.stdout
