"""The Milvus vector store (issue 19), on Milvus Lite: same results as faiss, kept in step with
SQLite through kill -9 at every sync stage, clear errors for unreachable or busy stores."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import REPO, run_cli
from convir import ingest, open_index
from convir.errors import ConvirError
from convir.gallery.ingest import KILL_ENV, STORE_KILL_STAGES
from convir.gallery.store import Store

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")

from convir.store import StoreSpec
from convir.store.milvus import MilvusStore, open_milvus

QUERIES = (
    "a dog runs on the grass",
    "children playing in the water",
    "a man climbing a rock",
    "a city street",
)


def _manifest(shared: Path, path: Path, n: int, skip: int = 0) -> Path:
    """``n`` flickr8k-1k items (all five captions each) with a little metadata to filter on."""
    rows = list(csv.reader((shared / "flickr8k-1k" / "captions.txt").open(encoding="utf-8")))[1:]
    caps: OrderedDict[str, list[str]] = OrderedDict()
    for img, cap in rows:
        caps.setdefault(img, []).append(cap)
    with path.open("w", encoding="utf-8") as fh:
        for i, (img, cs) in enumerate(list(caps.items())[skip : skip + n]):
            meta = {"year": 2005 + i % 20, "place": ["park", "beach", "city"][i % 3]}
            fh.write(json.dumps({"id": img, "captions": cs, "meta": meta}) + "\n")
    return path


def _milvus_of(index: Path) -> MilvusStore:
    store = Store(index)
    try:
        return open_milvus(store, StoreSpec.from_json(store.get("store")))
    finally:
        store.close()


def _milvus_state(index: Path) -> dict[str, np.ndarray]:
    """id -> vector as Milvus holds it."""
    milvus = _milvus_of(index)
    try:
        ids = list(milvus.all_ids())
        rows = milvus.client.get(milvus.collection, ids=ids, output_fields=["vec"]) if ids else []
        return {r["id"]: np.asarray(r["vec"], np.float32) for r in rows}
    finally:
        milvus.close()


def _sqlite_state(index: Path) -> dict[str, np.ndarray]:
    store = Store(index)
    try:
        _, ids, matrix, _ = store.snapshot()
        return dict(zip(ids, matrix, strict=True))
    finally:
        store.close()


def _assert_in_step(index: Path) -> None:
    """Milvus holds exactly SQLite's items, with the same vectors."""
    have, want = _milvus_state(index), _sqlite_state(index)
    assert sorted(have) == sorted(want)
    for item_id, vec in want.items():
        np.testing.assert_allclose(have[item_id], vec, atol=1e-6)


