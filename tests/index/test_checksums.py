"""Checksums of stored vectors and build files (issue 26): one flipped bit in convir.sqlite or
in a build file is named by `convir check`, refused by search and repaired by `convir index`."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from conftest import GALLERY, make_image, run_cli
from convir import ingest, open_index
from convir.gallery import ingest as ingest_mod
from convir.gallery.store import SCHEMA_VERSION, Store
from convir.index.build import ANN_FILE, BM25_DIR, IDS_FILE, INFO_FILE, VECTORS_FILE, BuildError

DOG = "beach/dog.png"
QUERIES = ("a dog on the beach", "a red sailboat", "a skier on a snowy slope", "coffee at a cafe")


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A gallery and a clean index of it; each test damages its own copy."""
    root = tmp_path_factory.mktemp("checksums")
    gallery = root / "gallery"
    for rel, (color, caps) in GALLERY.items():
        make_image(gallery / rel, color).with_suffix(".txt").write_text("\n".join(caps) + "\n")
    ingest(gallery, root / "clean")
    return {"gallery": gallery, "index": root / "clean"}


def _copy(clean: dict[str, Path], tmp_path: Path, ann: str | None = None) -> Path:
    out = tmp_path / "ix"
    shutil.copytree(clean["index"], out)
    if ann:
        assert ingest(clean["gallery"], out, ann=ann).rebuilt  # same vectors, another ANN
    return out


def _build(out: Path) -> Path:
    store = Store(out)
    try:
        path = store.current_build()
    finally:
        store.close()
    assert path is not None
    return path


def _flip(path: Path, offset: int, bit: int = 6) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 1 << bit
    path.write_bytes(bytes(data))


def _row_offset(build: Path, item_id: str) -> int:
    """Byte offset in vectors.npy of the high byte of v[0] of ``item_id`` (bit 6: exponent)."""
    ids = json.loads((build / IDS_FILE).read_text())
    vecs = np.load(build / VECTORS_FILE, mmap_mode="r")
    header = (build / VECTORS_FILE).stat().st_size - vecs.nbytes
    return header + ids.index(item_id) * vecs.shape[1] * 4 + 3


def _same_results(out: Path, clean: Path) -> None:
    got, want = open_index(out), open_index(clean)
    try:
        assert got.ids == want.ids
        assert np.allclose(got.vectors, want.vectors, atol=1e-5)
        for q in QUERIES:
            for mode in ("dense", "bm25", "hybrid"):
                have = [(h.id, round(h.score, 4)) for h in got.search(q, k=6, mode=mode)]
                assert have == [(h.id, round(h.score, 4)) for h in want.search(q, k=6, mode=mode)]
    finally:
        got.close()
        want.close()


def _one_line_error(res: object, *parts: str) -> None:
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr  # type: ignore[attr-defined]
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr  # type: ignore[attr-defined]
    for part in parts:
        assert part in res.stderr, res.stderr  # type: ignore[attr-defined]


# -- a stored vector in convir.sqlite -----------------------------------------------------------
def _flip_stored_vector(out: Path, item_id: str) -> None:
    """Flip one exponent bit of v[0] of ``item_id`` in the database file itself (as a disk would)."""
    db = out / "convir.sqlite"
    con = sqlite3.connect(db)
    (blob,) = con.execute("SELECT vec FROM items WHERE id=?", (item_id,)).fetchone()
    con.close()
    data = db.read_bytes()
    assert data.count(blob) == 1 and not (out / "convir.sqlite-wal").exists()
    _flip(db, data.index(blob) + 3)
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"  # SQLite sees nothing wrong
    (blob,) = con.execute("SELECT vec FROM items WHERE id=?", (item_id,)).fetchone()
    assert abs(np.frombuffer(blob, np.float32)[0]) > 1e30
    con.close()


def test_a_flipped_bit_in_a_stored_vector_is_named_and_re_encoded(
    clean: dict[str, Path], tmp_path: Path
) -> None:
    out = _copy(clean, tmp_path)
    _flip_stored_vector(out, DOG)
    res = run_cli("check", str(out))
    assert res.returncode == 1, res.stdout
    assert f"1 damaged stored vector(s) in convir.sqlite ({DOG}: vector checksum mismatch" in res.stdout
    # the repair re-encodes: a plain run, no --rebuild (nothing to set aside)
    assert f"repair: convir index {clean['gallery'].resolve()} --out {out}\n" in res.stdout

    from convir.gallery.store import DamagedVectorsError

    store = Store(out)  # a build from SQLite never copies the damaged vector
    try:
        published = store.published
        with pytest.raises(DamagedVectorsError, match=f"damaged \\({DOG}\\).*re-encodes them"):
            ingest_mod.build(store, "flat")
        assert store.published == published
    finally:
        store.close()

    again = run_cli("index", str(clean["gallery"]), "--out", str(out), "--json")
    assert again.returncode == 0, again.stderr
    report = json.loads(again.stdout)
    assert (report["added"], report["updated"], report["unchanged"], report["rebuilt"]) == (0, 1, 5, True)
    assert "stored vector damaged (vector checksum mismatch" in dict(report["warnings"])[DOG]
    _same_results(out, clean["index"])
    assert run_cli("check", str(out)).returncode == 0


