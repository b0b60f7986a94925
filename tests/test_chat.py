"""`convir chat` as a person meets it (issue 28): what is typed at the prompt is read, not refused."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from conftest import make_image, run_cli
from convir.chat import run_chat
from convir.dialog.answers import evidence
from convir.dialog.session import SessionSpec

CAPTIONS = {
    "road.png": ["a man rides a red bike on the road", "a bicycle on a road next to cars"],
    "path.png": ["a man rides a red bike on a dirt path", "a cyclist in a green forest"],
    "wall.png": ["a red bike leaning against a brick wall", "a parked bicycle in a city"],
    "beach.png": ["a brown dog running on a sandy beach"],
    "kitchen.png": ["a white kitchen with a bowl of green apples on the counter"],
    "snow.png": ["a skier going down a snowy mountain slope"],
}


@pytest.fixture(scope="module")
def bike_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small captioned gallery in which one item (road.png) mentions a road."""
    root = tmp_path_factory.mktemp("bikes")
    for i, (name, caps) in enumerate(CAPTIONS.items()):
        make_image(root / "g" / name, (40 * i, 100, 200 - 30 * i)).with_suffix(".txt").write_text(
            "\n".join(caps)
        )
    res = run_cli("index", str(root / "g"), "--out", str(root / "ix"))
    assert res.returncode == 0, res.stderr
    return root / "ix"


def chat(index: Path, tmp_path: Path, lines: list[str], questioner: str = "infogain") -> tuple[object, str]:
    from rich.console import Console

    feed = iter([*lines, "/quit"])
    out = io.StringIO()
    state = run_chat(
        index,
        SessionSpec(questioner=questioner),
        tmp_path / "s.json",
        None,
        Console(file=out, width=200),
        read=lambda prompt: next(feed),
        previews="off",
    )
    return state, out.getvalue()


def test_idk_leaves_the_query_alone_and_a_negated_road_pushes_road_items_down(
    bike_index: Path, tmp_path: Path
) -> None:
    state, _ = chat(bike_index, tmp_path, ["a man on a red bike", "idk", "no, it is not on a road"])
    assert [e.answer for e in state.exchanges] == [
        "idk",
        "no, it is not on a road",
    ]  # both questions answered
    assert state.queries[1] == state.queries[0]  # "idk" changed nothing
    assert state.rankings[1] == state.rankings[0]
    assert "road" not in state.exchanges[1].question.lower()  # the road is the user's own word
    assert ("road", "no") in {(f.phrase, f.reading) for f in evidence(state)}
    before, after = state.rankings[1], state.rankings[2]
    assert before[0] == "road.png" and after[0] != "road.png"  # the road item was first, now lower
    assert "road" not in state.queries[2]  # ... and "road" is not searched for


def test_an_image_choice_question_takes_idk_and_free_text(tmp_path: Path) -> None:
    from convir.dialog.answers import AnswerAwareStrategy
    from convir.dialog.engine import Conversation
    from convir.dialog.infogain import CHOICE_QUESTION
    from convir.dialog.strategies import ConcatStrategy
    from dialog_helpers import boat_gallery

    g = boat_gallery()
    conv = Conversation(g, AnswerAwareStrategy(ConcatStrategy()), None, depth=8)

    def offer() -> None:
        conv.state.pending_question, conv.state.pending_options = CHOICE_QUESTION, ["img0", "img1", "img2"]

    conv.start("a boat")
    offer()
    conv.reply("idk")  # was: "answer with an option number 1-3, or 'none'"
    assert conv.state.exchanges[-1].skipped
    offer()
    res = conv.reply("a red one at sunset, not on a lake")
    assert (
        conv.state.exchanges[-1].question is None
        and "sunset" in res.ranking.query
        and "lake" not in res.ranking.query
    )
    assert g.ids[int(res.ranking.positions[0])] == "img0"
    offer()
    conv.reply("2")
    assert conv.state.exchanges[-1].chosen == "img1"
    offer()
    conv.reply("none of them")
    assert conv.state.exchanges[-1].kind == "choice" and conv.state.exchanges[-1].chosen is None


def test_chat_like_starts_from_an_item_and_saves_it(bike_index: Path, tmp_path: Path) -> None:
    from rich.console import Console

    def run(like: str | None, first: str) -> object:
        feed = iter([first, "/quit"])
        return run_chat(
            bike_index,
            SessionSpec(),
            tmp_path / f"{like}.json",
            None,
            Console(file=io.StringIO(), width=200),
            read=lambda prompt: next(feed),
            previews="off",
            like=like,
        )

    plain = run(None, "a red bike")
    liked = run("road.png", "a red bike")
    assert liked.reference == {"item": "road.png"} and "road.png" not in liked.rankings[0]
    assert liked.rankings[0] != [i for i in plain.rankings[0] if i != "road.png"][: len(liked.rankings[0])]
    alone = run("snow.png", "")  # Enter: just like it
    assert alone.description == "" and alone.rankings[0]
    from convir.dialog.state import DialogState

    assert DialogState.load(tmp_path / "road.png.json").reference == {"item": "road.png"}


def test_chat_like_an_unknown_id_is_one_line(bike_index: Path, tmp_path: Path) -> None:
    res = run_cli("chat", str(bike_index), "--like", "nope.png", "--save", str(tmp_path / "s.json"))
    assert res.returncode != 0 and "nope.png" in res.stderr and "Traceback" not in res.stderr
