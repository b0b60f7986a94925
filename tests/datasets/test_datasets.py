"""Loaders on the real published files (skipped when absent) and on malformed temp files."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from convir.datasets import (
    SPLITS,
    Dialogue,
    GalleryItem,
    load_chatir,
    load_coco5k,
    load_dialogues_jsonl,
    load_flickr8k,
    load_recqr_jsonl,
    load_search_space,
    split_items,
)
from convir.errors import ConvirError

CHATIR_SETS = [
    "VisDial_v1.0_queries_val",
    "ChatGPT_BLIP2",
    "Human_BLIP2",
    "FLAN_ALPACA_XXL_BLIP2",
    "Unanswered_ChatGPT_BLIP2",
]


@pytest.fixture(scope="module")
def shared_data() -> Path:
    """The read-only evaluation data next to the repo (/work/shared/data for /work/main)."""
    path = (Path(__file__).parents[2] / ".." / "shared" / "data").resolve()
    if not path.is_dir():
        pytest.skip(f"shared evaluation data not found at {path}")
    return path


def assert_error(fn: Callable[[], Any], path: Path, where: str | None) -> str:
    """Call fn, expect a ConvirError naming ``path`` and (if given) ``where`` (e.g. 'line 3')."""
    with pytest.raises(ConvirError) as info:
        fn()
    msg = str(info.value)
    assert str(path) in msg, msg
    if where is not None:
        assert re.search(rf"\b{re.escape(where)}\b", msg), msg
    return msg


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------- real data files


def test_coco5k_real(shared_data: Path) -> None:
    items = load_coco5k(shared_data / "coco5k")
    assert len(items) == 5000
    assert all(isinstance(it, GalleryItem) for it in items)
    assert items[0].id == "val2017/000000000139.jpg"
    assert items[0].image is None
    assert len({it.id for it in items}) == 5000
    assert all(5 <= len(it.captions) <= 7 for it in items)
    assert [it.meta["index"] for it in items] == list(range(5000))
    # published order is sorted by path
    assert [it.id for it in items] == sorted(it.id for it in items)
    # an image root only changes `image`
    rooted = load_coco5k(shared_data / "coco5k" / "Search_Space_coco.json", image_root="/imgs")
    assert rooted[0].image == str(Path("/imgs") / "val2017/000000000139.jpg")
    assert rooted[0].captions == items[0].captions


def test_flickr8k_real(shared_data: Path) -> None:
    items = load_flickr8k(shared_data / "flickr8k-1k")
    assert len(items) == 1000
    assert all(len(it.captions) == 5 for it in items)
    assert items[0].id == "1000268201_693b08cb0e.jpg"
    assert items[0].captions[0].startswith("A child in a pink dress")
    assert all(it.image is not None and Path(it.image).is_file() for it in items)
    assert load_flickr8k(shared_data / "flickr8k-1k" / "captions.txt") == items


@pytest.mark.parametrize("name", CHATIR_SETS)
def test_chatir_real(shared_data: Path, name: str) -> None:
    dialogues, space = load_chatir(
        shared_data / "chatir" / f"{name}.json", shared_data / "chatir" / "Search_Space_val_50k.json"
    )
    assert space is not None and len(space) == 50_000
    assert len(dialogues) == 2064
    assert all(isinstance(d, Dialogue) and len(d.turns) == 11 for d in dialogues)
    assert dialogues[0].target == "unlabeled2017/000000185565.jpg"
    assert dialogues[0].id == "0" and dialogues[-1].id == "2063"


def test_chatir_sets_share_targets_and_order(shared_data: Path) -> None:
    targets = [[d.target for d in load_chatir(shared_data / "chatir" / f"{n}.json")[0]] for n in CHATIR_SETS]
    assert all(t == targets[0] for t in targets)
    assert len(set(targets[0])) == 2064


def test_splits_on_real_data(shared_data: Path) -> None:
    coco = load_coco5k(shared_data / "coco5k")
    dev, test = split_items(coco, "dev", dataset="coco5k"), split_items(coco, "test", dataset="coco5k")
    assert (len(dev), len(test)) == (4000, 1000)
    assert dev + test == coco and split_items(coco, "all", dataset="coco5k") == coco
    dialogues, _ = load_chatir(shared_data / "chatir" / "ChatGPT_BLIP2.json")
    dev_d, test_d = (
        split_items(dialogues, "dev", dataset="chatir"),
        split_items(dialogues, "test", dataset="chatir"),
    )
    assert (len(dev_d), len(test_d)) == (1500, 564)
    assert dev_d[-1].id == "1499" and test_d[0].id == "1500"


# ------------------------------------------------------------------------- splits


def test_split_constants() -> None:
    assert SPLITS == {
        "coco5k": {"dev": (0, 4000), "test": (4000, 5000)},
        "chatir": {"dev": (0, 1500), "test": (1500, 2064)},
    }


def test_split_errors() -> None:
    items = list(range(10))
    assert split_items(items, "all") == items
    assert split_items(items, "all", dataset="flickr8k") == items
    with pytest.raises(ConvirError, match="no documented"):
        split_items(items, "dev", dataset="flickr8k")
    with pytest.raises(ConvirError, match="no documented"):
        split_items(items, "test")
    with pytest.raises(ConvirError, match="5000"):
        split_items(items, "dev", dataset="coco5k")  # not the published size
    with pytest.raises(ConvirError, match="unknown split"):
        split_items(items, "train", dataset="coco5k")


# ------------------------------------------------------------------ generic JSONL


def test_dialogues_jsonl_ok(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "d.jsonl",
        '{"id": "a", "target": "x.jpg", "turns": ["a dog", "is it big? yes"], "source": "me"}\n'
        "\n"
        '{"target": "y.jpg", "turns": ["a cat"]}\n'
        '{"id": 7, "target": "z.jpg", "turns": ["a cow"]}\n',
    )
    ds = load_dialogues_jsonl(path)
    assert ds[0] == Dialogue(id="a", target="x.jpg", turns=("a dog", "is it big? yes"), meta={"source": "me"})
    assert ds[1].id == "1"  # default id: record position
    assert ds[2].id == "7"
    assert ds[0].rewritten is None and ds[0].final_query is None


GOOD = '{"id": "a", "target": "x.jpg", "turns": ["a dog"]}'


@pytest.mark.parametrize(
    ("text", "where"),
    [
        (GOOD + "\n{bad json\n", "line 2"),
        ('{"id": "a", "turns": ["a dog"]}\n', "line 1"),  # missing target
        (GOOD + '\n{"id": "b", "target": "y.jpg"}\n', "line 2"),  # missing turns
        (GOOD + '\n{"id": "b", "target": "y.jpg", "turns": "a cat"}\n', "line 2"),  # turns not a list
        (GOOD + '\n{"id": "b", "target": "y.jpg", "turns": ["a cat", 3]}\n', "line 2"),  # non-str turn
        (GOOD + '\n{"id": "b", "target": "y.jpg", "turns": []}\n', "line 2"),  # empty dialogue
        (GOOD + '\n{"id": "b", "target": 5, "turns": ["a"]}\n', "line 2"),  # target not str
        (GOOD + '\n{"id": "b", "target": " ", "turns": ["a"]}\n', "line 2"),  # blank target
        (GOOD + '\n{"id": true, "target": "y.jpg", "turns": ["a"]}\n', "line 2"),  # bool id
        (GOOD + "\n[1, 2]\n", "line 2"),  # not an object
        (GOOD + "\n\n" + GOOD + "\n", "line 3"),  # duplicate id, blank line still counted
        ("", None),  # empty file
        ("\n  \n", None),  # only blank lines
    ],
)
def test_dialogues_jsonl_malformed(tmp_path: Path, text: str, where: str | None) -> None:
    path = write(tmp_path, "d.jsonl", text)
    msg = assert_error(lambda: load_dialogues_jsonl(path), path, where)
    if where is None:
        assert "empty" in msg


def test_missing_files_are_convir_errors(tmp_path: Path) -> None:
    missing = tmp_path / "nope.jsonl"
    for loader in (load_dialogues_jsonl, load_recqr_jsonl, load_search_space):
        msg = assert_error(lambda loader=loader: loader(missing), missing, None)
        assert "not found" in msg
    assert_error(lambda: load_chatir(missing), missing, None)
    assert_error(lambda: load_coco5k(tmp_path), tmp_path / "Search_Space_coco.json", None)
    assert_error(lambda: load_flickr8k(tmp_path), tmp_path / "captions.txt", None)
    assert_error(lambda: load_dialogues_jsonl(tmp_path), tmp_path, None)  # a directory


def test_invalid_utf8_is_convir_error(tmp_path: Path) -> None:
    path = tmp_path / "bin.jsonl"
    path.write_bytes(b'{"target": "\xff"}\n')
    assert_error(lambda: load_dialogues_jsonl(path), path, None)


# -------------------------------------------------------------------- ReCQR JSONL

RECQR = {"id": "r1", "history": ["a red car", "is it parked? yes"], "query": "and the blue one?"}


def test_recqr_ok(tmp_path: Path) -> None:
    rec = {**RECQR, "rewrite": "a parked blue car", "target": "c.jpg", "split": "test"}
    path = write(tmp_path, "r.jsonl", json.dumps(rec) + "\n" + json.dumps({**rec, "id": "r2", "history": []}))
    ds = load_recqr_jsonl(path)
    assert ds[0].turns == ("a red car", "is it parked? yes", "and the blue one?")
    assert ds[0].final_query == "and the blue one?" and ds[0].rewritten == "a parked blue car"
    assert ds[0].meta == {"rewrite": "a parked blue car", "split": "test"}
    assert ds[0].target == "c.jpg"
    assert ds[1].turns == ("and the blue one?",)


@pytest.mark.parametrize(
    "bad",
    [
        {k: v for k, v in RECQR.items() if k != "history"},  # missing history
        {**RECQR, "history": "a red car"},  # history not a list
        {**RECQR, "query": 3},  # query not str
        {**RECQR, "rewrite": None},  # rewrite wrong type
    ],
)
def test_recqr_malformed(tmp_path: Path, bad: dict[str, Any]) -> None:
    good = {**RECQR, "id": "r0", "rewrite": "x", "target": "a.jpg"}
    bad = {"rewrite": "x", "target": "a.jpg", **bad}
    path = write(tmp_path, "r.jsonl", json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    assert_error(lambda: load_recqr_jsonl(path), path, "line 2")


def test_recqr_missing_rewrite_and_target(tmp_path: Path) -> None:
    path = write(tmp_path, "r.jsonl", json.dumps({**RECQR, "target": "a.jpg"}) + "\n")
    assert "'rewrite'" in assert_error(lambda: load_recqr_jsonl(path), path, "line 1")
    path = write(tmp_path, "r2.jsonl", json.dumps({**RECQR, "rewrite": "x"}) + "\n")
    assert "'target'" in assert_error(lambda: load_recqr_jsonl(path), path, "line 1")


# ---------------------------------------------------------------- ChatIR JSON array

CHAT_OK = {"img": "unlabeled2017/a.jpg", "dialog": ["a dog", "is it big? yes"]}


def test_chatir_ok_and_search_space(tmp_path: Path) -> None:
    dpath = write(tmp_path, "d.json", json.dumps([CHAT_OK]))
    spath = write(tmp_path, "s.json", json.dumps(["unlabeled2017/b.jpg", "unlabeled2017/a.jpg"]))
    ds, space = load_chatir(dpath, spath)
    assert ds == [
        Dialogue(id="0", target="unlabeled2017/a.jpg", turns=("a dog", "is it big? yes"), meta={"index": 0})
    ]
    assert space == ["unlabeled2017/b.jpg", "unlabeled2017/a.jpg"]
    assert load_chatir(dpath) == (ds, None)


@pytest.mark.parametrize(
    ("records", "where"),
    [
        ([CHAT_OK, {"dialog": ["x"]}], "record 1"),  # missing img
        ([CHAT_OK, {"img": "b.jpg"}], "record 1"),  # missing dialog
        ([{"img": "b.jpg", "dialog": "x"}], "record 0"),  # dialog not a list
        ([CHAT_OK, CHAT_OK, {"img": "b.jpg", "dialog": ["x", None]}], "record 2"),  # non-str turn
        ([{"img": 3, "dialog": ["x"]}], "record 0"),  # img not str
        ([CHAT_OK, "just a string"], "record 1"),  # record not an object
        ([{"img": "b.jpg", "dialog": []}], "record 0"),  # empty dialog
    ],
)
def test_chatir_malformed_records(tmp_path: Path, records: list[Any], where: str) -> None:
    path = write(tmp_path, "d.json", json.dumps(records))
    assert_error(lambda: load_chatir(path), path, where)


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ('[{"img": "a.jpg",\n "dialog": ["x"]},\n {oops}]', "line 3"),  # bad JSON -> line of the error
        ('{"img": "a.jpg", "dialog": ["x"]}', None),  # top level is not an array
        ("[]", None),  # no records
        ("", None),  # empty file
    ],
)
def test_chatir_malformed_files(tmp_path: Path, text: str, where: str | None) -> None:
    path = write(tmp_path, "d.json", text)
    assert_error(lambda: load_chatir(path), path, where)


def test_chatir_target_outside_search_space(tmp_path: Path) -> None:
    dpath = write(tmp_path, "d.json", json.dumps([CHAT_OK, {**CHAT_OK, "img": "unlabeled2017/zzz.jpg"}]))
    spath = write(tmp_path, "s.json", json.dumps(["unlabeled2017/a.jpg"]))
    msg = assert_error(lambda: load_chatir(dpath, spath), dpath, "record 1")
    assert str(spath) in msg and "zzz.jpg" in msg


@pytest.mark.parametrize(
    ("space", "where"), [(["a.jpg", "b.jpg", "a.jpg"], "record 2"), (["a.jpg", 4], "record 1")]
)
def test_search_space_malformed(tmp_path: Path, space: list[Any], where: str) -> None:
    path = write(tmp_path, "s.json", json.dumps(space))
    assert_error(lambda: load_search_space(path), path, where)


# ------------------------------------------------------------------------ COCO 5k


def _coco(tmp_path: Path, paths: Any, captions: Any) -> Path:
    (tmp_path / "Search_Space_coco.json").write_text(json.dumps(paths), encoding="utf-8")
    (tmp_path / "coco_captions.json").write_text(json.dumps(captions), encoding="utf-8")
    return tmp_path


def test_coco5k_length_mismatch(tmp_path: Path) -> None:
    folder = _coco(tmp_path, ["a.jpg", "b.jpg"], [{"caption": ["x"]}])
    msg = assert_error(lambda: load_coco5k(folder), folder / "Search_Space_coco.json", None)
    assert str(folder / "coco_captions.json") in msg and "2" in msg and "1" in msg


@pytest.mark.parametrize(
    ("paths", "captions", "bad_file", "where"),
    [
        (["a.jpg", "b.jpg"], [{"caption": ["x"]}, {"captions": ["y"]}], "coco_captions.json", "record 1"),
        (["a.jpg", "b.jpg"], [{"caption": ["x"]}, {"caption": "y"}], "coco_captions.json", "record 1"),
        (["a.jpg", "b.jpg"], [["x"], {"caption": ["y"]}], "coco_captions.json", "record 0"),
        (["a.jpg", 2], [{"caption": ["x"]}, {"caption": ["y"]}], "Search_Space_coco.json", "record 1"),
        (["a.jpg", "a.jpg"], [{"caption": ["x"]}, {"caption": ["y"]}], "Search_Space_coco.json", "record 1"),
    ],
)
def test_coco5k_malformed(tmp_path: Path, paths: Any, captions: Any, bad_file: str, where: str) -> None:
    folder = _coco(tmp_path, paths, captions)
    assert_error(lambda: load_coco5k(folder), folder / bad_file, where)


# ----------------------------------------------------------------------- Flickr8k


def test_flickr8k_groups_first_seen_order(tmp_path: Path) -> None:
    write(tmp_path, "captions.txt", 'image,caption\nb.jpg,one\na.jpg,"two, with comma"\nb.jpg,three\n')
    items = load_flickr8k(tmp_path)
    assert [it.id for it in items] == ["b.jpg", "a.jpg"]
    assert items[0].captions == ("one", "three")
    assert items[1].captions == ("two, with comma",)
    assert items[1].image == str(tmp_path / "images" / "a.jpg")


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("img,text\na.jpg,x\n", "line 1"),  # wrong header
        ("image,caption\na.jpg,x\nb.jpg,y,z\n", "line 3"),  # too many fields
        ("image,caption\na.jpg\n", "line 2"),  # too few fields
        ("image,caption\na.jpg,x\nb.jpg,\n", "line 3"),  # empty caption
        ("image,caption\n,x\n", "line 2"),  # empty image name
        ('image,caption\na.jpg,x\nb.jpg,"unterminated" junk\n', "line 3"),  # csv syntax error
        ("image,caption\n", None),  # header only
        ("", None),  # empty file
    ],
)
def test_flickr8k_malformed(tmp_path: Path, text: str, where: str | None) -> None:
    path = write(tmp_path, "captions.txt", text)
    assert_error(lambda: load_flickr8k(path), path, where)
