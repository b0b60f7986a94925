"""Explicit dev/test splits, defined in one place so no experiment can tune on held-out data.

Splits are index ranges over the records in their *published order* (see the data README):
COCO 5k items 0-3999 = dev, 4000-4999 = test; ChatIR dialogues 0-1499 = dev, 1500-2063 = test.
Any other dataset only has ``"all"`` until a split is documented here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, TypeVar

from convir.errors import ConvirError

__all__ = ["SPLITS", "SplitName", "split_items"]

T = TypeVar("T")
SplitName = Literal["dev", "test", "all"]

# dataset -> split -> [start, stop) over published order; stop of "test" = expected total size.
SPLITS: dict[str, dict[str, tuple[int, int]]] = {
    "coco5k": {"dev": (0, 4000), "test": (4000, 5000)},
    "chatir": {"dev": (0, 1500), "test": (1500, 2064)},
}


def split_items(items: Sequence[T], split: SplitName | str, dataset: str | None = None) -> list[T]:
    """Return the records of ``split`` from ``items`` (in published order).

    ``"all"`` returns every item for any dataset. ``"dev"``/``"test"`` need a dataset listed
    in :data:`SPLITS`, and ``items`` must have exactly that dataset's published size: a
    split defined by index is meaningless on a filtered or reordered list, so we refuse it.
    """
    if split == "all":
        return list(items)
    if split not in ("dev", "test"):
        raise ConvirError(f"unknown split {split!r}; use 'dev', 'test' or 'all'")
    if dataset not in SPLITS:
        known = ", ".join(sorted(SPLITS))
        raise ConvirError(
            f"no documented {split!r} split for dataset {dataset!r}; use split='all' "
            f"(dev/test splits exist for: {known})"
        )
    expected = SPLITS[dataset]["test"][1]
    if len(items) != expected:
        raise ConvirError(
            f"the {dataset} splits are defined on its {expected} published records in order, "
            f"but {len(items)} were given"
        )
    start, stop = SPLITS[dataset][split]
    return list(items[start:stop])
