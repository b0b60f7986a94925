"""Embed a search space (e.g. ChatIR's 50k COCO images) into the matrix ``eval chatir`` ranks.

``convir embed corpus IMAGES_ROOT --search-space LIST.json --encoder SPEC --out corpus.npy``
writes row i = the L2-normalised image embedding of ``IMAGES_ROOT / LIST[i]``.

* **Resumable.** Work goes to ``OUT.parts/`` in shards of :data:`SHARD_ROWS` rows, each written
  atomically (temporary file + rename), so a shard file that exists is complete: a killed run
  continues with the first missing shard and loses at most one shard's work. ``meta.json`` there
  records what the shards were made with; another encoder, dtype, list or image folder is refused.
* **Never a silent zero row.** A missing or undecodable image is recorded (row, path, reason) in
  the shard's ``.failed.json`` and ``OUT.failures.json``; the final file is then NOT written and
  the run exits 1. Fix or restore the files and run the same command again: only the failed rows
  are read again. (A corpus with holes would change the search space and every published number.)
* **Output.** ``.npy`` (float32 [N, d]) or ``.pt``/``.pth``, the official ChatIR cache
  ``torch.save((ids, vectors), path)`` that ChatIR's and PlugIR's ``eval.py`` also read; plus
  ``OUT.json`` (encoder, dtype, list checksum, size, time), which ``eval chatir`` checks its
  ``--text-encoder`` against.
* **Fast.** Images are decoded by ``workers`` threads one batch ahead of the model; the model runs
  on ``device`` in ``dtype`` with ``batch_size`` images per call.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from convir.atomic import atomic_path, write_json
from convir.errors import ConvirError

SHARD_ROWS = 1024
OUTPUT_SUFFIXES = (".npy", ".pt", ".pth")
_SHOWN = 20


@dataclass
class EmbedResult:
    out: Path
    rows: int
    dim: int
    encoded: int  # images embedded by this run (the rest came from earlier shards)
    seconds: float
    failures: list[dict[str, Any]] = field(default_factory=list)
    up_to_date: bool = False

    @property
    def ok(self) -> bool:
        return not self.failures


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def parts_dir(out: Path) -> Path:
    return out.with_name(out.name + ".parts")


def sidecar(out: Path) -> Path:
    return out.with_name(out.name + ".json")


def failures_file(out: Path) -> Path:
    return out.with_name(out.name + ".failures.json")


@dataclass
class CorpusJob:
    """A validated embedding job (nothing loaded yet)."""

    images_root: Path
    search_space: Path
    paths: list[str]
    out: Path
    encoder: str
    device: str
    dtype: str
    batch_size: int
    workers: int

    @property
    def identity(self) -> dict[str, Any]:
        """What the shards depend on; a resumed run must match it exactly."""
        return {
            "encoder": self.encoder,
            "dtype": self.dtype,
            "search_space_sha256": _sha256(self.search_space),
            "rows": len(self.paths),
            "shard_rows": SHARD_ROWS,
            "images_root": str(self.images_root),
        }


def prepare(
    images_root: Path,
    search_space: Path,
    encoder: str,
    out: Path,
    device: str = "cpu",
    dtype: str = "auto",
    batch_size: int = 64,
    workers: int | None = None,
) -> CorpusJob:
    """Check everything that can be checked before a model loads."""
    from convir.datasets import load_search_space
    from convir.encoders.base import check_dtype, resolve_device
    from convir.specs import REGISTRY

    comp, _ = REGISTRY.parse("encoder", encoder)
    if comp.name == "caption":
        raise ConvirError(f"{encoder} has no image tower: use an image-text encoder (blip:, open_clip:, hf:)")
    out = Path(out)
    if out.suffix not in OUTPUT_SUFFIXES:
        raise ConvirError(
            f"--out {out}: write .npy (a float32 matrix) or .pt/.pth (the official (ids, vectors))"
        )
    if out.is_dir():
        raise ConvirError(f"--out {out} is a folder; give a file name such as corpus.npy")
    device = resolve_device(device)
    dtype = check_dtype(dtype, device)
    if batch_size < 1:
        raise ConvirError("--batch-size must be 1 or more")
    workers = workers if workers is not None else min(8, os.cpu_count() or 1)
    if workers < 1:
        raise ConvirError("--workers must be 1 or more")
    images_root = Path(images_root).expanduser().resolve()
    if not images_root.is_dir():
        raise ConvirError(f"images folder {images_root} does not exist")
    paths = load_search_space(search_space)
    if not paths:
        raise ConvirError(f"{search_space} lists no images")
    present = [p for p in paths[:50] if (images_root / p).is_file()]
    if not present:
        first = images_root / paths[0]
        hint = ""
        if (images_root / Path(paths[0]).name).is_file():
            hint = f"; the files are directly in {images_root}: give its parent folder"
        raise ConvirError(
            f"{first} not found (nor any of the first images listed in {search_space}): IMAGES_ROOT "
            f"must be the folder that holds the listed paths, e.g. the one containing "
            f"{Path(paths[0]).parts[0]}/{hint}"
        )
    return CorpusJob(
        images_root, Path(search_space), paths, out, encoder.strip(), device, dtype, batch_size, workers
    )


def _open_parts(job: CorpusJob) -> Path:
    parts = parts_dir(job.out)
    meta_path = parts / "meta.json"
    identity = job.identity
    if meta_path.is_file():
        try:
            old = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConvirError(f"cannot read {meta_path} ({exc}); delete {parts} to start over") from exc
        if old != identity:
            changed = sorted(k for k in identity if old.get(k) != identity[k])
            raise ConvirError(
                f"{parts} holds shards of another run ({', '.join(changed)} differ); delete it to start "
                "over, or rerun with the same settings to resume"
            )
    else:
        parts.mkdir(parents=True, exist_ok=True)
        write_json(meta_path, identity)
    return parts


def _shard_files(parts: Path, s: int) -> tuple[Path, Path]:
    return parts / f"{s:05d}.npy", parts / f"{s:05d}.failed.json"


def _read_failed(path: Path) -> dict[int, str]:
    """A shard's ``{row: reason}`` of images still missing from it."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return {int(r): str(why) for r, why in data.items()}
    except (OSError, ValueError, AttributeError) as exc:
        raise ConvirError(f"cannot read {path} ({exc}); delete it and its shard to redo them") from exc


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, array)


