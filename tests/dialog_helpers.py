"""The small captioned gallery the dialogue tests share (three boats among unrelated scenes)."""

from __future__ import annotations

from convir.dialog.gallery import MemoryGallery
from convir.encoders import load_encoder

CAPTIONS = [
    ["a red sailboat on the sea at sunset"],
    ["a white sailboat on the sea on a sunny day"],
    ["a rowboat on a lake at sunset"],
    ["a brown dog running on a beach"],
    ["a black cat sleeping on a red sofa"],
    ["a plate of pizza next to a glass of beer"],
    ["a yellow bus on a city street"],
    ["a skier on a snowy mountain slope"],
]


def boat_gallery() -> MemoryGallery:
    """CAPTIONS embedded with the offline MiniLM, ids img0..img7."""
    enc = load_encoder("caption:minilm")
    vecs = enc.encode_text([c[0] for c in CAPTIONS])
    return MemoryGallery([f"img{i}" for i in range(len(CAPTIONS))], CAPTIONS, vecs, enc)
