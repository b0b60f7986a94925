"""Offline sample gallery and example searches for ``convir demo``.

The ``gallery/`` folder next to this file holds 42 small synthetic PNG scenes (256x192)
drawn with Pillow by ``scripts/make_demo_gallery.py``. Each ``NAME.png`` has a sidecar
``NAME.txt`` with 2-3 captions, one per line, so the gallery can be indexed offline with a
caption text encoder (``caption:minilm``). The content overlaps on purpose (several boats,
many red objects, day and night versions of the same scene), so a vague first query
matches several images and the follow-up turns of a conversation have to narrow it down.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from convir.errors import ConvirError

__all__ = ["EXAMPLE_DIALOGUE", "EXAMPLE_QUERIES", "gallery_path"]


def gallery_path() -> Path:
    """Folder holding the demo images (``*.png``) and their caption sidecars (``*.txt``)."""
    folder = resources.files("convir.demo") / "gallery"
    if not isinstance(folder, Path):  # e.g. imported from a zip file
        raise ConvirError("the demo gallery needs convir installed as plain files, not inside a zip archive")
    return folder


# One-shot searches, each meant to rank one gallery image first (target in the comment).
EXAMPLE_QUERIES: list[str] = [
    "a red bicycle next to a tree at sunset",  # red_bicycle_tree_sunset.png
    "a lighthouse shining at night",  # lighthouse_night_sailboat.png
    "three red apples in a white bowl",  # bowl_of_red_apples.png
    "a striped hot air balloon above green hills",  # hot_air_balloon_green_hills.png
    "a red house at night with the lights on",  # red_house_night.png
]

# A vague description refined over three turns. Turn 1 matches every boat picture, turn 2
# leaves the sunset boats (red sail, white sail, rowboat), and turn 3 settles on the
# target: sailboat_red_sail_sunset.png.
EXAMPLE_DIALOGUE: list[str] = [
    "a boat on the water",
    "it is at sunset",
    "the sail is red",
]
