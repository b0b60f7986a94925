"""Generated captions (``convir index --captioner``) with tiny random BLIP / GIT captioners built
from configs, an open_clip image encoder and a real OpenAI-compatible fake vision server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from conftest import make_image, run_cli
from convir._compat import ensure_torchvision
from convir.errors import ConvirError
from convir.gallery.ingest import ingest
from convir.gallery.store import Store
from convir.search import open_index

ensure_torchvision()
open_clip = pytest.importorskip("open_clip")

from captioner_helpers import build_blip_captioner, build_git_captioner  # noqa: E402
from clip_helpers import TINY_ARCH, TINY_OPEN_CLIP  # noqa: E402
from fake_http import send_json, serving  # noqa: E402

ENCODER = f"open_clip:{TINY_ARCH}"
TESTS = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def arch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("arch")
    (folder / f"{TINY_ARCH}.json").write_text(json.dumps(TINY_OPEN_CLIP))
    open_clip.add_model_config(folder)
    return folder


@pytest.fixture(scope="module")
def blip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_blip_captioner(tmp_path_factory.mktemp("blip"))


@pytest.fixture(scope="module")
def git(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_git_captioner(tmp_path_factory.mktemp("git"))


@pytest.fixture
def photos(tmp_path: Path, arch: Path) -> Path:
    """Six caption-less photos (no sidecars): a photo library."""
    d = tmp_path / "photos"
    for i in range(6):
        make_image(d / f"p{i}.png", (40 * i, 220 - 30 * i, 60 + 20 * i), (48 + 8 * i, 32 + 4 * i))
    return d


def _generated(out: Path) -> dict[str, tuple[str, str]]:
    store = Store(out)
    try:
        return store.generated()
    finally:
        store.close()


def test_index_stores_generated_captions_apart_and_search_shows_them(
    photos: Path, blip: Path, tmp_path: Path
) -> None:
    out = tmp_path / "ix"
    report = ingest(photos, out, ENCODER, batch_size=4, captioner=f"hf:{blip}")
    assert (report.added, report.captioned, report.captioner) == (6, 6, f"hf:{blip}")
    gen = _generated(out)
    assert set(gen) == {f"p{i}.png" for i in range(6)}
    assert all(text and spec == f"hf:{blip}" for text, spec in gen.values())
    store = Store(out)
    assert all(it.captions == [] for it in store.items(list(gen)).values())  # the user's stay empty
    assert store.get("captioner") == f"hf:{blip}"
    store.close()
    assert report.bm25  # caption-less photos, yet BM25 has text: the generated captions
    ix = open_index(out)
    try:
        word = gen["p3.png"][0].split()[0]
        hits = ix.search(word, k=6, mode="bm25")
        assert "p3.png" in [h.id for h in hits]
        hit = next(h for h in hits if h.id == "p3.png")
        assert hit.captions == [] and hit.generated == {
            "caption": gen["p3.png"][0],
            "captioner": f"hf:{blip}",
        }
        # the conversation reads item texts through this one accessor
        assert ix.captions([ix.position["p3.png"]]) == [[gen["p3.png"][0]]]
    finally:
        ix.close()


def test_captions_are_incremental(photos: Path, blip: Path, git: Path, tmp_path: Path) -> None:
    out = tmp_path / "ix"
    ingest(photos, out, ENCODER, captioner=f"hf:{blip}")
    first = _generated(out)
    again = ingest(photos, out)  # the recorded captioner is kept: nothing to caption
    assert (again.captioned, again.captioner, again.rebuilt) == (0, f"hf:{blip}", False)
    make_image(photos / "p2.png", (250, 250, 0), (64, 40))  # a changed photo is captioned again
    changed = ingest(photos, out)
    assert (changed.updated, changed.captioned) == (1, 1)
    (photos / "p5.png").unlink()
    gone = ingest(photos, out)
    assert "p5.png" not in _generated(out) and gone.removed == 1
    other = ingest(photos, out, captioner=f"hf:{git}")  # another captioner re-captions every photo
    assert other.captioned == 5 and other.unchanged == 5
    now = _generated(out)
    assert {spec for _, spec in now.values()} == {f"hf:{git}"}
    assert now["p0.png"][0] != first["p0.png"][0]


def test_a_killed_run_loses_at_most_a_batch_of_captions(photos: Path, blip: Path, tmp_path: Path) -> None:
    out = tmp_path / "ix"
    code = (
        "import json, sys; from pathlib import Path; "
        "from clip_helpers import TINY_ARCH, TINY_OPEN_CLIP; import open_clip; "
        "d = Path(sys.argv[3]); d.mkdir(exist_ok=True); "
        "(d / f'{TINY_ARCH}.json').write_text(json.dumps(TINY_OPEN_CLIP)); open_clip.add_model_config(d); "
        "from convir.gallery.ingest import ingest; "
        "ingest(Path(sys.argv[1]), Path(sys.argv[2]), f'open_clip:{TINY_ARCH}', batch_size=2, "
        "captioner=sys.argv[4])"
    )
    env = {**os.environ, "CONVIR_TEST_KILL_AT": "caption"}
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    args = [sys.executable, "-c", code, str(photos), str(out), str(tmp_path / "arch"), f"hf:{blip}"]
    res = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == -9, res.stderr
    assert len(_generated(out)) == 2  # the first batch survived the kill
    resumed = ingest(photos, out, ENCODER, batch_size=2)
    assert (resumed.captioned, resumed.added) == (4, 6)
    assert len(_generated(out)) == 6


def test_caption_encoder_reads_the_generated_caption(photos: Path, blip: Path, tmp_path: Path) -> None:
    """Without --captioner a caption-less photo cannot be encoded by the caption encoder; with it,
    the photo is encoded from its generated caption (stored as generated, not as the user's)."""
    with pytest.raises(ConvirError, match="nothing could be indexed"):
        ingest(photos, tmp_path / "bare", "caption:minilm")
    out = tmp_path / "ix"
    report = ingest(photos, out, "caption:minilm", captioner=f"hf:{blip}")
    assert (report.added, report.failed) == (6, [])
    store = Store(out)
    assert all(it.captions == [] for it in store.items(store.ids()).values())
    store.close()
    gen = _generated(out)
    ix = open_index(out)
    try:
        hits = ix.search(gen["p4.png"][0], k=1)
        assert hits[0].id == "p4.png" and hits[0].generated["caption"] == gen["p4.png"][0]
    finally:
        ix.close()


def test_bad_captioner_fails_before_anything_is_created(photos: Path, tmp_path: Path) -> None:
    for spec, needle in (
        ("nope:x", "unknown captioner"),
        ("hf:/no/such/captioner", "does not exist"),
        ("openai:localhost#m", "http://"),
    ):
        with pytest.raises(ConvirError, match=needle):
            ingest(photos, tmp_path / "ix", ENCODER, captioner=spec)
        assert not (tmp_path / "ix").exists()
    res = run_cli("index", str(photos), "--out", str(tmp_path / "ix"), "--captioner", "nope:x", cwd=tmp_path)
    assert res.returncode == 2 and "unknown captioner" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "ix").exists()


