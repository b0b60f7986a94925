"""benchmarks/reproduce_chatir.sh end to end on a synthetic corpus with tiny random models.

The same script a GPU user runs on the 50k COCO images, pointed (by its environment variables) at
a few generated PNGs, a 16-image search space, five tiny dialogue files with the official names,
a tiny BLIP folder (zero-shot stand-in), a tiny original-layout BLIP checkpoint (ChatIR stand-in),
a tiny open_clip bundle (CLIP stand-in, OpenAI's tokenizer and 77-token truncation) and a tiny
diffusers pipeline for DAR.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from blip_helpers import build_blip_folder, export_original_checkpoint
from chatir_helpers import DIALOGUE_FILES, build_open_clip_dir, make_chatir
from conftest import REPO

pytest.importorskip("torch")


def test_reproduction_script_runs_end_to_end(tmp_path: Path) -> None:
    from convir.imagine.tiny import build_tiny_pipeline

    paths = make_chatir(tmp_path / "bench")
    blip = build_blip_folder(tmp_path / "blip")
    ckpt = export_original_checkpoint(blip, tmp_path / "chatir_weights.ckpt")
    pipe = build_tiny_pipeline(tmp_path / "tiny_sd")
    clip = build_open_clip_dir(tmp_path / "tiny_clip")
    out = tmp_path / "out"
    env = {
        **os.environ,
        "COCO_ROOT": str(paths["images"]),
        "CHATIR_DATA": str(paths["data"]),
        "CHATIR_CKPT": str(ckpt),
        "BLIP_CHATIR_BASE": str(blip),
        "BLIP_CHATIR_SIZE": "32",
        "BLIP_ZS_ENCODER": f"blip:{blip}",
        "CLIP_ENCODER": f"open_clip:local-dir:{clip}",
        "DEVICE": "cpu",
        "DTYPE": "auto",
        "BATCH": "8",
        "OUT": str(out),
        "DAR_ENCODERS": "blip-chatir",
        "DAR_GENERATOR": f"diffusers:{pipe}",
        "DAR_GENERATOR_OPTIONS": "device=cpu steps=1 size=32",
        "DAR_ARGS": "--rounds 1 --images-per-turn 1 --limit 2",
        "CONVIR": f"{sys.executable} -m convir.cli",
        "PYTHON": sys.executable,
        "CONVIR_CACHE": str(tmp_path / "cache"),
        "COLUMNS": "200",
    }
    res = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "reproduce_chatir.sh")],
        capture_output=True,
        text=True,
        env=env,
        timeout=1200,
    )
    assert res.returncode == 0, res.stderr[-4000:]
    table = [line for line in res.stdout.splitlines() if line.startswith("| ")]
    rows = {tuple(cell.strip() for cell in line.strip("|").split("|")[:2]): line for line in table[1:]}
    for model in ("clip", "blip-zs", "blip-chatir"):
        for name in DIALOGUE_FILES:
            assert (model, name) in rows, (model, name)
    assert ("blip-chatir-dar", "VisDial_v1.0_queries_val") in rows
    assert "63.42" in rows[("blip-chatir", "VisDial_v1.0_queries_val")]  # published, next to measured
    assert "40.07" in rows[("clip", "VisDial_v1.0_queries_val")]
    # the measured cells are the runs' own Hits@10
    report = json.loads((out / "runs" / "clip" / "ChatGPT_BLIP2" / "report.json").read_text())
    cells = [c.strip() for c in rows[("clip", "ChatGPT_BLIP2")].strip("|").split("|")]
    assert cells[3:6] == [f"{100 * report['metrics']['hits@10'][t]:.2f}" for t in (0, 5, 10)]
    assert report["config"]["long_text"] == "truncate" and report["n_targets"] == 6
    dar = json.loads((out / "runs" / "blip-chatir-dar" / "report.json").read_text())
    assert dar["imagination"]["active"] and dar["imagination"]["disabled"] is None
    assert (
        dar["imagination"]["generator_calls"] + dar["imagination"]["cache_hits"] == 2 * 2
    )  # 2 dialogues, 2 turns
    assert (out / "corpus" / "blip-chatir.npy").is_file() and (
        out / "corpus" / "blip-chatir.npy.json"
    ).is_file()