def _load(encoder: Any, path: Path) -> tuple[Any, str | None]:
    from convir.encoders.base import ImageReadError

    try:
        return encoder.load_image(path), None
    except ImageReadError as exc:
        return None, exc.reason


class _Prefetcher:
    """Decodes the next batch of images in worker threads while the model encodes this one."""

    def __init__(self, encoder: Any, root: Path, paths: Sequence[str], workers: int) -> None:
        self.encoder, self.root, self.paths = encoder, root, paths
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="convir-decode")

    def submit(self, rows: Sequence[int]) -> list[Future[tuple[Any, str | None]]]:
        return [self.pool.submit(_load, self.encoder, self.root / self.paths[r]) for r in rows]

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def _encode_rows(
    job: CorpusJob,
    encoder: Any,
    rows: list[int],
    prefetch: _Prefetcher,
    on_progress: Callable[[int], None] | None,
) -> tuple[dict[int, np.ndarray], dict[int, str]]:
    """Vectors of the readable rows and (row -> reason) for the rest."""
    batches = [rows[i : i + job.batch_size] for i in range(0, len(rows), job.batch_size)]
    vectors: dict[int, np.ndarray] = {}
    failed: dict[int, str] = {}
    pending = prefetch.submit(batches[0]) if batches else []
    for b, batch in enumerate(batches):
        loaded = [f.result() for f in pending]
        pending = prefetch.submit(batches[b + 1]) if b + 1 < len(batches) else []
        good = [(r, img) for r, (img, _) in zip(batch, loaded, strict=True) if img is not None]
        for r, (img, reason) in zip(batch, loaded, strict=True):
            if img is None:
                failed[r] = reason or "unreadable"
        if good:
            vecs = encoder.encode_pil([img for _, img in good])
            for (r, _), v in zip(good, vecs, strict=True):
                vectors[r] = v
        if on_progress:
            on_progress(len(batch))
    return vectors, failed