def test_rebuild_re_encodes_a_damaged_stored_vector_instead_of_copying_it(
    clean: dict[str, Path], tmp_path: Path
) -> None:
    out = _copy(clean, tmp_path)
    _flip_stored_vector(out, DOG)
    report = ingest(clean["gallery"], out, rebuild=True)
    assert report.updated == 1 and report.rebuilt
    _same_results(out, clean["index"])
    idx = open_index(out)
    assert idx.search(GALLERY[DOG][1][0], k=1)[0].id == DOG  # the photo is found by its own caption
    assert float(np.abs(idx.vectors).max()) <= 1.0
    idx.close()


def test_random_bytes_in_several_stored_vectors_are_all_named_and_re_encoded(
    clean: dict[str, Path], tmp_path: Path
) -> None:
    """Eight random bytes written into each of four stored vectors (the issue's "64 bytes")."""
    out = _copy(clean, tmp_path)
    db = out / "convir.sqlite"
    con = sqlite3.connect(db)
    blobs = dict(con.execute("SELECT id, vec FROM items"))
    con.close()
    hit = sorted(blobs)[:4]
    data = bytearray(db.read_bytes())
    rng = np.random.default_rng(26)
    for item_id in hit:
        at = data.index(blobs[item_id]) + int(rng.integers(0, 1536 - 8))
        data[at : at + 8] = rng.integers(0, 256, 8, dtype=np.uint8).tobytes()
    db.write_bytes(bytes(data))
    res = run_cli("check", str(out), "--json")
    assert res.returncode == 1
    problem = json.loads(res.stdout)["problems"][0]
    assert problem.startswith("4 damaged stored vector(s)") and all(
        f"{i}: vector checksum" in problem for i in hit
    )
    report = ingest(clean["gallery"], out)
    assert (report.updated, report.unchanged) == (4, 2)
    _same_results(out, clean["index"])


# -- build files ------------------------------------------------------------------------------
def test_a_flipped_bit_in_vectors_npy_is_named_refused_and_repaired(
    clean: dict[str, Path], tmp_path: Path
) -> None:
    """The acceptance command of issue 26."""
    out = _copy(clean, tmp_path)
    build = _build(out)
    _flip(build / VECTORS_FILE, _row_offset(build, DOG))
    res = run_cli("check", str(out))
    assert res.returncode == 1, res.stdout
    assert f"{build / VECTORS_FILE} is damaged (its sha256 differs" in res.stdout
    assert f"{VECTORS_FILE} differs from convir.sqlite for 1 item(s): {DOG}" in res.stdout
    res = run_cli("search", str(out), "a dog")
    _one_line_error(
        res, f"{VECTORS_FILE} is damaged", f"convir index {clean['gallery'].resolve()} --out {out}"
    )
    with pytest.raises(BuildError, match=r"vectors\.npy is damaged"):
        open_index(out)  # every reader (serve, chat) opens the build the same way
    if importlib.util.find_spec("uvicorn"):  # the server refuses at startup, before it listens
        _one_line_error(run_cli("serve", str(out), "--port", "0"), f"{VECTORS_FILE} is damaged")

    again = run_cli("index", str(clean["gallery"]), "--out", str(out), "--json")
    assert again.returncode == 0, again.stderr
    report = json.loads(again.stdout)
    assert (
        report["rebuilt"] and report["updated"] == 0 and "vectors.npy is damaged" in report["rebuild_reason"]
    )
    _same_results(out, clean["index"])
    assert run_cli("check", str(out)).returncode == 0


def test_swapped_ids_are_reported_as_such_and_repaired(clean: dict[str, Path], tmp_path: Path) -> None:
    out = _copy(clean, tmp_path)
    ids_file = _build(out) / IDS_FILE
    ids = json.loads(ids_file.read_text())
    ids[0], ids[1] = ids[1], ids[0]
    ids_file.write_text(json.dumps(ids))
    res = run_cli("check", str(out))
    assert res.returncode == 1
    assert f"{IDS_FILE} order differs from the build's vectors (2 ids out of place" in res.stdout
    assert "0 items missing" not in res.stdout
    res = run_cli("search", str(out), "a dog")
    _one_line_error(res, "ids.json order differs from the build's vectors", "convir index")
    assert ingest(clean["gallery"], out).rebuilt
    _same_results(out, clean["index"])
    assert run_cli("check", str(out)).returncode == 0


