"""Where convir keeps caches (demo index, LLM calls, assembled model files)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$CONVIR_CACHE``, else ``$XDG_CACHE_HOME/convir``, else ``~/.cache/convir``."""
    if root := os.environ.get("CONVIR_CACHE"):
        return Path(root).expanduser()
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base).expanduser() if base else Path.home() / ".cache") / "convir"
