"""Indexing and searching with an image tower (tiny random HF CLIP built from a config) via the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clip_helpers import _build_hf
from conftest import run_cli


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tinyclip")
    _build_hf(folder, "clip")
    return folder


def test_image_gallery_indexes_images_and_answers_image_queries(
    gallery: Path, tmp_path: Path, tiny_clip: Path
) -> None:
    (gallery / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    (gallery / "uncaptioned.png").write_bytes((gallery / "snow.jpg").read_bytes())  # images need no caption
    out = tmp_path / "ix"
    res = run_cli("index", str(gallery), "--out", str(out), "--encoder", f"hf:{tiny_clip}", "--json")
    assert res.returncode == 1  # one item failed
    report = json.loads(res.stdout)
    assert report["total"] == 7 and [f[0] for f in report["failed"]] == ["broken.jpg"]
    res = run_cli("search", str(out), "--image", str(gallery / "city" / "bus.jpg"), "-k", "1", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["results"][0]["id"] == "city/bus.jpg"  # its own image is the exact match
    res = run_cli("search", str(out), "a yellow bus", "--json", "--mode", "hybrid")
    assert res.returncode == 0 and len(json.loads(res.stdout)["results"]) == 7
    res = run_cli("search", str(out), "--image", str(gallery / "broken.jpg"))
    assert res.returncode == 2 and "cannot use" in res.stderr
    res = run_cli("index", str(gallery), "--out", str(out))  # no --encoder: keeps the index's own
    assert res.returncode == 1 and "unchanged 7" in res.stdout


def test_relative_model_path_is_stored_canonically(gallery: Path, tmp_path: Path, tiny_clip: Path) -> None:
    out = tmp_path / "ix"
    rel = ["--encoder", f"hf:{tiny_clip.name}"]
    res = run_cli("index", str(gallery), "--out", str(out), *rel, "--json", cwd=tiny_clip.parent)
    assert res.returncode == 0, res.stderr
    again = run_cli("index", str(gallery), "--out", str(out), *rel, "--json", cwd=tiny_clip.parent)
    assert again.returncode == 0 and json.loads(again.stdout)["unchanged"] == 6
    res = run_cli("search", str(out), "a yellow bus", "--json", cwd=tmp_path)  # reopened from elsewhere
    assert res.returncode == 0, res.stderr
    other = run_cli("index", str(gallery), "--out", str(out), "--encoder", "caption:minilm")
    assert other.returncode == 2 and "cannot be mixed" in other.stderr


def test_image_and_text_together_are_fused_not_the_text_dropped(
    gallery: Path, tmp_path: Path, tiny_clip: Path
) -> None:
    """Issue 27/29: ``search --image x.jpg "text"`` used to drop the text silently; it is now the
    fused image + text vector (and ``chat --image`` starts a conversation from the photo)."""
    import io

    from rich.console import Console

    from convir.chat import run_chat
    from convir.dialog.session import SessionSpec

    out = tmp_path / "ix"
    assert run_cli("index", str(gallery), "--out", str(out), "--encoder", f"hf:{tiny_clip}").returncode == 0
    photo = str(gallery / "city" / "bus.jpg")
    alone = json.loads(run_cli("search", str(out), "--image", photo, "--json").stdout)["results"]
    both = run_cli("search", str(out), "a dog on the snow", "--image", photo, "--json")
    assert both.returncode == 0, both.stderr
    fused = json.loads(both.stdout)["results"]
    assert [r["score"] for r in fused] != [r["score"] for r in alone]  # the text counts
    feed = iter(["at night", "/quit"])
    state = run_chat(
        out,
        SessionSpec(),
        tmp_path / "s.json",
        None,
        Console(file=io.StringIO()),
        read=lambda prompt: next(feed),
        previews="off",
        image=Path(photo),
    )
    assert state.reference["image"] == "bus.jpg" and len(state.reference["vector"]) > 0
    assert state.rankings[0]
