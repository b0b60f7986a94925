"""The server's result views show generated captions (``convir index --captioner``), marked as such."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from convir._compat import ensure_torchvision

pytest.importorskip("fastapi")
ensure_torchvision()
open_clip = pytest.importorskip("open_clip")

from fastapi.testclient import TestClient  # noqa: E402

from captioner_helpers import build_blip_captioner  # noqa: E402
from clip_helpers import TINY_ARCH, TINY_OPEN_CLIP  # noqa: E402
from conftest import make_image  # noqa: E402
from convir import ingest  # noqa: E402
from convir.server import create_app  # noqa: E402


def test_results_carry_the_generated_caption_and_its_captioner(tmp_path: Path) -> None:
    (tmp_path / "arch").mkdir()
    (tmp_path / "arch" / f"{TINY_ARCH}.json").write_text(json.dumps(TINY_OPEN_CLIP))
    open_clip.add_model_config(tmp_path / "arch")
    for i in range(4):
        make_image(tmp_path / "photos" / f"p{i}.png", (60 * i, 200 - 40 * i, 90))
    make_image(tmp_path / "photos" / "own.png", (5, 5, 5)).with_suffix(".txt").write_text("my own words\n")
    blip = build_blip_captioner(tmp_path / "blip")
    ingest(tmp_path / "photos", tmp_path / "ix", f"open_clip:{TINY_ARCH}", captioner=f"hf:{blip}")
    client = TestClient(create_app(tmp_path / "ix"))
    res = client.post("/api/sessions", json={"description": "a photo", "k": 5})
    assert res.status_code == 201, res.text
    results = {r["id"]: r for r in res.json()["results"]}
    assert len(results) == 5
    for item_id in ("p0.png", "p3.png"):
        r = results[item_id]
        assert r["captions"] == [] and r["generated"]["captioner"] == f"hf:{blip}"
        assert r["caption"] == r["generated"]["caption"] != ""
    own = results["own.png"]  # the user's caption comes first; the generated one rides along
    assert own["caption"] == "my own words" and own["generated"]["caption"]
