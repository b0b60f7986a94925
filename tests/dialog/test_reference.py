"""Start from a photo: the fused image + text query (convir.dialog.reference)."""

from __future__ import annotations

import pytest

from convir.dialog.session import SessionSpec, build_conversation
from convir.dialog.state import DialogState
from convir.errors import ConvirError
from dialog_helpers import boat_gallery


def test_the_reference_moves_the_ranking_towards_the_photo() -> None:
    gallery = boat_gallery()
    text_only = build_conversation(SessionSpec(), gallery).start("a boat at sunset")
    top = text_only.top_ids(gallery, 3)
    assert top[0] in ("img0", "img2")  # the sunset boats
    # like the white sailboat on a sunny day (img1), but at sunset: the red sailboat at sunset
    # (img0) rises above the rowboat at sunset (img2), and img1 itself is not shown
    conv = build_conversation(SessionSpec(), gallery)
    res = conv.start("at sunset", {"item": "img1"})
    ids = res.top_ids(gallery, 8)
    assert ids[0] == "img0" and "img1" not in ids
    plain = build_conversation(SessionSpec(), gallery).start("at sunset").top_ids(gallery, 8)
    assert plain != ids


def test_weight_zero_is_text_only_and_no_text_is_the_photo_alone() -> None:
    gallery = boat_gallery()
    plain = build_conversation(SessionSpec(), gallery).start("a dog").top_ids(gallery, 3)
    zero = build_conversation(SessionSpec(reference_weight=0.0), gallery).start("a dog", {"item": "img7"})
    assert zero.top_ids(gallery, 3) == [i for i in plain if i != "img7"][:3]
    alone = build_conversation(SessionSpec(), gallery).start("", {"item": "img0"})
    assert alone.top_ids(gallery, 2)[0] in ("img1", "img2")  # the other boats


def test_the_reference_survives_json_and_is_used_after_resume() -> None:
    gallery = boat_gallery()
    conv = build_conversation(SessionSpec(), gallery)
    first = conv.start("at sunset", {"item": "img1"}).top_ids(gallery, 8)
    loaded = DialogState.from_dict(__import__("json").loads(__import__("json").dumps(conv.state.to_dict())))
    assert loaded.reference == {"item": "img1"}
    again = build_conversation(SessionSpec(), gallery, state=loaded).resume().top_ids(gallery, 8)
    assert again == first


def test_bad_weight_and_empty_start_without_a_photo_are_one_line_errors() -> None:
    with pytest.raises(ConvirError, match="like-weight"):
        SessionSpec(reference_weight=2.0).validate()
    with pytest.raises(ConvirError, match="description is empty"):
        build_conversation(SessionSpec(), boat_gallery()).start("")


def test_the_photo_weight_decays_as_the_dialogue_adds_words() -> None:
    from convir.dialog.reference import REFERENCE_DECAY, REFERENCE_WEIGHT

    conv = build_conversation(SessionSpec(), boat_gallery())
    assert conv.start("at sunset", {"item": "img1"}).ranking.info["reference"] == REFERENCE_WEIGHT
    after = conv.say("a red sail").ranking.info["reference"]
    assert after == pytest.approx(REFERENCE_WEIGHT * REFERENCE_DECAY) and after < REFERENCE_WEIGHT
