"""Index integrity (issue 13): kill -9 at every stage, damaged files, one writer at a time, bad
input, runs that fail, and a photo folder without any caption text."""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest

from conftest import GALLERY, make_image, run_cli, start_cli
from convir import ingest, open_index
from convir.errors import ConvirError
from convir.gallery import ingest as ingest_mod
from convir.gallery.ingest import KILL_ENV, KILL_STAGES
from convir.gallery.lock import IndexLock
from convir.gallery.store import IndexCorruptError, Store, StoredItem
from convir.index.build import VECTORS_FILE


def _make_gallery(root: Path) -> Path:
    for rel, (color, caps) in GALLERY.items():
        make_image(root / rel, color).with_suffix(".txt").write_text("\n".join(caps) + "\n", encoding="utf-8")
    return root


def _change(gallery: Path) -> None:
    """Two items added, one changed, one removed."""
    make_image(gallery / "new" / "tram.png", (10, 200, 10)).with_suffix(".txt").write_text("a green tram\n")
    make_image(gallery / "new" / "kite.png", (200, 10, 200)).with_suffix(".txt").write_text(
        "a kite in the sky\n"
    )
    (gallery / "snow.txt").write_text("a snowboarder jumping over a ramp\n")
    (gallery / "kitchen.png").unlink()
    (gallery / "kitchen.txt").unlink()


# -- kill -9 ----------------------------------------------------------------------------------
def _kill_at(stage: str, gallery: Path, out: Path) -> None:
    """A real `convir index` run that SIGKILLs itself at ``stage`` (the test hook)."""
    killed = start_cli("index", str(gallery), "--out", str(out), "--batch-size", "1", env={KILL_ENV: stage})
    killed.communicate(timeout=600)
    assert killed.returncode == -signal.SIGKILL