def test_cli_search_json_shows_generated_captions_with_their_source(
    photos: Path, blip: Path, tmp_path: Path
) -> None:
    out = tmp_path / "ix"
    ingest(photos, out, ENCODER, captioner=f"hf:{blip}")
    word = _generated(out)["p1.png"][0].split()[0]
    res = run_cli("search", str(out), word, "--mode", "bm25", "--json", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    hits = json.loads(res.stdout)
    hits = hits["results"]
    assert hits and all(
        h["generated"]["captioner"] == f"hf:{blip}" and h["generated"]["caption"] for h in hits
    )


# -- an OpenAI-compatible vision server -------------------------------------------------------------
class FakeVision(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[dict[str, Any]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class _Handler(BaseHTTPRequestHandler):
    server: FakeVision

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append(body)
        n = len(self.server.requests)
        reply = f"A brown dog number {n} runs\non the grass."
        choice = {"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}
        send_json(
            self, 200, {"id": "c", "object": "chat.completion", "model": body["model"], "choices": [choice]}
        )


@pytest.fixture
def server() -> Iterator[FakeVision]:
    yield from serving(FakeVision())


def test_openai_captioner_sends_each_photo(photos: Path, server: FakeVision, tmp_path: Path) -> None:
    out = tmp_path / "ix"
    report = ingest(photos, out, ENCODER, captioner=f"openai:{server.url}#fake-vl")
    assert report.captioned == 6 and len(server.requests) == 6
    part = server.requests[0]["messages"][-1]["content"][0]
    assert part["type"] == "image_url" and part["image_url"]["url"].startswith("data:image/png;base64,")
    gen = _generated(out)
    assert all(text.startswith("A brown dog number") and "\n" not in text for text, _ in gen.values())
    assert {spec for _, spec in gen.values()} == {f"openai:{server.url}#fake-vl"}
    ix = open_index(out)
    try:
        assert len(ix.search("dog grass", k=6, mode="bm25")) == 6
    finally:
        ix.close()


def test_an_undecodable_photo_is_a_warning_not_a_lost_batch(photos: Path, blip: Path, tmp_path: Path) -> None:
    (photos / "broken.jpg").write_bytes(b"not a jpeg" * 20)
    report = ingest(photos, tmp_path / "ix", ENCODER, batch_size=8, captioner=f"hf:{blip}")
    assert report.captioned == 6 and len(_generated(tmp_path / "ix")) == 6
    assert [i for i, why in report.warnings if "no generated caption" in why] == ["broken.jpg"]
    assert [i for i, _ in report.failed] == ["broken.jpg"]  # the encoder cannot read it either
