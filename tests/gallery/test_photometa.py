"""Photo metadata at index time (issue 31): EXIF capture time, GPS, offline place names, camera,
pixel size; HEIC; stored, filtered with --where, refreshed incrementally; duplicates grouped."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from PIL import Image

from conftest import run_cli
from convir.gallery.photometa import read_photo_meta
from gallery.photo_helpers import BERLIN, PARIS, write_photo

MADRID = (40.4165, -3.7026)


def test_exif_time_gps_place_camera_size(tmp_path: Path) -> None:
    meta = read_photo_meta(write_photo(tmp_path / "a.jpg", size=(80, 60)))
    assert meta["taken"] == "2022-07-14T12:30:00+02:00" and meta["taken_source"] == "exif"
    assert meta["gps"] == {"lat": PARIS[0], "lon": PARIS[1]}
    assert meta["place"] == {"city": "Paris", "region": "Ile-de-France", "country": "FR"}
    assert meta["camera"] == "Canon EOS R5" and meta["camera_make"] == "Canon"
    assert (meta["width"], meta["height"]) == (80, 60)
    west = read_photo_meta(write_photo(tmp_path / "m.jpg", gps=MADRID, camera=("SONY", "ILCE-7M3")))
    assert west["place"]["city"] == "Madrid" and west["place"]["country"] == "ES" and west["gps"]["lon"] < 0
    assert west["camera"] == "SONY ILCE-7M3"


def test_no_exif_falls_back_to_file_time(tmp_path: Path) -> None:
    meta = read_photo_meta(write_photo(tmp_path / "b.jpg", taken=None, gps=None, camera=None))
    assert meta["taken_source"] == "file" and meta["taken"][:4].isdigit()
    assert "gps" not in meta and "place" not in meta and "camera" not in meta


def test_orientation_swaps_displayed_size(tmp_path: Path) -> None:
    path = tmp_path / "r.jpg"
    exif = Image.Exif()
    exif[274] = 6  # rotate 90 CW to display
    Image.new("RGB", (40, 20), "blue").save(path, exif=exif.tobytes())
    meta = read_photo_meta(path)
    assert meta["orientation"] == 6 and (meta["width"], meta["height"]) == (20, 40)


def test_heic_reads_like_jpeg(tmp_path: Path) -> None:
    meta = read_photo_meta(write_photo(tmp_path / "h.heic", gps=BERLIN, taken="2023:01:02 03:04:05"))
    assert meta["taken"] == "2023-01-02T03:04:05+02:00"
    assert meta["place"]["region"] == "Berlin" and meta["place"]["country"] == "DE"
    assert meta["camera"] == "Canon EOS R5"


def _folder(root: Path) -> Path:
    """12 photos: 2022 in Paris, 2023 in Madrid, each with a caption sidecar; one HEIC."""
    root.mkdir()
    for n in range(12):
        year, where = (2022, PARIS) if n < 6 else (2023, MADRID)
        suffix = ".heic" if n == 11 else ".jpg"
        write_photo(
            root / f"p{n:02d}{suffix}",
            color=(20 * n, 100, 255 - 20 * n),
            size=(96, 72),
            taken=f"{year}:0{1 + n % 9}:10 09:00:00",
            gps=where,
            pattern=n,
        )
        (root / f"p{n:02d}.txt").write_text(f"photo number {n} of the trip\n")
    return root


def _ids(out: str) -> set[str]:
    return {r["id"].split(".")[0] for r in json.loads(out)["results"]}


def test_index_plain_folder_stores_filters_and_refreshes(tmp_path: Path) -> None:
    folder, ix = _folder(tmp_path / "photos"), tmp_path / "ix"
    r = run_cli("index", str(folder), "--out", str(ix), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = run_cli(
        "search",
        str(ix),
        "photo of the trip",
        "-k",
        "20",
        "--json",
        "--where",
        'meta.place.city == "Madrid"',
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    assert _ids(r.stdout) == {f"p{n:02d}" for n in range(6, 12)}
    r = run_cli(
        "search",
        str(ix),
        "photo",
        "-k",
        "20",
        "--json",
        "--where",
        'meta.taken < "2023" and meta.camera == "Canon EOS R5"',
        cwd=tmp_path,
    )
    assert _ids(r.stdout) == {f"p{n:02d}" for n in range(6)}
    hit = json.loads(r.stdout)["results"][0]
    assert hit["meta"]["place"]["country"] == "FR", hit  # shown in search results
    r = run_cli("search", str(ix), "photo", "-k", "3", "--where", 'meta.place.city == "Paris"', cwd=tmp_path)
    assert "Paris, FR · Canon EOS R5" in r.stdout, r.stdout

    # a changed file is re-read
    write_photo(folder / "p00.jpg", color=(1, 2, 3), size=(96, 72), gps=MADRID, taken="2021:05:05 05:05:05")
    assert run_cli("index", str(folder), "--out", str(ix), cwd=tmp_path).returncode == 0
    r = run_cli(
        "search", str(ix), "photo", "-k", "20", "--json", "--where", 'meta.taken < "2022"', cwd=tmp_path
    )
    assert _ids(r.stdout) == {"p00"}

    # an index from before photo metadata gets it on the next run, vectors kept
    db = sqlite3.connect(ix / "convir.sqlite")
    with db:
        db.execute("UPDATE items SET meta='{}'")
    vec_before = dict(db.execute("SELECT id, vec FROM items"))
    db.close()
    r = run_cli("index", str(folder), "--out", str(ix), "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    db = sqlite3.connect(ix / "convir.sqlite")
    rows = {i: (json.loads(m), v) for i, m, v in db.execute("SELECT id, meta, vec FROM items")}
    db.close()
    assert all(m["place"]["city"] in ("Paris", "Madrid") for m, _ in rows.values())
    assert all(v == vec_before[i] for i, (_, v) in rows.items())
    r = run_cli(
        "search",
        str(ix),
        "photo",
        "-k",
        "20",
        "--json",
        "--where",
        'meta.place.city == "Paris"',
        cwd=tmp_path,
    )
    assert _ids(r.stdout) == {f"p{n:02d}" for n in range(1, 6)}


def test_duplicates_groups_a_photo_and_its_resized_copy(tmp_path: Path) -> None:
    folder, ix = tmp_path / "photos", tmp_path / "ix"
    folder.mkdir()
    for n in range(4):
        write_photo(folder / f"p{n}.jpg", color=(60 * n, 90, 200 - 40 * n), size=(128, 96), pattern=n)
        (folder / f"p{n}.txt").write_text("a photo of the trip\n")  # same caption: vectors alike
    with Image.open(folder / "p1.jpg") as im:
        im.resize((64, 48)).save(folder / "p1-small.jpg", quality=80)
    (folder / "p1-small.txt").write_text("a photo of the trip\n")
    assert run_cli("index", str(folder), "--out", str(ix), cwd=tmp_path).returncode == 0
    r = run_cli("duplicates", str(ix), "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    groups = json.loads(r.stdout)
    assert len(groups) == 1 and groups[0]["keep"] == "p1.jpg"
    assert [it["id"] for it in groups[0]["items"]] == ["p1.jpg", "p1-small.jpg"]
    assert groups[0]["items"][1]["hash_distance"] <= 8
    r = run_cli("duplicates", str(ix), cwd=tmp_path)
    assert r.returncode == 0 and "p1-small" in r.stdout and "1 group(s)" in r.stdout
    r = run_cli("duplicates", str(tmp_path / "nope"), cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr


def test_raw_dng_decodes_and_reads_its_tags(tmp_path: Path) -> None:
    """A real (minimal, linear) DNG that LibRaw decodes and Pillow cannot open."""
    from convir.gallery.photometa import open_image
    from gallery.dng_helpers import write_dng

    path = write_dng(tmp_path / "shot.dng", 64, 48, make="Convir", model="Test DNG")
    with open_image(path) as im:
        assert im.size == (64, 48) and im.mode == "RGB"
    meta = read_photo_meta(path)
    assert meta["camera"] == "Convir Test DNG" and (meta["width"], meta["height"]) == (64, 48)
    assert meta["taken_source"] == "file"


def test_missing_raw_library_is_a_one_line_hint(tmp_path: Path, monkeypatch) -> None:
    import sys

    import pytest

    from convir.errors import ConvirError
    from convir.gallery.photometa import open_image, with_photo_meta
    from gallery.dng_helpers import write_dng

    path = write_dng(tmp_path / "shot.dng")
    monkeypatch.setitem(sys.modules, "rawpy", None)  # as if rawpy were not installed
    with pytest.raises(ConvirError, match=r"needs rawpy: pip install 'convir\[photos\]'"):
        open_image(path)
    assert with_photo_meta(path, {"k": 1}) == {"k": 1}  # the encoder reports the item, with the hint


def test_a_file_time_is_not_shown_as_the_date_a_photo_was_taken() -> None:
    """A copied folder's file times say when it was copied: the one-line summary (search table,
    page) shows only an EXIF date; the file time stays in meta for filters and JSON."""
    from convir.gallery.photometa import photo_line

    assert photo_line({"taken": "2026-12-08T10:00:00", "taken_source": "file"}) == ""
    assert photo_line({"taken": "2022-07-14T12:30:00+02:00", "taken_source": "exif"}) == "2022-07-14"
