"""``convir check INDEX_DIR``: is this index sound, and if not, which command repairs it.

Checks SQLite itself (``PRAGMA integrity_check``), every stored item (vector checksum, size,
values and norm, captions and metadata JSON), the published build (every file present,
loadable and matching the sha256 in build.json, its ids exactly the stored items in the
order of its vectors, built from the current item set), that every item's image file exists
under the gallery root, and reports leftovers, naming the damaged items. Two repairs exist:
re-running ``convir index`` re-encodes items whose stored vector is damaged and rebuilds a
damaged or stale build from SQLite; ``--rebuild`` also sets a damaged convir.sqlite aside and
indexes the gallery from scratch. Missing image files are repaired by re-pointing a moved
gallery (``convir index NEW_PLACE --out INDEX --replace``, no re-encoding) or by re-indexing,
which drops the items whose files are gone.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from convir.errors import ConvirError


@dataclass
class CheckReport:
    index_dir: str
    ok_lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    repair: str | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def check_index(root: Path) -> CheckReport:
    """Every problem of the index at ``root``; ConvirError if it is not an index at all."""
    from convir.gallery.lock import is_locked, lock_holder
    from convir.gallery.store import DB_NAME, IndexCorruptError, Store, index_command, source_from_builds

    root = Path(root).expanduser()
    if not root.is_dir():
        raise ConvirError(f"no index at {root}: give the folder written by `convir index ... --out`")
    report = CheckReport(str(root))
    if not (root / DB_NAME).exists():
        raise ConvirError(f"{root} is not a convir index (no {DB_NAME} inside)")
    if is_locked(root):
        holder = lock_holder(root)
        report.notes.append(
            f"a `convir index` run{f' (pid {holder})' if holder else ''} is writing this index now; "
            "the published build stays the last good one until it finishes"
        )
    try:
        store = Store(root)
    except IndexCorruptError as exc:
        report.problems.append(str(exc).split(". `convir check")[0])
        report.repair = index_command(root, source_from_builds(root), rebuild=True)
        return report
    source = None
    try:
        source = store.get("source")
        needs = _check_sqlite(store, report)
        if report.problems:
            report.repair = index_command(root, source, rebuild=needs != "rerun")
            return report
        needs = _check_build(store, report)
        if needs:
            report.repair = index_command(root, source, rebuild=needs == "rebuild")
        images_repair = _check_images(store, report)
        if images_repair and not report.repair:
            report.repair = images_repair
        leftovers = _leftovers(store)
        if leftovers:
            report.notes.append(leftovers)
    except IndexCorruptError as exc:
        report.problems.append(str(exc).split(". `convir check")[0])
        report.repair = index_command(root, source, rebuild=True)
    finally:
        store.close()
    return report


def _check_sqlite(store: Any, report: CheckReport) -> str | None:
    """Problems of convir.sqlite; "rerun" when only stored vectors are damaged (a plain
    `convir index` re-encodes them), "rebuild" otherwise."""
    problems = store.integrity_check()
    if problems:
        shown = "; ".join(problems[:5]) + (f"; ... {len(problems) - 5} more" if len(problems) > 5 else "")
        report.problems.append(f"convir.sqlite fails PRAGMA integrity_check: {shown}")
        return "rebuild"
    dim = store.dim
    spec = store.encoder_spec
    damaged = store.damaged_vectors(thorough=True)
    bad: list[str] = []
    n = 0
    for item_id, _blob, caps, meta in store.iter_rows():
        n += 1
        why = None
        try:
            if not isinstance(json.loads(caps), list) or not isinstance(json.loads(meta), dict):
                why = "captions or metadata of the wrong JSON type"
        except ValueError:
            why = "captions or metadata are not JSON"
        if why:
            bad.append(f"{item_id}: {why}")
    if damaged:
        shown = "; ".join(f"{i}: {why}" for i, why in list(damaged.items())[:10])
        more = f"; ... {len(damaged) - 10} more" if len(damaged) > 10 else ""
        report.problems.append(
            f"{len(damaged)} damaged stored vector(s) in convir.sqlite ({shown}{more}); "
            "re-running `convir index` re-encodes these items from the gallery"
        )
    if bad:
        report.problems.append(f"{len(bad)} damaged item rows in convir.sqlite, e.g. {bad[0]}")
        return "rebuild"
    if damaged:
        return "rerun"
    if not store.has_checksums:
        report.notes.append(
            "the stored vectors have no checksums yet (an index written by an older convir): "
            "the next `convir index` run records them"
        )
    report.ok_lines.append(
        f"convir.sqlite: integrity ok, {n} items, encoder {spec or '(none yet)'}"
        + (f" (dim {dim})" if dim else "")
        + f", items version {store.items_version}"
    )
    return None


def _check_build(store: Any, report: CheckReport) -> str | None:
    """Check the published build: "rerun" when re-running `convir index` finishes it,
    "rebuild" when its files are damaged (``--rebuild`` remakes them from SQLite), else None."""
    from convir.gallery.lock import is_locked
    from convir.index.build import (
        VECTORS_FILE,
        damaged_file_message,
        has_bm25,
        has_checksums,
        read_info,
        verify_build,
    )

    path = store.current_build()
    if path is None:
        report.problems.append("no build was ever published (the first `convir index` run did not finish)")
        return "rerun"
    problems = verify_build(path, expected_ids=store.ids(), expected_dim=store.dim, full=True)
    if problems:
        report.problems += [f"build {path.name}: {p}" for p in problems]
        if damaged_file_message(path / VECTORS_FILE) in problems:
            report.problems += _damaged_build_rows(store, path)
        return "rebuild"
    info = read_info(path)
    if not has_checksums(info):
        report.notes.append(
            f"build {path.name} records no checksums of its files (written by an older convir): "
            "the next `convir index` run rebuilds it with them"
        )
    built_from, now = store.build_items_version, store.items_version
    if built_from != now:
        what = (
            f"build {path.name} was made from items version {built_from}, convir.sqlite is at {now}"
            if built_from is not None
            else f"build {path.name} does not record which item set it was built from (an older convir)"
        )
        if is_locked(store.root):
            report.notes.append(what + " (the running index run will publish a new build)")
        else:
            report.problems.append(what + ": an interrupted run left it stale")
            return "rerun"
    if info.get("store", {}).get("kind", "faiss") != "faiss":
        from convir.store import check_store

        try:
            line, store_problems = check_store(store, info)
        except ConvirError as exc:
            report.problems.append(str(exc))
            return "rerun"
        if store_problems:
            report.problems += store_problems
            return "rerun"
        report.ok_lines.append(line)
    bm25 = "no BM25 (no caption text)"
    if has_bm25(path, info):
        tok = (info.get("bm25") or {}).get("tokenizer") or {}
        stem = tok.get("stemmer") if tok.get("stemmed", True) else None
        bm25 = f"BM25 ({'stemmed: ' + stem if stem else 'not stemmed'})" if tok else "BM25"
    report.ok_lines.append(f"build {path.name}: {info['count']} items, ann {info['ann']}, {bm25}")
    return None


def _check_images(store: Any, report: CheckReport, shown: int = 5) -> str | None:
    """Every item's image file must exist (a moved or unmounted gallery leaves all of them
    missing); the repair: re-point the index at the new place, or re-index to drop the missing."""
    from convir.gallery.store import index_command, repoint_command

    paths = store.image_paths()
    missing = [(i, p) for i, p in sorted(paths.items()) if p is not None and not Path(p).is_file()]
    with_images = sum(p is not None for p in paths.values())
    if not missing:
        if with_images:
            report.ok_lines.append(
                f"image files: all {with_images} found (gallery root {store.gallery_root})"
            )
        return None
    root = store.gallery_root
    examples = ", ".join(f"{i} ({p})" for i, p in missing[:shown])
    more = f", ... {len(missing) - shown} more" if len(missing) > shown else ""
    line = f"{len(missing)} of {with_images} image files are missing: {examples}{more}"
    source = store.get("source")
    if root is not None and not root.is_dir():
        report.problems.append(
            f"{line}. The gallery root {root} does not exist (moved or not mounted?): if the gallery "
            "moved, the repair command below re-points the index (with NEW_PLACE its new folder) "
            "without re-encoding"
        )
        return repoint_command(store.root, source)
    report.problems.append(f"{line}. Re-indexing the gallery drops the items whose files are gone")
    return index_command(store.root, source)


def _damaged_build_rows(store: Any, path: Path) -> list[str]:
    """Name the items whose rows of a damaged vectors.npy differ from their (verified) vectors
    in convir.sqlite; [] when the rows cannot be compared (the ids or shapes differ)."""
    from convir.index.build import IDS_FILE, VECTORS_FILE

    try:
        ids = json.loads((path / IDS_FILE).read_text(encoding="utf-8"))
        vecs = np.load(path / VECTORS_FILE, mmap_mode="r")
        _, want_ids, want, _ = store.snapshot()
    except (OSError, ValueError, EOFError, ConvirError):
        return []
    if ids != want_ids or vecs.shape != want.shape or vecs.dtype != np.float32:
        return []
    rows: list[int] = []
    for start in range(0, len(ids), 65_536):  # bit-exact comparison, a block of rows at a time
        have, exp = vecs[start : start + 65_536].view(np.uint32), want[start : start + 65_536].view(np.uint32)
        rows += (start + np.flatnonzero(np.any(have != exp, axis=1))).tolist()
    if not rows:
        return []
    shown = ", ".join(ids[r] for r in rows[:10]) + (f" and {len(rows) - 10} more" if len(rows) > 10 else "")
    return [f"build {path.name}: {VECTORS_FILE} differs from convir.sqlite for {len(rows)} item(s): {shown}"]


def _leftovers(store: Any) -> str | None:
    builds = store.builds_dir
    published = store.published
    extra = [p.name for p in builds.iterdir() if p.name != published] if builds.is_dir() else []
    aside = sorted(
        p.name for p in store.root.glob("convir.sqlite.corrupt-*") if not p.name.endswith(("-wal", "-shm"))
    )
    parts = []
    if extra:
        parts.append(
            f"{len(extra)} unused folder(s) in builds/ ({', '.join(sorted(extra)[:5])}): an older build a "
            "reader still serves or debris of a killed run; the next `convir index` run removes them"
        )
    if aside:
        parts.append(f"damaged databases set aside by --rebuild: {', '.join(aside)} (safe to delete)")
    return "; ".join(parts) or None
