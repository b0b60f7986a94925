"""Gallery ingest + search through the Python API, with the real MiniLM caption encoder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import make_image
from convir import ingest, open_index
from convir.errors import ConvirError, IndexMismatchError
from convir.gallery.store import Store


def test_folder_gallery_indexes_and_searches(gallery: Path, tmp_path: Path) -> None:
    report = ingest(gallery, tmp_path / "ix")
    assert (report.added, report.failed, report.total) == (6, [], 6)
    idx = open_index(tmp_path / "ix")
    hits = idx.search("a dog running on the beach", k=3)
    assert hits[0].id == "beach/dog.png"
    assert hits[0].captions[0].startswith("a brown dog") and hits[0].path.endswith("dog.png")
    assert [h.rank for h in hits] == [1, 2, 3] and hits[0].score >= hits[1].score >= hits[2].score
    assert idx.search("yellow school bus", k=1, mode="bm25")[0].id == "city/bus.jpg"
    hybrid = idx.search("skier on a snowy slope", k=6, mode="hybrid")
    assert hybrid[0].id == "snow.jpg" and len({h.id for h in hybrid}) == 6
    weighted = idx.search("coffee at a cafe", k=2, mode="hybrid", fusion="weighted", alpha=0.5)
    assert weighted[0].id == "city/cafe.png"


def test_relative_gallery_paths_are_stored_absolute(
    gallery: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(gallery.parent)
    ingest(Path(gallery.name), tmp_path / "ix")
    monkeypatch.chdir(tmp_path.parent)  # another working directory: paths must still resolve
    hit = open_index(tmp_path / "ix").search("a brown dog on the beach", k=1)[0]
    assert Path(hit.path).is_absolute() and Path(hit.path).is_file()


def test_item_vector_is_normalised_mean_of_caption_vectors(gallery: Path, tmp_path: Path) -> None:
    ingest(gallery, tmp_path / "ix")
    idx = open_index(tmp_path / "ix")
    caps = ["a skier going down a snowy mountain slope", "winter sports in the alps"]
    expected = idx.encode_text(caps).mean(axis=0)
    expected /= np.linalg.norm(expected)
    got = idx.vectors[idx.position["snow.jpg"]]
    assert np.allclose(got, expected, atol=1e-5)


def test_rerun_adds_only_new_or_changed_items(gallery: Path, tmp_path: Path) -> None:
    out = tmp_path / "ix"
    ingest(gallery, out)
    again = ingest(gallery, out)
    assert (again.added, again.updated, again.unchanged, again.rebuilt) == (0, 0, 6, False)

    (gallery / "snow.txt").write_text("a snowboarder jumping over a ramp\n", encoding="utf-8")
    make_image(gallery / "new" / "tram.png", (10, 200, 10)).with_suffix(".txt").write_text("a green tram\n")
    (gallery / "kitchen.png").unlink()
    (gallery / "kitchen.txt").unlink()
    third = ingest(gallery, out)
    assert (third.added, third.updated, third.removed, third.unchanged, third.total) == (1, 1, 1, 4, 6)
    idx = open_index(out)
    assert "kitchen.png" not in idx.ids
    assert idx.search("snowboarder jumping a ramp", k=1)[0].id == "snow.jpg"
    assert idx.search("green tram", k=1)[0].id == "new/tram.png"
    assert len(list((out / "builds").iterdir())) == 1  # old build generations are cleaned up


def test_bad_files_are_skipped_counted_and_listed(gallery: Path, tmp_path: Path) -> None:
    (gallery / "broken.jpg").write_bytes(b"\xff\xd8 this is not really a jpeg")
    (gallery / "broken.txt").write_text("a caption for a broken file\n")
    (gallery / "notes.pdf").write_bytes(b"%PDF-1.4")
    make_image(gallery / "uncaptioned.png", (1, 2, 3))
    (gallery / "empty.png").write_bytes(b"")
    report = ingest(gallery, tmp_path / "ix")
    failed = dict(report.failed)
    assert report.total == 6 and not report.ok
    assert set(failed) == {"broken.jpg", "uncaptioned.png", "empty.png"}
    assert "corrupt" in failed["broken.jpg"] and "no caption" in failed["uncaptioned.png"]
    assert dict(report.ignored) == {"notes.pdf": "not an image file (extension not recognised)"}
    saved = json.loads((tmp_path / "ix" / "last_index_report.json").read_text())
    assert len(saved["failed"]) == 3


def test_manifest_with_bad_lines(tmp_path: Path) -> None:
    img = make_image(tmp_path / "imgs" / "a.png", (200, 0, 0))
    lines = [
        json.dumps({"id": "a", "image": "imgs/a.png", "captions": ["a red square"], "meta": {"k": 1}}),
        json.dumps({"id": "b", "captions": ["a text only item about a lighthouse"]}),
        "{not json",
        json.dumps({"id": "c", "image": "imgs/missing.png", "captions": ["gone"]}),
        json.dumps({"id": "a", "captions": ["duplicate id"]}),
        json.dumps({"captions": ["no id"]}),
    ]
    manifest = tmp_path / "gallery.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    report = ingest(manifest, tmp_path / "ix")
    reasons = " | ".join(r for _, r in report.failed)
    assert report.total == 2 and len(report.failed) == 4
    assert "line 3: invalid JSON" in reasons and "line 5: duplicate id" in reasons and "line 6" in reasons
    assert "image file not found" in reasons
    hit = open_index(tmp_path / "ix").search("lighthouse", k=1)[0]
    assert hit.id == "b" and hit.path is None
    meta = open_index(tmp_path / "ix").search("red square", k=1)[0].meta
    assert meta["k"] == 1 and meta["taken_source"] == "file"  # the manifest's, and the photo's own
    assert img.exists()


def test_empty_manifest_and_empty_folder_are_clear_errors(tmp_path: Path) -> None:
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(ConvirError, match="empty"):
        ingest(tmp_path / "empty.jsonl", tmp_path / "ix1")
    (tmp_path / "nothing").mkdir()
    with pytest.raises(ConvirError, match="no images"):
        ingest(tmp_path / "nothing", tmp_path / "ix2")
    with pytest.raises(ConvirError, match="does not exist"):
        ingest(tmp_path / "nope", tmp_path / "ix3")


def test_wrong_encoder_for_an_index_is_a_clear_error(gallery: Path, tmp_path: Path) -> None:
    out = tmp_path / "ix"
    ingest(gallery, out)
    with pytest.raises(IndexMismatchError, match="caption:minilm"):
        ingest(gallery, out, encoder_spec="open_clip:ViT-B-32/openai")
    with pytest.raises(IndexMismatchError, match="built with encoder"):
        open_index(out, encoder="hf:openai/clip-vit-base-patch32")
    with pytest.raises(ConvirError, match="no image tower"):
        open_index(out).search(image=gallery / "snow.jpg")


def test_index_refuses_to_silently_switch_gallery(gallery: Path, tmp_path: Path) -> None:
    out = tmp_path / "ix"
    ingest(gallery, out)
    other = tmp_path / "other"
    make_image(other / "x.png", (5, 5, 5)).with_suffix(".txt").write_text("a dark square\n")
    with pytest.raises(ConvirError, match="another gallery"):
        ingest(other, out)
    assert ingest(other, out, replace=True).total == 1


def test_interrupted_run_resumes_where_it_stopped(gallery: Path, tmp_path: Path) -> None:
    out = tmp_path / "ix"
    calls = []

    def die_after_first_batch(n: int) -> None:
        calls.append(n)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ingest(gallery, out, batch_size=2, on_progress=die_after_first_batch)
    store = Store(out)
    assert store.count() == 2 and store.current_build() is None
    with pytest.raises(ConvirError, match="no finished build"):
        open_index(out)
    resumed = ingest(gallery, out, batch_size=2)
    assert (resumed.added, resumed.unchanged, resumed.total) == (4, 2, 6)
    assert len(open_index(out)) == 6


@pytest.mark.parametrize("ann", ["hnsw", "lsh"])
def test_ann_kinds_find_the_obvious_match(gallery: Path, tmp_path: Path, ann: str) -> None:
    ingest(gallery, tmp_path / "ix", ann=ann)
    idx = open_index(tmp_path / "ix")
    assert idx.ann_kind == ann
    assert idx.search("a sailboat on the water", k=1)[0].id == "beach/boat.png"


def test_query_vector_and_k_validation(gallery: Path, tmp_path: Path) -> None:
    ingest(gallery, tmp_path / "ix")
    idx = open_index(tmp_path / "ix")
    vec = idx.vectors[idx.position["city/cafe.png"]]
    assert idx.search(np.asarray(vec), k=1)[0].id == "city/cafe.png"
    with pytest.raises(ConvirError, match="dimension"):
        idx.search(np.ones(3), k=1)
    with pytest.raises(ConvirError, match="needs a text query"):
        idx.search(np.asarray(vec), k=1, mode="bm25")
    with pytest.raises(ConvirError, match="empty"):
        idx.search("   ", k=1)
    assert len(idx.search("dog", k=100)) == 6