def embed_corpus(
    job: CorpusJob,
    on_start: Callable[[int, int], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> EmbedResult:
    """Run (or resume) the job; see the module docstring. ``on_start(total, already_done)``."""
    from convir.encoders import has_image_tower, load_encoder

    t0 = time.perf_counter()
    meta_out = sidecar(job.out)
    if job.out.is_file() and meta_out.is_file():
        try:
            meta = json.loads(meta_out.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            meta = {}
        if {k: meta.get(k) for k in job.identity} == job.identity:
            return EmbedResult(job.out, int(meta["rows"]), int(meta["dim"]), 0, 0.0, up_to_date=True)
    if job.out.exists():
        raise ConvirError(f"{job.out} exists and was not made by this command with these settings; remove it")
    parts = _open_parts(job)
    n = len(job.paths)
    shards = list(range((n + SHARD_ROWS - 1) // SHARD_ROWS))
    todo: dict[int, list[int]] = {}
    for s in shards:
        vec_file, fail_file = _shard_files(parts, s)
        rows = list(range(s * SHARD_ROWS, min(n, (s + 1) * SHARD_ROWS)))
        if not vec_file.is_file():
            todo[s] = rows
        elif fail_file.is_file():
            todo[s] = sorted(int(r) for r in _read_failed(fail_file))
    if on_start:
        on_start(n, n - sum(len(r) for r in todo.values()))
    encoder = None
    encoded = 0
    if todo:
        encoder = load_encoder(job.encoder, device=job.device, dtype=job.dtype)
        if not has_image_tower(encoder):
            raise ConvirError(f"{job.encoder} has no image tower: use an image-text encoder")
        prefetch = _Prefetcher(encoder, job.images_root, job.paths, job.workers)
        try:
            for s, rows in todo.items():
                vec_file, fail_file = _shard_files(parts, s)
                first = s * SHARD_ROWS
                size = min(n, first + SHARD_ROWS) - first
                if vec_file.is_file():
                    shard = np.load(vec_file)
                else:
                    shard = np.full((size, encoder.dim), np.nan, dtype=np.float32)
                vectors, failed = _encode_rows(job, encoder, rows, prefetch, on_progress)
                for r, v in vectors.items():
                    shard[r - first] = v
                encoded += len(vectors)
                if failed:  # the failure list first: a shard file without it would read as complete
                    write_json(fail_file, {str(r): why for r, why in sorted(failed.items())})
                _save_npy(vec_file, shard)
                if not failed:
                    fail_file.unlink(missing_ok=True)
        finally:
            prefetch.close()
    failures: list[dict[str, Any]] = []
    for s in shards:
        fail_file = _shard_files(parts, s)[1]
        if fail_file.is_file():
            for r, why in _read_failed(fail_file).items():
                failures.append({"row": r, "path": job.paths[r], "reason": why})
    seconds = time.perf_counter() - t0
    if failures:
        failures.sort(key=lambda f: f["row"])
        write_json(failures_file(job.out), {"search_space": str(job.search_space), "failures": failures})
        dim = (
            encoder.dim
            if encoder is not None
            else int(np.load(_shard_files(parts, 0)[0], mmap_mode="r").shape[1])
        )
        return EmbedResult(job.out, n, dim, encoded, seconds, failures)
    matrix = np.concatenate([np.load(_shard_files(parts, s)[0]) for s in shards]).astype(np.float32)
    if matrix.shape[0] != n or not np.all(np.isfinite(matrix)):
        raise ConvirError(f"{parts} is inconsistent (rows missing or not finite); delete it and run again")
    _write_output(job.out, matrix)
    spec = encoder.spec if encoder is not None else job.encoder
    write_json(
        meta_out,
        {
            **job.identity,
            "encoder_canonical": spec,
            "dim": int(matrix.shape[1]),
            "search_space": str(job.search_space),
            "format": "npy float32 [N, d]" if job.out.suffix == ".npy" else "torch (ids, vectors)",
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
    )
    failures_file(job.out).unlink(missing_ok=True)
    shutil.rmtree(parts, ignore_errors=True)
    return EmbedResult(job.out, n, int(matrix.shape[1]), encoded, seconds)


def _write_output(out: Path, matrix: np.ndarray) -> None:
    if out.suffix == ".npy":
        _save_npy(out, matrix)
        return
    import torch

    with atomic_path(out) as tmp:
        torch.save((torch.arange(matrix.shape[0]), torch.from_numpy(matrix)), tmp)


__all__ = [
    "SHARD_ROWS",
    "CorpusJob",
    "EmbedResult",
    "embed_corpus",
    "failures_file",
    "parts_dir",
    "prepare",
    "sidecar",
]
