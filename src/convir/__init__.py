"""convir: conversational (interactive) image retrieval.

Python entry points (imported lazily so ``import convir`` stays instant):

* ``convir.open_index(path)`` -> a searchable index (``.search(text, k, mode=...)``);
* ``convir.ingest(gallery, out, ...)`` -> build or update an index directory.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "ingest", "open_index"]


def __getattr__(name: str) -> Any:
    if name == "open_index":
        from convir.search import open_index

        return open_index
    if name == "ingest":
        from convir.gallery.ingest import ingest

        return ingest
    raise AttributeError(name)
