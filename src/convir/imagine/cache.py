"""On-disk cache of generated images, keyed by (generator spec, prompt, seed, parameters).

Images live in ``$CONVIR_CACHE/images/<sha256>.png`` (see :func:`convir.paths.cache_dir`), each
written to a temporary file and renamed into place, so a crash never leaves a torn PNG and a
rerun of a conversation or an evaluation makes no generator call for an image it already has.
"""

from __future__ import annotations

import hashlib
import json
from io import BytesIO
from pathlib import Path
from typing import Any

from convir.atomic import atomic_path


def image_key(spec: str, prompt: str, seed: int, params: dict[str, Any]) -> str:
    """Stable hex digest of everything that determines the pixels."""
    blob = json.dumps(
        {"spec": spec, "prompt": prompt, "seed": int(seed), "params": params}, sort_keys=True, default=str
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class ImageCache:
    """A folder of ``<key>.png`` files; ``root`` defaults to ``cache_dir()/images``."""

    def __init__(self, root: Path | str | None = None) -> None:
        if root is None:
            from convir.paths import cache_dir

            root = cache_dir() / "images"
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / f"{key}.png"

    def get(self, key: str) -> Path | None:
        p = self.path(key)
        return p if p.is_file() and p.stat().st_size > 0 else None

    def put(self, key: str, image: Any) -> Path:
        """Store a PIL image, or encoded image bytes (any format PIL reads), as PNG."""
        from PIL import Image

        if isinstance(image, (bytes, bytearray)):
            with Image.open(BytesIO(image)) as im:
                image = im.convert("RGB")
        target = self.path(key)
        with atomic_path(target) as tmp:
            image.save(tmp, format="PNG")
        return target
