"""Near-identical photos of one index (``convir duplicates IX``, issue 31).

Two items are duplicates when both tests agree:

* their stored vectors are close: cosine similarity >= ``min_similarity`` (default 0.95), found
  with a faiss range search over the index's own vectors (so any encoder works);
* their image files look alike: the Hamming distance of their 64-bit perceptual hashes (pHash,
  imagehash) is <= ``max_hash_distance`` (default 8). A resized or re-compressed copy is within
  2-4 bits; different photos are ~32 apart. Where a hash cannot be made (a caption-only item,
  a missing file, imagehash not installed) the vector test decides alone.

Pairs are joined into groups (union-find); each group names the item to keep: the largest
image (pixels), then the smallest id.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from convir.errors import ConvirError

MIN_SIMILARITY = 0.95
MAX_HASH_DISTANCE = 8


@dataclass
class DuplicateGroup:
    keep: str
    items: list[dict[str, Any]] = field(default_factory=list)  # id, path, similarity, hash_distance


def _phash(path: str | None) -> Any:
    if path is None or not Path(path).is_file():
        return None
    try:
        import imagehash
    except ImportError:
        return None
    from convir.gallery.photometa import open_image

    try:
        with open_image(Path(path)) as im:
            return imagehash.phash(im), im.size[0] * im.size[1]
    except Exception:  # an unreadable file: the vector test decides
        return None


def find_duplicates(
    root: Path, min_similarity: float = MIN_SIMILARITY, max_hash_distance: int = MAX_HASH_DISTANCE
) -> list[DuplicateGroup]:
    """Groups of near-identical items of the index at ``root`` (largest groups first)."""
    import faiss

    from convir.gallery.store import DB_NAME, Store

    root = Path(root).expanduser()
    if not (root / DB_NAME).exists():
        raise ConvirError(f"{root} is not a convir index (no {DB_NAME} inside)")
    if not 0.0 < min_similarity <= 1.0:
        raise ConvirError(f"--min-similarity must be in (0, 1], not {min_similarity}")
    store = Store(root)
    try:
        paths = store.image_paths()
        ids = sorted(paths)
        vecs = store.vectors(ids)
    finally:
        store.close()
    if len(ids) < 2:
        return []
    x = np.stack([vecs[i] for i in ids]).astype(np.float32)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    lims, sims, nbrs = index.range_search(x, float(min_similarity) - 1e-6)
    hashes: dict[str, Any] = {}

    def hashed(i: str) -> Any:
        if i not in hashes:
            hashes[i] = _phash(paths[i])
        return hashes[i]

    parent = {i: i for i in ids}

    def find(i: str) -> str:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    best: dict[str, tuple[float, int | None]] = {}
    for a in range(len(ids)):
        for k in range(lims[a], lims[a + 1]):
            b = int(nbrs[k])
            if b <= a:
                continue
            ha, hb = hashed(ids[a]), hashed(ids[b])
            dist = int(ha[0] - hb[0]) if ha and hb else None
            if dist is not None and dist > max_hash_distance:
                continue
            parent[find(ids[a])] = find(ids[b])
            for i in (ids[a], ids[b]):
                sim = float(sims[k])
                if i not in best or sim > best[i][0]:
                    best[i] = (sim, dist)
    members: dict[str, list[str]] = {}
    for i in best:
        members.setdefault(find(i), []).append(i)
    groups = []
    for group in members.values():
        keep = min(group, key=lambda i: (-(hashed(i)[1] if hashed(i) else 0), i))
        items = [
            {"id": i, "path": paths[i], "similarity": round(best[i][0], 4), "hash_distance": best[i][1]}
            for i in sorted(group, key=lambda i: (i != keep, i))
        ]
        groups.append(DuplicateGroup(keep, items))
    groups.sort(key=lambda g: (-len(g.items), g.keep))
    return groups


def duplicate_of(
    ids: list[str],
    vectors: dict[str, np.ndarray],
    paths: dict[str, str | None],
    min_similarity: float = MIN_SIMILARITY,
    max_hash_distance: int = MAX_HASH_DISTANCE,
) -> dict[str, str]:
    """Within one ranked result list: id -> the higher-ranked result it duplicates (same tests as
    :func:`find_duplicates`), so the page can hide the copies and keep the best-ranked one."""
    out: dict[str, str] = {}
    have = [i for i in ids if i in vectors]
    if len(have) < 2:
        return out
    x = np.stack([vectors[i] for i in have]).astype(np.float32)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    sims = x @ x.T
    hashes: dict[str, Any] = {}
    for b in range(1, len(have)):
        for a in range(b):
            if have[a] in out or sims[a, b] < min_similarity - 1e-6:
                continue
            for i in (have[a], have[b]):
                if i not in hashes:
                    hashes[i] = _phash(paths.get(i))
            ha, hb = hashes[have[a]], hashes[have[b]]
            if ha and hb and ha[0] - hb[0] > max_hash_distance:
                continue
            out[have[b]] = have[a]
            break
    return out
