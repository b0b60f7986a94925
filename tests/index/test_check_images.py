"""``convir check`` notices image files that are gone: a moved gallery, or deleted files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from conftest import run_cli
from convir import ingest


def test_check_reports_a_moved_gallery_and_the_command_that_re_points_it(
    gallery: Path, tmp_path: Path
) -> None:
    out = tmp_path / "ix"
    ingest(gallery, out)
    ok = run_cli("check", str(out), cwd=tmp_path)
    assert ok.returncode == 0 and "image files: all 6 found" in ok.stdout

    gallery.rename(tmp_path / "moved")
    res = run_cli("check", str(out), "--json", cwd=tmp_path)
    assert res.returncode == 1, res.stdout + res.stderr
    report = json.loads(res.stdout)
    (problem,) = report["problems"]
    assert problem.startswith("6 of 6 image files are missing: beach/boat.png (")
    assert f"gallery root {gallery} does not exist" in problem and "... 1 more" in problem
    assert report["repair"] == f"convir index NEW_PLACE --out {out} --replace"

    # the suggested command, with the new place filled in, repairs it
    fixed = run_cli("index", str(tmp_path / "moved"), "--out", str(out), "--replace", cwd=tmp_path)
    assert fixed.returncode == 0, fixed.stderr
    assert run_cli("check", str(out), cwd=tmp_path).returncode == 0


def test_check_reports_deleted_image_files(gallery: Path, tmp_path: Path) -> None:
    out = tmp_path / "ix"
    ingest(gallery, out)
    (gallery / "snow.jpg").unlink()
    shutil.rmtree(gallery / "city")
    res = run_cli("check", str(out), cwd=tmp_path)
    assert res.returncode == 1
    assert "problem: 3 of 6 image files are missing: city/bus.jpg" in res.stdout
    assert f"repair: convir index {gallery} --out {out}" in res.stdout