@pytest.fixture(scope="module")
def killable(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The gallery after a change, its index before the change ("base"), a clean index after
    it ("clean"), and "pending": base after a run killed once everything was encoded and the
    removed item deleted (at "remove"), the state every later stage starts from."""
    root = tmp_path_factory.mktemp("kill")
    gallery = _make_gallery(root / "gallery")
    base = root / "base"
    ingest(gallery, base)
    _change(gallery)
    clean = root / "clean"
    ingest(gallery, clean)
    pending = root / "pending"
    shutil.copytree(base, pending)
    _kill_at("remove", gallery, pending)
    return {"gallery": gallery, "base": base, "clean": clean, "pending": pending}


@pytest.mark.parametrize("stage", KILL_STAGES)
def test_kill_9_at_any_stage_is_finished_by_the_next_run(
    killable: dict[str, Path], tmp_path: Path, stage: str
) -> None:
    gallery, clean = killable["gallery"], killable["clean"]
    out = tmp_path / "ix"
    shutil.copytree(killable["base" if stage == "encode" else "pending"], out)
    if stage != "remove":  # "pending" is the state right after a kill at "remove"
        _kill_at(stage, gallery, out)
    if stage != "cleanup":  # killed before publishing: search still serves the old build
        before = open_index(out)
        assert "kitchen.png" in before.ids and "new/tram.png" not in before.ids
        before.close()
        assert run_cli("check", str(out)).returncode == 1
    again = run_cli("index", str(gallery), "--out", str(out), "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["total"] == 7
    got, want = open_index(out), open_index(clean)
    assert got.ids == want.ids == sorted({*GALLERY, "new/tram.png", "new/kite.png"} - {"kitchen.png"})
    assert np.allclose(got.vectors, want.vectors, atol=1e-5)
    for q in ("a green tram", "snowboarder jumping a ramp", "a white kitchen with apples"):
        for mode in ("dense", "bm25"):
            assert [h.id for h in got.search(q, k=7, mode=mode)] == [
                h.id for h in want.search(q, k=7, mode=mode)
            ]
    got.close()
    want.close()
    check = run_cli("check", str(out))
    assert check.returncode == 0, check.stdout
    assert [p.name for p in (out / "builds").iterdir()] == [got.build_dir.name]  # debris removed


def test_a_crash_while_building_is_redone_by_the_next_run(
    gallery: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The old bug in-process: a run dying between saving items and publishing left the next
    run saying "unchanged" with the removed item still searchable and the new one missing."""
    out = tmp_path / "ix"
    ingest(gallery, out)
    _change(gallery)

    def crash(stage: str) -> None:
        if stage == "build":
            raise KeyboardInterrupt

    monkeypatch.setattr(ingest_mod, "checkpoint", crash)
    with pytest.raises(KeyboardInterrupt):
        ingest(gallery, out)
    monkeypatch.undo()
    again = ingest(gallery, out)
    assert (again.added, again.updated, again.removed, again.rebuilt) == (0, 0, 0, True)
    idx = open_index(out)
    assert "kitchen.png" not in idx.ids and "new/tram.png" in idx.ids and len(idx) == 7
    assert idx.search("green tram", k=1)[0].id == "new/tram.png"
    idx.close()


def test_publishing_refuses_a_build_of_an_older_item_set(tmp_path: Path) -> None:
    store = Store(tmp_path / "ix", create=True)
    store.bind_encoder("test:x", 2)
    store.upsert([(StoredItem("a", None, ["a"]), "h", None, np.ones(2, np.float32))])
    built_from = store.items_version
    store.delete(["a"])
    assert store.items_version == built_from + 1
    with pytest.raises(ConvirError, match="changed while building"):
        store.publish_build(store.reserve_generation(), built_from, "flat")
    assert store.published is None
    store.close()


# -- damaged files ----------------------------------------------------------------------------
def test_a_deleted_build_file_is_a_clear_error_and_a_rerun_repairs_it(gallery: Path, tmp_path: Path) -> None:
    out = tmp_path / "ix"
    ingest(gallery, out)
    build = Store(out).current_build()
    assert build is not None
    (build / VECTORS_FILE).unlink()
    res = run_cli("search", str(out), "a dog")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "vectors.npy is missing" in res.stderr and "--rebuild" in res.stderr
    res = run_cli("check", str(out))
    assert res.returncode == 1 and "vectors.npy is missing" in res.stdout
    assert f"repair: convir index {gallery.resolve()} --out {out} --rebuild" in res.stdout
    again = ingest(gallery, out)  # a plain re-run notices the damage
    assert again.rebuilt and again.added == 0 and "damaged" in (again.rebuild_reason or "")
    assert open_index(out).search("a dog on the beach", k=1)[0].id == "beach/dog.png"

    build = Store(out).current_build()
    (build / "bm25" / "vocab.index.json").write_text("{not json")  # damage only a load notices
    with pytest.raises(ConvirError, match="damaged"):
        open_index(out).search("a dog", mode="bm25")
    assert run_cli("check", str(out)).returncode == 1
    forced = ingest(gallery, out, rebuild=True)
    assert forced.rebuilt and forced.rebuild_reason == "--rebuild" and forced.added == 0
    assert open_index(out).search("yellow school bus", k=1, mode="bm25")[0].id == "city/bus.jpg"
    assert run_cli("check", str(out)).returncode == 0


@pytest.mark.parametrize("damage", ["garbage", "torn page"])
def test_a_damaged_database_is_a_clear_error_and_rebuild_starts_afresh(
    gallery: Path, tmp_path: Path, damage: str
) -> None:
    out = tmp_path / "ix"
    ingest(gallery, out)
    db = out / "convir.sqlite"
    data = bytearray(db.read_bytes())
    if damage == "garbage":
        data[:] = os.urandom(len(data))
    else:  # every page after the first two overwritten: the header still opens
        data[8192:] = b"\xde\xad" * ((len(data) - 8192) // 2)
    db.write_bytes(bytes(data))
    res = run_cli("search", str(out), "a dog")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "damaged" in res.stderr and f"convir index {gallery.resolve()} --out {out} --rebuild" in res.stderr
    res = run_cli("check", str(out))
    assert res.returncode == 1 and "--rebuild" in res.stdout and "Traceback" not in res.stderr
    with pytest.raises(IndexCorruptError):
        ingest(gallery, out)
    report = ingest(gallery, out, rebuild=True)
    assert report.added == 6 and "set aside" in report.warnings[0][1]
    assert open_index(out).search("a dog on the beach", k=1)[0].id == "beach/dog.png"
    res = run_cli("check", str(out))
    assert res.returncode == 0 and "set aside" in res.stdout


def test_check_says_what_is_not_an_index(tmp_path: Path) -> None:
    assert run_cli("check", str(tmp_path / "nope")).returncode == 2
    (tmp_path / "empty").mkdir()
    res = run_cli("check", str(tmp_path / "empty"))
    assert res.returncode == 2 and "not a convir index" in res.stderr


def test_readers_keep_serving_their_build_while_a_new_one_is_published(gallery: Path, tmp_path: Path) -> None:
    out = tmp_path / "ix"
    ingest(gallery, out)
    reader = open_index(out)
    served = reader.build_dir
    (gallery / "kitchen.png").unlink()
    (gallery / "kitchen.txt").unlink()
    ingest(gallery, out)
    assert served.exists()  # pinned by the reader
    hit = reader.search("white kitchen with green apples", k=1, mode="bm25")[0]  # BM25 loads now
    assert hit.id == "kitchen.png"
    fresh = open_index(out)
    assert fresh.build_dir != served and "kitchen.png" not in fresh.ids
    reader.close()
    ingest(gallery, out)
    assert not served.exists()  # no reader left: the next run removes it
    assert [p.name for p in (out / "builds").iterdir()] == [fresh.build_dir.name]


# -- one writer -------------------------------------------------------------------------------
def test_a_second_writer_waits_or_refuses(gallery: Path, tmp_path: Path) -> None:
    out = tmp_path / "ix"
    lock = IndexLock(out)
    lock.acquire()
    try:
        res = run_cli("index", str(gallery), "--out", str(out), "--no-wait")
        assert res.returncode == 2 and f"another `convir index` run (pid {os.getpid()})" in res.stderr
        waiting = start_cli("index", str(gallery), "--out", str(out), "--json")
        assert waiting.stderr is not None
        lines = iter(waiting.stderr.readline, "")  # until EOF: an old convir never waits
        assert any("waiting for another `convir index` run" in line for line in lines)
        assert waiting.poll() is None
    finally:
        lock.release()
    stdout, _ = waiting.communicate(timeout=600)
    assert waiting.returncode == 0 and json.loads(stdout)["added"] == 6


def test_two_runs_at_once_never_mix_galleries_or_encode_twice(gallery: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    make_image(other / "x.png", (5, 5, 5)).with_suffix(".txt").write_text("a dark square\n")
    out = tmp_path / "ix"
    runs = [start_cli("index", str(g), "--out", str(out), "--json") for g in (gallery, gallery, other)]
    results = [(p.communicate(timeout=600), p.returncode) for p in runs]
    ok = [json.loads(out_) for (out_, _), rc in results if rc == 0]
    refused = [err for (_, err), rc in results if rc == 2]
    assert all(rc in (0, 2) for _, rc in results)
    assert refused and all("indexes another gallery" in e for e in refused)
    assert sum(r["added"] for r in ok) == ok[0]["total"]  # every item encoded exactly once
    idx = open_index(out)
    assert sorted(idx.ids) in (sorted(GALLERY), ["x.png"])  # one gallery, never a mix
    assert len(ok) == (2 if len(idx) == len(GALLERY) else 1)
    idx.close()


# -- bad input --------------------------------------------------------------------------------
def _bomb_png(path: Path, size: int = 20000) -> Path:
    """A tiny file whose header claims size x size pixels (1-bit, one empty row)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", size, size, 1, 0, 0, 0, 0)
    body = zlib.compress(b"\x00" * (size // 8 + 2))
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")
    )
    return path


def test_bad_input_is_listed_never_fatal(tmp_path: Path) -> None:
    _bomb_png(tmp_path / "bomb.png")
    make_image(tmp_path / "wide.png", (1, 2, 3), size=(3000, 2000))
    make_image(tmp_path / "fine.png", (9, 9, 9))
    lines = [
        {"id": "ok", "image": "fine.png", "captions": ["a lighthouse on a cliff"]},
        {"id": "bomb", "image": "bomb.png", "captions": ["a decompression bomb"]},
        {"id": "wide", "image": "wide.png", "captions": ["a wide image"]},
        {"id": "num", "image": 123, "captions": ["x"]},
        {"id": "capint", "captions": ["x", 5]},
        {"id": "meta", "captions": ["x"], "meta": [1]},
        {"id": True, "captions": ["a boolean id"]},
        {"id": "huge", "captions": ["a red boat " + "and another red boat " * 500_000]},  # 10 MB
    ]
    raw = (
        "".join(json.dumps(r) + "\n" for r in lines).encode() + b'{"id": "latin", "captions": ["caf\xe9"]}\n'
    )
    (tmp_path / "g.jsonl").write_bytes(raw)
    out = tmp_path / "ix"
    res = run_cli("index", str(tmp_path / "g.jsonl"), "--out", str(out), "--max-pixels", "5000000", "--json")
    assert res.returncode == 1, res.stderr
    report = json.loads(res.stdout)
    failed = dict(report["failed"])
    assert report["total"] == 2 and set(failed) == {
        "bomb", "wide", "num", "capint", "meta", "<g.jsonl line 7>", "<g.jsonl line 9>"
    }  # fmt: skip
    assert "3000 x 2000 = 6,000,000 pixels, over the limit of 5,000,000" in failed["wide"]
    assert "image too large" in failed["bomb"] and "400,000,000 pixels" in failed["bomb"]
    assert '"image" must be a file path' in failed["num"] and "list of strings" in failed["capint"]
    assert '"meta" must be an object' in failed["meta"] and "not valid UTF-8" in failed["<g.jsonl line 9>"]
    assert dict(report["warnings"])["huge"].startswith("1 caption(s) longer than 4,000 characters")
    idx = open_index(out)
    hit = idx.search("a red boat", k=1)[0]
    assert hit.id == "huge" and len(hit.captions[0]) <= 4000
    idx.close()


def test_undecodable_file_names_are_listed(tmp_path: Path) -> None:
    root = _make_gallery(tmp_path / "g")
    name = os.fsencode(root) + b"/caf\xe9.png"
    with open(name, "wb") as fh:
        fh.write((root / "snow.jpg").read_bytes())
    report = ingest(root, tmp_path / "ix")
    assert report.total == 6 and [r for _, r in report.failed] == [
        "file name is not valid UTF-8: rename the file"
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--long-text", "nonsense"], "unknown --long-text 'nonsense'"),
        (["--ann", "fuzzy"], "unknown --ann 'fuzzy'"),
        (["--format", "tarball"], "unknown --format 'tarball'"),
        (["--encoder", "nosuch:model"], "unknown encoder 'nosuch:model'"),
        (["--max-pixels", "0"], "--max-pixels"),
    ],
)
def test_bad_options_are_one_line_before_anything_loads(
    gallery: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    out = tmp_path / "ix"
    res = run_cli("index", str(gallery), "--out", str(out), *args)
    assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr
    assert not out.exists()


def test_out_that_is_a_file_is_a_usage_error(gallery: Path, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    for out in (tmp_path / "file", tmp_path / "file" / "sub"):
        res = run_cli("index", str(gallery), "--out", str(out))
        assert res.returncode == 2 and "is a file" in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_a_failed_first_run_leaves_nothing_behind(tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    (broken / "a.txt").write_text("a caption\n")
    res = run_cli("index", str(broken), "--out", str(tmp_path / "ix"))
    assert res.returncode == 2 and "nothing could be indexed" in res.stderr
    assert not (tmp_path / "ix").exists()
    (tmp_path / "mine").mkdir()  # a folder the user made stays, empty
    with pytest.raises(ConvirError, match="nothing could be indexed"):
        ingest(broken, tmp_path / "mine")
    assert list((tmp_path / "mine").iterdir()) == []


def test_an_emptied_gallery_does_not_empty_the_index(gallery: Path, tmp_path: Path) -> None:
    out = tmp_path / "ix"
    ingest(gallery, out)
    shutil.rmtree(gallery)
    gallery.mkdir()  # e.g. an unmounted disk
    with pytest.raises(ConvirError, match="nothing could be indexed"):
        ingest(gallery, out)
    assert len(open_index(out)) == 6


# -- a photo folder without captions ----------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_open_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random open_clip model saved as open_clip's own local-dir bundle (config + weights),
    so the CLI subprocess loads it through the real open_clip path."""
    from convir._compat import ensure_torchvision

    ensure_torchvision()
    torch = pytest.importorskip("torch")
    pytest.importorskip("open_clip")
    from open_clip.model import CLIP

    from clip_helpers import TINY_OPEN_CLIP

    folder = tmp_path_factory.mktemp("tiny_open_clip")
    (folder / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": TINY_OPEN_CLIP, "preprocess_cfg": {}})
    )
    torch.manual_seed(7)
    torch.save(CLIP(**TINY_OPEN_CLIP).state_dict(), folder / "open_clip_pytorch_model.bin")
    return folder


def test_a_photo_folder_without_captions_builds_and_searches(tiny_open_clip: Path, tmp_path: Path) -> None:
    from PIL import Image

    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(5):
        Image.fromarray((rng.random((40, 56, 3)) * 255).astype(np.uint8)).save(photos / f"p{i}.jpg")
    out = tmp_path / "ix"
    spec = f"open_clip:local-dir:{tiny_open_clip}"
    res = run_cli("index", str(photos), "--out", str(out), "--encoder", spec)
    assert res.returncode == 0, res.stderr
    assert "no caption text" in res.stdout
    res = run_cli("search", str(out), "a dog", "--json")  # the acceptance command
    assert res.returncode == 0, res.stderr
    dense = [h["id"] for h in json.loads(res.stdout)["results"]]
    assert sorted(dense) == [f"p{i}.jpg" for i in range(5)]
    res = run_cli("search", str(out), "a dog", "--mode", "bm25")
    assert res.returncode == 2 and "no caption text" in res.stderr
    assert run_cli("check", str(out)).returncode == 0
    idx = open_index(out)
    assert not idx.has_bm25
    assert [h.id for h in idx.search("a dog", k=5, mode="hybrid")] == dense
    assert idx.search(image=photos / "p3.jpg", k=1)[0].id == "p3.jpg"
    idx.close()
