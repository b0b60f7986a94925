"""``convir embed corpus``: batched, resumable corpus embedding with failures reported, not hidden.

Runs the real encoder code (a tiny random BLIP checkpoint in the original layout, loaded through
``blip:``) and compares rows with ChatIR's own preprocessing + embedding re-implemented on bare
torch/torchvision (``blip_helpers.reference_blip``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from blip_helpers import build_blip_folder, export_original_checkpoint, reference_blip
from chatir_helpers import make_images
from conftest import run_cli
from convir.errors import ConvirError
from convir.eval import corpus as C

torch = pytest.importorskip("torch")
N = 10


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("embed")
    space = make_images(root / "images", N, seed=3)
    (root / "space.json").write_text(json.dumps(space))
    model = build_blip_folder(root / "blip")
    ckpt = export_original_checkpoint(model, root / "chatir_like.ckpt")
    _, image_enc = reference_blip(model)
    ref = image_enc([root / "images" / p for p in space]).numpy()
    return {"root": root, "space": space, "model": model, "spec": f"blip:{ckpt}?base={model}", "ref": ref}


def _job(setup: dict[str, Any], out: Path, **kw: Any) -> C.CorpusJob:
    return C.prepare(setup["root"] / "images", setup["root"] / "space.json", setup["spec"], out, **kw)


def test_cli_end_to_end_npy_then_up_to_date(setup: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "corpus.npy"
    args = [
        "embed",
        "corpus",
        str(setup["root"] / "images"),
        "--search-space",
        str(setup["root"] / "space.json"),
    ]
    args += ["--encoder", setup["spec"], "--out", str(out), "--batch-size", "3", "--workers", "2"]
    res = run_cli(*args, "--json")
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["rows"] == N and summary["encoded"] == N and summary["failed"] == 0
    np.testing.assert_allclose(np.load(out), setup["ref"], atol=1e-5)  # row i = image i, as ChatIR embeds it
    meta = json.loads(C.sidecar(out).read_text())
    assert meta["rows"] == N and meta["dim"] == 16 and meta["encoder_canonical"].startswith("blip:")
    assert not C.parts_dir(out).exists()
    again = run_cli(*args)
    assert again.returncode == 0 and "up to date" in again.stdout


def test_pt_output_is_the_official_cache_tuple(setup: dict[str, Any], tmp_path: Path) -> None:
    result = C.embed_corpus(_job(setup, tmp_path / "corpus.pth", batch_size=4, workers=1))
    assert result.ok and result.encoded == N
    ids, vectors = torch.load(tmp_path / "corpus.pth", weights_only=True)
    assert ids.tolist() == list(range(N))
    np.testing.assert_allclose(vectors.numpy(), setup["ref"], atol=1e-5)


def test_a_killed_run_resumes_with_the_missing_shards(
    setup: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(C, "SHARD_ROWS", 4)  # 3 shards: rows 0-3, 4-7, 8-9
    out = tmp_path / "corpus.npy"
    real = C._encode_rows
    calls = {"n": 0}

    def dies_on_third_shard(*args: Any, **kw: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # what Ctrl-C / a killed process leaves behind
        return real(*args, **kw)

    monkeypatch.setattr(C, "_encode_rows", dies_on_third_shard)
    with pytest.raises(KeyboardInterrupt):
        C.embed_corpus(_job(setup, out, batch_size=3))
    assert not out.exists()
    assert sorted(p.name for p in C.parts_dir(out).glob("*.npy")) == ["00000.npy", "00001.npy"]
    monkeypatch.setattr(C, "_encode_rows", real)
    started: list[tuple[int, int]] = []
    result = C.embed_corpus(_job(setup, out, batch_size=3), on_start=lambda t, d: started.append((t, d)))
    assert started == [(N, 8)] and result.encoded == 2 and result.ok
    np.testing.assert_allclose(np.load(out), setup["ref"], atol=1e-5)
    # shards of another configuration are refused, not mixed in
    C.parts_dir(tmp_path / "other.npy").mkdir()
    (C.parts_dir(tmp_path / "other.npy") / "meta.json").write_text(json.dumps({"encoder": "blip:x"}))
    with pytest.raises(ConvirError, match="holds shards of another run"):
        C.embed_corpus(_job(setup, tmp_path / "other.npy"))


def test_missing_and_corrupt_images_block_the_final_file(setup: dict[str, Any], tmp_path: Path) -> None:
    import shutil

    images = tmp_path / "images"
    shutil.copytree(setup["root"] / "images", images)
    space = setup["space"]
    good_bytes = (images / space[2]).read_bytes()
    (images / space[2]).write_bytes(good_bytes[:60])  # truncated PNG
    (images / space[5]).unlink()
    out = tmp_path / "corpus.npy"
    args = ["embed", "corpus", str(images), "--search-space", str(setup["root"] / "space.json")]
    args += ["--encoder", setup["spec"], "--out", str(out)]
    res = run_cli(*args)
    assert res.returncode == 1, res.stderr
    assert "2 of 10 images could not be embedded" in res.stderr and "NOT written" in res.stderr
    assert space[2] in res.stderr and space[5] in res.stderr and "file not found" in res.stderr
    assert not out.exists()
    listed = json.loads(C.failures_file(out).read_text())["failures"]
    assert [f["row"] for f in listed] == [2, 5]
    # fix the files: the rerun reads only those two images again
    (images / space[2]).write_bytes(good_bytes)
    shutil.copy(setup["root"] / "images" / space[5], images / space[5])
    result = C.embed_corpus(C.prepare(images, setup["root"] / "space.json", setup["spec"], out))
    assert result.ok and result.encoded == 2 and not C.failures_file(out).exists()
    np.testing.assert_allclose(np.load(out), setup["ref"], atol=1e-5)


def test_options_are_checked_before_any_model_loads(setup: dict[str, Any], tmp_path: Path) -> None:
    images, space = setup["root"] / "images", setup["root"] / "space.json"
    for kwargs, msg in [
        ({"dtype": "float16"}, "float16 is not supported on the CPU"),
        ({"dtype": "int8"}, "unknown dtype"),
        ({"device": "cuda:0"}, "CUDA is not available"),
        ({"batch_size": 0}, "--batch-size"),
    ]:
        with pytest.raises(ConvirError, match=msg):
            C.prepare(images, space, setup["spec"], tmp_path / "c.npy", **kwargs)
    with pytest.raises(ConvirError, match="no image tower"):
        C.prepare(images, space, "caption:minilm", tmp_path / "c.npy")
    with pytest.raises(ConvirError, match=r"\.npy"):
        C.prepare(images, space, setup["spec"], tmp_path / "c.txt")
    with pytest.raises(ConvirError, match="give its parent folder"):
        C.prepare(images / "unlabeled2017", space, setup["spec"], tmp_path / "c.npy")
    res = run_cli(
        "embed", "corpus", str(images), "--search-space", str(space), "--encoder", "clip:x", "--out", "c.npy"
    )
    assert res.returncode == 2 and "available:" in res.stderr and "Traceback" not in res.stderr