@pytest.fixture(scope="module")
def galleries(shared_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("milvus")
    first = _manifest(shared_data_dir, root / "first.jsonl", 30)
    # the change: 10 items removed (0-9), 6 added (30-35), one changed
    second = _manifest(shared_data_dir, root / "second.jsonl", 26, skip=10)
    lines = second.read_text(encoding="utf-8").splitlines()
    rec = json.loads(lines[0])
    rec["captions"] = ["a red kayak on a calm lake"]
    lines[0] = json.dumps(rec)
    second.write_text("\n".join(lines) + "\n", encoding="utf-8")
    faiss_ix, milvus_ix = root / "faiss", root / "milvus"
    ingest(first, faiss_ix)
    ingest(first, milvus_ix, store=f"milvus:{milvus_ix}/milvus.db")
    return {"root": root, "first": first, "second": second, "faiss": faiss_ix, "milvus": milvus_ix}


def test_milvus_lite_ranks_like_faiss_in_every_mode(galleries: dict[str, Path]) -> None:
    _assert_in_step(galleries["milvus"])
    fa, mi = open_index(galleries["faiss"]), open_index(galleries["milvus"])
    try:
        assert mi.info["store"]["kind"] == "milvus" and not (mi.build_dir / "vectors.npy").exists()
        assert mi.ids == fa.ids
        for q in QUERIES:
            for mode in ("dense", "bm25", "hybrid"):
                a, b = fa.search(q, k=10, mode=mode), mi.search(q, k=10, mode=mode)
                assert [h.id for h in a] == [h.id for h in b], (q, mode)
                np.testing.assert_allclose([h.score for h in a], [h.score for h in b], atol=1e-5)
        # the exact vectors re-scoring and the conversation loop use come from SQLite
        np.testing.assert_allclose(np.asarray(mi.vectors), np.asarray(fa.vectors), atol=1e-6)
        np.testing.assert_allclose(mi.ranker.vectors[[3, 1]], fa.vectors[[3, 1]], atol=1e-6)
    finally:
        fa.close()
        mi.close()


def test_evaluation_and_the_conversation_loop_run_on_a_milvus_index(galleries: dict[str, Path]) -> None:
    from convir.dialog.engine import Conversation
    from convir.dialog.questioners import CandidateQuestioner, NoQuestioner
    from convir.dialog.strategies import load_strategy
    from convir.eval.backends import RankerBackend

    fa, mi = open_index(galleries["faiss"]), open_index(galleries["milvus"])
    try:
        targets = np.asarray([0, 7, 19])
        for mode in ("dense", "hybrid"):
            assert RankerBackend(mi, mode).ranks(list(QUERIES[:3]), targets) == RankerBackend(fa, mode).ranks(
                list(QUERIES[:3]), targets
            )
        # what chat and serve run: a conversation turn, and the candidate context of a questioner
        got = [
            Conversation(g, load_strategy("concat"), NoQuestioner(), k=5).start(QUERIES[0]) for g in (fa, mi)
        ]
        assert got[0].top_ids(fa, 5) == got[1].top_ids(mi, 5)
        ctx = [CandidateQuestioner(None).context(g, r.ranking) for g, r in zip((fa, mi), got, strict=True)]
        assert ctx[0][0] == ctx[1][0]
        np.testing.assert_allclose(ctx[0][1], ctx[1][1], atol=1e-6)
    finally:
        fa.close()
        mi.close()


@pytest.mark.parametrize(
    "where",
    [
        "meta.year >= 2015",
        'meta.place == "beach" and meta.year < 2012',
        'not (meta.place in ["park", "city"]) or meta.year == 2024',
        "meta.missing == 1",
    ],
)
def test_where_filters_agree_between_milvus_and_faiss(galleries: dict[str, Path], where: str) -> None:
    fa, mi = open_index(galleries["faiss"]), open_index(galleries["milvus"])
    try:
        from convir.store.filters import parse_where

        parsed = parse_where(where)
        metas = {i: m.meta for i, m in fa.store.items(fa.ids).items()}
        allowed = {i for i, m in metas.items() if parsed.matches(m)}
        for mode in ("dense", "bm25", "hybrid"):
            a = [h.id for h in fa.search(QUERIES[0], k=8, mode=mode, where=where)]
            b = [h.id for h in mi.search(QUERIES[0], k=8, mode=mode, where=where)]
            assert a == b, mode
            assert set(a) <= allowed and len(a) == min(8, len(allowed))
    finally:
        fa.close()
        mi.close()


def test_an_hnsw_collection_is_an_hnsw_index(galleries: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "ix"
    ingest(galleries["first"], out, ann="hnsw", store=f"milvus:{out}/m.db")
    milvus = _milvus_of(out)
    assert milvus.index_type() == "HNSW"
    milvus.close()
    fa, mi = open_index(galleries["faiss"]), open_index(out)
    for q in QUERIES:  # 30 items: HNSW finds the exact neighbours
        assert [h.id for h in mi.search(q, k=10)] == [h.id for h in fa.search(q, k=10)]
    mi.close()
    fa.close()
    ingest(galleries["first"], out, ann="flat")  # --ann changes the Milvus index in place
    milvus = _milvus_of(out)
    assert milvus.index_type() == "FLAT"
    milvus.close()
    _assert_in_step(out)


def test_reindexing_upserts_and_deletes_incrementally(galleries: dict[str, Path], tmp_path: Path) -> None:
    import shutil

    out = tmp_path / "ix"
    shutil.copytree(galleries["milvus"], out)
    report = ingest(galleries["second"], out, replace=True)
    # the Lite database moved with the folder: its path is recorded relative to the index
    assert report.store == f"milvus:{out / 'milvus.db'}"
    assert report.synced == {"pushed": 7, "deleted": 10}  # 6 new + 1 changed; 10 removed
    _assert_in_step(out)
    again = ingest(galleries["second"], out)
    assert not again.rebuilt and again.synced is None
    assert run_cli("check", str(out)).returncode == 0


def _kill_at(stage: str, gallery: Path, out: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "convir.cli", "index", str(gallery), "--out", str(out), "--replace"],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, KILL_ENV: stage, "CONVIR_CACHE": str(REPO / ".pytest_cache" / "convir")},
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr


@pytest.mark.parametrize("stage", STORE_KILL_STAGES)
def test_kill_9_mid_sync_is_repaired_by_the_next_run(
    galleries: dict[str, Path], tmp_path: Path, stage: str
) -> None:
    import shutil

    out = tmp_path / "ix"
    shutil.copytree(galleries["milvus"], out)
    _kill_at(stage, galleries["second"], out)
    # killed before publishing: readers still get the old build and only ids of it (new items
    # already sent are not shown; removed items already deleted from Milvus are gone)
    old = open_index(out)
    assert len(old) == 30
    hits = [h.id for h in old.search(QUERIES[0], k=30)]
    assert set(hits) <= set(old.ids) and len(hits) == (30 if stage == "sync" else 20)
    old.close()
    assert run_cli("check", str(out)).returncode == 1
    again = run_cli("index", str(galleries["second"]), "--out", str(out), "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["rebuilt"]
    _assert_in_step(out)
    got = open_index(out)
    assert len(got) == 26 and all(len(got.search(q, k=26)) == 26 for q in QUERIES[:1])
    got.close()  # Milvus Lite: one process at a time
    assert run_cli("check", str(out)).returncode == 0


def test_stray_ids_in_a_collection_are_deleted_by_rebuild(galleries: dict[str, Path], tmp_path: Path) -> None:
    import shutil

    out = tmp_path / "ix"
    shutil.copytree(galleries["milvus"], out)
    milvus = _milvus_of(out)
    vec = np.ones(384, np.float32) / np.sqrt(384)
    milvus.client.insert(milvus.collection, [{"id": "stray", "vec": vec.tolist(), "meta": {}}])
    milvus.close()
    check = run_cli("check", str(out))
    assert check.returncode == 1 and "Milvus" in check.stdout
    ingest(galleries["first"], out)  # the count differs: reconciled by id, the stray deleted
    _assert_in_step(out)


def test_unreachable_store_is_one_line_naming_the_uri(galleries: dict[str, Path], tmp_path: Path) -> None:
    dead = "http://127.0.0.1:9"
    res = run_cli(
        "index", str(galleries["first"]), "--out", str(tmp_path / "new"), "--store", f"milvus:{dead}"
    )
    assert res.returncode == 2 and dead in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert not (tmp_path / "new").exists()  # a failed first run leaves nothing
    # an index whose server went away: search names the URI
    import shutil

    out = tmp_path / "ix"
    shutil.copytree(galleries["milvus"], out)
    store = Store(out)
    gen = store.published
    store.close()
    info_file = out / "builds" / str(gen) / "build.json"
    info = json.loads(info_file.read_text())
    info["store"]["uri"] = dead
    info_file.write_text(json.dumps(info))
    res = run_cli("search", str(out), "a dog")
    assert res.returncode == 2 and dead in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_a_busy_lite_database_is_a_clear_error(galleries: dict[str, Path], tmp_path: Path) -> None:
    import shutil

    out = tmp_path / "ix"
    shutil.copytree(galleries["milvus"], out)
    idx = open_index(out)  # this process holds the Lite database, like a running `convir serve`
    try:
        res = run_cli("search", str(out), "a dog")
        assert res.returncode == 2 and "another process" in res.stderr and "milvus.db" in res.stderr
    finally:
        idx.close()
    assert run_cli("check", str(out)).returncode == 0  # released on close


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--ann", "lsh", "--store", "milvus:{out}/m.db"], "faiss-only"),
        (["--ann", "ivfpq", "--store", "milvus:{out}/m.db"], "IVF_PQ"),
        (["--store", "milvus:"], "needs a URI"),
        (["--store", "milvus:{out}/m"], "ends in .db"),
        (["--store", "milvus:grpc://h:1"], "http"),
        (["--store", "pinecone:x"], "known kinds"),
        (["--store", "milvus:http://h:1#9bad"], "collection name"),
    ],
)
def test_bad_store_options_are_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    out = tmp_path / "ix"
    res = run_cli("index", str(tmp_path), "--out", str(out), *[a.format(out=out) for a in args])
    assert res.returncode == 2 and message in res.stderr, res.stderr
    assert not out.exists()


