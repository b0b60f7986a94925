"""Image encoding as a pipeline: decoding and resizing run in threads while the model runs.

Decoding a JPEG, resizing it and turning it into a tensor is mostly C code that releases the
GIL (Pillow, torch), so a small thread pool prepares the next images while the model encodes
the current batch: the model never waits for the disk or the decoder. Threads rather than
processes: nothing to pickle, no second copy of the model and no fork start-up, so peak memory
stays the model plus a couple of batches of pixels.

:class:`EncodeSettings` holds the knobs (``convir index --image-batch/--threads/--decode-workers``);
its defaults are chosen for the machine: torch's own intra-op threads (one per physical core)
and two decoding threads, which measured best on 2 and more cores (docs/benchmarks.md,
"Performance (issue 18)").
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from convir.errors import ConvirError

DEFAULT_IMAGE_BATCH = 32
MAX_DECODE_WORKERS = 4


def default_decode_workers() -> int:
    """Two threads keep one batch ahead of the model; more only help when cores are idle."""
    return max(1, min(2, os.cpu_count() or 1))


@dataclass(frozen=True)
class EncodeSettings:
    """How gallery images are encoded; None = chosen for the machine at run time."""

    image_batch: int = DEFAULT_IMAGE_BATCH  # images per model call
    threads: int | None = None  # torch intra-op threads (None: torch's default, one per core)
    decode_workers: int | None = None  # decoding threads (0: decode in the model's thread)
    runtime: str = "torch"  # "onnx" / "onnx-int8": the image tower on ONNX Runtime (encoders.onnx_image)

    def validate(self) -> EncodeSettings:
        """One clear line per bad value, before any model loads."""
        for name, value, low in (
            ("--image-batch", self.image_batch, 1),
            ("--threads", self.threads, 1),
            ("--decode-workers", self.decode_workers, 0),
        ):
            if value is None and name != "--image-batch":
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                what = "a positive integer" if low else "0 (decode in the model's thread) or more"
                raise ConvirError(f"{name} must be {what}, not {value!r}")
        if self.decode_workers is not None and self.decode_workers > 64:
            raise ConvirError(f"--decode-workers {self.decode_workers}: more threads than is useful (<= 64)")
        from convir.encoders.onnx_image import RUNTIMES

        if self.runtime not in RUNTIMES:
            raise ConvirError(f"unknown --runtime {self.runtime!r}; choose one of: {', '.join(RUNTIMES)}")
        return self

    def workers(self) -> int:
        return default_decode_workers() if self.decode_workers is None else self.decode_workers

    def apply_threads(self) -> None:
        """Set torch's intra-op threads when asked (a process-wide setting, so only on request)."""
        if self.threads is not None:
            import torch

            if torch.get_num_threads() != self.threads:
                torch.set_num_threads(self.threads)


def _prepare_fn(
    encoder: Any, max_pixels: int | None
) -> tuple[Callable[[Path], Any], Callable[[list[Any]], Any]]:
    """(path -> model input, list of inputs -> vectors) for ``encoder``.

    Encoders with ``prepare_image``/``encode_prepared`` (open_clip) get their resizing and
    tensor conversion done in the worker threads too; others decode there and preprocess in
    ``encode_pil``."""
    from convir.encoders.base import _loader

    load = _loader(encoder, max_pixels)
    prepare = getattr(encoder, "prepare_image", None)
    encode_prepared = getattr(encoder, "encode_prepared", None)
    if prepare is not None and encode_prepared is not None:
        return (lambda p: prepare(load(p))), encode_prepared
    return load, encoder.encode_pil


def _batches(
    paths: Sequence[Path | str], step: int, prepare: Callable[[Path], Any], pool: ThreadPoolExecutor | None
) -> Iterator[tuple[list[int], list[Any], list[tuple[int, str]]]]:
    """(indices, prepared inputs, failures) per batch of ``step`` paths, in order.

    With a pool, up to two batches are in flight ahead of the consumer, so decoding overlaps
    the model and at most ~3 batches of pixels are held at once."""
    from convir.encoders.base import ImageReadError

    def run(i: int) -> tuple[int, Any, str | None]:
        try:
            return i, prepare(Path(paths[i])), None
        except ImageReadError as exc:
            return i, None, exc.reason

    starts = list(range(0, len(paths), step))

    def submit(start: int) -> list[Future[tuple[int, Any, str | None]]] | list[tuple[int, Any, str | None]]:
        idx = range(start, min(start + step, len(paths)))
        if pool is None:
            return [run(i) for i in idx]
        return [pool.submit(run, i) for i in idx]

    ahead = 2 if pool is not None else 0
    queue = [submit(s) for s in starts[: ahead + 1]]
    nxt = len(queue)
    while queue:
        batch = queue.pop(0)
        if nxt < len(starts):
            queue.append(submit(starts[nxt]))
            nxt += 1
        results = [r.result() if isinstance(r, Future) else r for r in batch]
        good = [(i, x) for i, x, why in results if why is None]
        yield (
            [i for i, _ in good],
            [x for _, x in good],
            [(i, why) for i, _, why in results if why is not None],
        )


def encode_images_pipelined(
    encoder: Any,
    paths: Sequence[Path | str],
    settings: EncodeSettings | None = None,
    max_pixels: int | None = None,
    pool: ThreadPoolExecutor | None = None,
) -> tuple[np.ndarray, list[int], list[tuple[int, str]]]:
    """``(vectors, ok_indices, failures)`` like :func:`convir.encoders.base.encode_images_skipping`,
    with decoding in ``settings.workers()`` threads (or the given ``pool``) ahead of the model.

    The vectors are the same as a sequential run's: the same inputs reach the model in the
    same batches, only prepared earlier."""
    settings = settings or EncodeSettings()
    prepare, encode = _prepare_fn(encoder, max_pixels)
    chunks: list[np.ndarray] = []
    ok: list[int] = []
    failures: list[tuple[int, str]] = []
    own = pool is None and settings.workers() > 0
    if own:
        pool = ThreadPoolExecutor(settings.workers(), thread_name_prefix="convir-decode")
    try:
        for idx, inputs, bad in _batches(paths, max(1, settings.image_batch), prepare, pool):
            failures += bad
            if idx:
                chunks.append(np.asarray(encode(inputs), dtype=np.float32))
                ok += idx
            del inputs  # free the pixels before the next batch is prepared
    finally:
        if own and pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    vectors = np.concatenate(chunks) if chunks else np.zeros((0, encoder.dim), dtype=np.float32)
    return vectors, ok, failures


__all__ = ["DEFAULT_IMAGE_BATCH", "EncodeSettings", "default_decode_workers", "encode_images_pipelined"]
