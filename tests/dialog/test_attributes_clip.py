"""End to end on caption-less photos with a tiny random open_clip model: index a folder, open a
conversation with the defaults, and the first question is an attribute question (issue 29)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clip_helpers import TINY_ARCH, TINY_OPEN_CLIP  # torchvision first, as convir's encoders do

pytest.importorskip("open_clip")

from conftest import make_image
from convir import ingest, open_index
from convir.dialog.session import SessionSpec, build_conversation
from convir.specs import REGISTRY


def test_caption_less_photos_get_an_attribute_question(tmp_path: Path) -> None:
    import open_clip
    import torch

    d = tmp_path / "arch"
    d.mkdir()
    (d / f"{TINY_ARCH}.json").write_text(json.dumps(TINY_OPEN_CLIP))
    open_clip.add_model_config(d)
    torch.manual_seed(1234)
    ckpt = d / "random.pt"
    torch.save(open_clip.create_model(TINY_ARCH).state_dict(), ckpt)
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(16):
        make_image(photos / f"p{i:02d}.png", ((i * 53) % 256, (i * 97) % 256, (i * 151) % 256))
    REGISTRY.forget("encoder")
    try:
        ingest(photos, tmp_path / "ix", encoder_spec=f"open_clip:{TINY_ARCH}/{ckpt}")
        gallery = open_index(tmp_path / "ix")
        assert all(not c for c in gallery.captions(range(len(gallery.ids))))
        conv = build_conversation(SessionSpec(), gallery)
        first = conv.start("a photo")
        assert first.question and first.question_info.get("attribute"), first
    finally:
        REGISTRY.forget("encoder")