@pytest.mark.parametrize("target", [ANN_FILE, BM25_DIR])
def test_damage_in_an_ann_or_bm25_file_is_found_and_repaired(
    clean: dict[str, Path], tmp_path: Path, target: str
) -> None:
    out = _copy(clean, tmp_path, ann="hnsw" if target == ANN_FILE else None)
    build = _build(out)
    files = json.loads((build / INFO_FILE).read_text())["files"]
    damaged = max((f for f in files if f == target or f.startswith(f"{target}/")), key=lambda f: files[f])
    path = build / damaged
    _flip(path, path.stat().st_size // 2, bit=0)
    res = run_cli("check", str(out))
    assert res.returncode == 1 and f"{path} is damaged" in res.stdout, res.stdout
    mode = "dense" if target == ANN_FILE else "bm25"
    res = run_cli("search", str(out), "a dog", "--mode", mode)
    _one_line_error(res, f"{path} is damaged", "convir index")
    report = ingest(clean["gallery"], out)
    assert report.rebuilt and report.updated == 0 and f"{path} is damaged" in (report.rebuild_reason or "")
    assert run_cli("check", str(out)).returncode == 0
    idx, want = open_index(out), open_index(clean["index"])
    for q in QUERIES:
        assert [h.id for h in idx.search(q, k=6, mode=mode)] == [h.id for h in want.search(q, k=6, mode=mode)]
    idx.close()
    want.close()


# -- an index written before checksums --------------------------------------------------------
def test_an_older_index_gains_checksums_and_an_implausible_vector_is_re_encoded(
    clean: dict[str, Path], tmp_path: Path
) -> None:
    """Schema 2 had no checksums: the upgrade checksums the rows as they are (documented), except
    a vector that cannot be the encoder's (here norm ~1e37), which is re-encoded."""
    out = _copy(clean, tmp_path)
    con = sqlite3.connect(out / "convir.sqlite")
    (blob,) = con.execute("SELECT vec FROM items WHERE id=?", (DOG,)).fetchone()
    vec = np.frombuffer(blob, np.float32).copy()
    vec.view(np.uint32)[0] ^= 1 << 30
    with con:
        con.execute("UPDATE items SET vec=? WHERE id=?", (vec.tobytes(), DOG))
        con.execute("ALTER TABLE items DROP COLUMN vsum")
        con.execute("UPDATE settings SET value='2' WHERE key='schema_version'")
    con.close()
    info_file = _build(out) / INFO_FILE
    info = json.loads(info_file.read_text())
    del info["files"]
    info_file.write_text(json.dumps(info))  # a build of an older convir

    res = run_cli("check", str(out))
    assert res.returncode == 1 and f"{DOG}: vector norm" in res.stdout, res.stdout
    report = ingest(clean["gallery"], out)
    assert (report.updated, report.unchanged, report.rebuilt) == (1, 5, True)
    assert "no vector checksum" in dict(report.warnings)[DOG]
    store = Store(out)
    try:
        assert store.get("schema_version") == str(SCHEMA_VERSION)
        assert store.damaged_vectors(thorough=True) == {}
    finally:
        store.close()
    assert "files" in json.loads((_build(out) / INFO_FILE).read_text())
    _same_results(out, clean["index"])
    res = run_cli("check", str(out))
    assert res.returncode == 0 and "no checksums" not in res.stdout, res.stdout


def test_an_older_build_without_checksums_is_rebuilt_once(clean: dict[str, Path], tmp_path: Path) -> None:
    out = _copy(clean, tmp_path)
    info_file = _build(out) / INFO_FILE
    info = json.loads(info_file.read_text())
    del info["files"]
    info_file.write_text(json.dumps(info))
    res = run_cli("check", str(out))
    assert res.returncode == 0 and "records no checksums" in res.stdout
    assert "no checksums" in (ingest(clean["gallery"], out).rebuild_reason or "")
    assert not ingest(clean["gallery"], out).rebuilt


@pytest.mark.parametrize("name", ["params.index.json", "vocab.index.json"])
def test_every_damaged_bm25_file_is_reported_not_a_traceback(
    clean: dict[str, Path], tmp_path: Path, name: str
) -> None:
    """A flipped bit in a BM25 JSON file can still parse (a garbled key): check reports the
    checksum and never loads the file (it crashed with a TypeError when the key was garbled)."""
    out = _copy(clean, tmp_path)
    path = _build(out) / BM25_DIR / name
    text = path.read_text()
    opening = text.index('"')
    i = text.index('"', opening + 1) - 1  # the first key's last letter ("k1" -> "k9"): still JSON
    _flip(path, i, bit=3)
    res = run_cli("check", str(out))
    assert res.returncode == 1 and f"{path} is damaged" in res.stdout, res.stdout + res.stderr
    assert "Traceback" not in res.stderr