def test_the_store_spec_round_trips(tmp_path: Path) -> None:
    from convir.store import parse_store

    inside = parse_store(f"milvus:{tmp_path}/ix/m.db#photos", tmp_path / "ix")
    assert inside == StoreSpec("milvus", "m.db", "photos") and inside.is_lite
    assert StoreSpec.from_json(inside.to_json()) == inside
    outside = parse_store(f"milvus:{tmp_path}/m.db", tmp_path / "ix")
    assert outside.uri == str((tmp_path / "m.db").resolve())
    server = parse_store("milvus:https://db.example:19530/", tmp_path)
    assert server.uri == "https://db.example:19530" and not server.is_lite
    assert parse_store("faiss", tmp_path) == StoreSpec("faiss")
    with pytest.raises(ConvirError):
        parse_store("faiss:x", tmp_path)


def test_lite_with_an_ann_index_warns_that_it_searches_exhaustively(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from convir.store import check_ann_for_store, parse_store

    lite = parse_store(f"milvus:{tmp_path}/m.db", tmp_path / "ix")
    server = parse_store("milvus:http://db.example:19530", tmp_path)
    with caplog.at_level("WARNING", logger="convir.store"):
        check_ann_for_store(lite, "flat")
        check_ann_for_store(server, "hnsw")
        assert not caplog.records
        check_ann_for_store(lite, "hnsw")
    assert len(caplog.records) == 1 and "FLAT" in caplog.records[0].getMessage()


def test_ivf_lists_are_sized_for_one_segment_as_milvus_builds_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """Milvus trains IVF per sealed segment (1,024 MB by default since 2.4): 1M x 384 is ~2
    segments of 699,050 rows, so 4 sqrt(699,050) = 3,344 lists, not the collection-wide 4,000."""
    from convir.store.milvus import SEGMENT_ENV, milvus_nlist, segment_rows

    monkeypatch.delenv(SEGMENT_ENV, raising=False)
    assert segment_rows(384) == 699_050
    assert milvus_nlist(1_000_000, 384) == milvus_nlist(5_000_000, 384) == 3344
    assert milvus_nlist(10_000, 384) == 400  # a collection smaller than a segment: 4 sqrt(N)
    assert milvus_nlist(10, 384) == 126  # floor of 1,000 rows, as before
    monkeypatch.setenv(SEGMENT_ENV, "512")  # a Milvus 2.3 server
    assert segment_rows(384) == 349_525 and milvus_nlist(1_000_000, 384) == 2364
    from pymilvus import MilvusClient

    store = MilvusStore(StoreSpec("milvus", "http://db.example:19530"), Path("."), "c")
    store._client = SimpleNamespace(prepare_index_params=MilvusClient.prepare_index_params)  # no server
    params = store._index_params("ivfpq", 384, 1_000_000)
    (index,) = list(params)
    conf = index.to_dict()
    assert conf["index_type"] == "IVF_PQ" and conf["m"] == 48 and conf["nlist"] == 2364


@pytest.mark.parametrize("value", ["big", "0", "-5"])
def test_a_bad_segment_size_is_one_line_before_anything_is_encoded(
    tmp_path: Path, value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "ix"
    monkeypatch.setenv("CONVIR_MILVUS_SEGMENT_MB", value)
    res = run_cli(
        "index", str(tmp_path), "--out", str(out), "--ann", "ivfpq", "--store", "milvus:http://localhost:1"
    )
    assert res.returncode == 2 and "CONVIR_MILVUS_SEGMENT_MB" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr and not out.exists()


@pytest.mark.parametrize(("kind", "want"), [("hnsw", {"ef": 128}), ("ivfpq", {"nprobe": 32})])
def test_a_milvus_search_sizes_its_effort_for_one_segment(
    kind: str, want: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each segment is its own graph or list set of at most ~700k rows at 384-d (2.4+), so the
    per-segment defaults apply however large the collection (faiss' one graph grows instead)."""
    from convir.store.milvus import SEGMENT_ENV

    monkeypatch.delenv(SEGMENT_ENV, raising=False)
    calls: list[dict] = []
    store = MilvusStore(StoreSpec("milvus", "http://db.example:19530"), Path("."), "c")
    store._client = SimpleNamespace(search=lambda *a, **kw: calls.append(kw) or [[]])  # no server
    assert store.search(np.zeros((1, 384), np.float32), 10, kind) == [[]]
    assert calls[0]["search_params"] == {"metric_type": "IP", "params": want}
    monkeypatch.setenv(SEGMENT_ENV, "100000")  # segments of 68M rows at 384-d: 69 started millions
    store.search(np.zeros((1, 384), np.float32), 10, kind)
    got = calls[1]["search_params"]["params"]
    assert got == (
        {"ef": 128 * 69} if kind == "hnsw" else {"nprobe": 32}
    )  # nprobe did not matter (0.91-0.92)


def test_milvus_ivf_pq_re_scores_more_candidates_in_a_larger_collection() -> None:
    """Milvus ranks IVF_PQ hits by PQ codes; convir re-scores k x 20 per started million items."""
    from convir.store.milvus import MilvusAnn

    limits: list[int] = []

    def search(q: np.ndarray, limit: int, kind: str, expr: str | None) -> list[list[tuple[str, float]]]:
        limits.append(limit)
        return [[(str(i), 0.0) for i in range(limit)]]

    for n, want in ((5_000, 10 * 20), (1_000_001, 10 * 40)):
        vectors = np.zeros((n, 4), np.float32)
        vectors[7] = 1.0  # the exact re-scoring, not Milvus's order, puts item 7 first
        ann = MilvusAnn(SimpleNamespace(search=search), [str(i) for i in range(n)], vectors, "ivfpq")
        _, found = ann.search(np.ones((1, 4), np.float32), 10)
        assert limits[-1] == want + 8 and found[0, 0] == 7
