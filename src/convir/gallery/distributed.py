"""Where gallery batches are encoded: in this process, or by Ray workers (``--ray [ADDRESS]``).

``convir index GALLERY --out IX --ray`` starts a local Ray (one CPU share per worker) and
``--ray HOST:PORT`` / ``--ray ray://HOST:10001`` / ``--ray auto`` joins a running cluster.
Either way the work is split the same: the driver (this process, holding the index lock)
reads the gallery, fingerprints items, cuts the pending ones into the same batches as a
single-process run and sends them to a pool of Ray actors, one per worker, each of which
loads the encoder once. Results come back to the driver, which alone writes SQLite, one batch
per transaction, as they arrive. So resumability is unchanged (a killed run keeps every
stored batch and the next run encodes only the rest), the bad-input report is the same
(workers return their per-item failures), and a killed worker is restarted by Ray and its
batch re-run (``max_restarts`` / ``max_task_retries``), losing nothing.

Workers read image files by path: on a cluster the gallery must be mounted at the same path
on every node (captions-only galleries need no files). Each worker gets ``CPUs // workers``
CPUs and as many torch threads.

Test hook: ``CONVIR_TEST_KILL_WORKER=MARKER`` makes the first worker that encodes a batch
SIGKILL itself once (it creates MARKER first, so its restarted self carries on).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from convir.errors import ConvirError

LOCAL = "local"
DEFAULT_WORKERS = 2
IN_FLIGHT_PER_WORKER = 2
KILL_WORKER_ENV = "CONVIR_TEST_KILL_WORKER"
# passed to the workers of a cluster, whose nodes do not inherit this shell's environment
FORWARDED_ENV = (
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "HF_HOME",
    "TOKENIZERS_PARALLELISM",
    "CONVIR_CACHE",
)
_ADDRESS = re.compile(r"^(auto|local|ray://[\w.\-]+(:\d+)?|[\w.\-]+:\d+)$")

Chunk = list[tuple[Any, str, str | None]]  # (SourceItem, hash, stat) as ingest cuts them


def validate_ray(address: str | None, workers: int | None) -> None:
    """--ray / --ray-workers, checked before anything starts."""
    if workers is not None:
        if address is None:
            raise ConvirError("--ray-workers needs --ray (a local Ray, or --ray ADDRESS for a cluster)")
        if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
            raise ConvirError(f"--ray-workers must be a positive integer, not {workers!r}")
    if address is None:
        return
    if not _ADDRESS.match(address):
        raise ConvirError(
            f"--ray {address!r}: give nothing (a local Ray), auto (the cluster this machine belongs to), "
            "HOST:PORT (a head node's GCS, e.g. 10.0.0.5:6379) or ray://HOST:10001 (Ray Client)"
        )
    try:
        import ray  # noqa: F401
    except ImportError as exc:
        raise ConvirError(f"--ray needs Ray: pip install 'convir[scale]' ({exc})") from exc


def open_encoding(
    spec: str,
    long_text: str,
    batch_size: int,
    max_pixels: int | None,
    ray: str | None = None,
    workers: int | None = None,
    settings: Any = None,
) -> Any:
    """The encoder(s) for a run: :class:`LocalEncoding`, or :class:`RayEncoding` with ``ray``;
    ``settings`` is an :class:`convir.encoders.pipeline.EncodeSettings`."""
    if ray is None:
        return LocalEncoding(spec, long_text, max_pixels, settings)
    return RayEncoding(spec, long_text, max_pixels, ray, workers or DEFAULT_WORKERS, settings)


class LocalEncoding:
    """Encode batches in this process (the default)."""

    workers = 0

    def __init__(self, spec: str, long_text: str, max_pixels: int | None, settings: Any = None) -> None:
        from convir.encoders import has_image_tower, load_encoder
        from convir.encoders.pipeline import EncodeSettings

        self.settings = settings or EncodeSettings()
        if self.settings.runtime in ("onnx", "onnx-int8"):
            from convir.encoders.onnx_image import OnnxImageEncoder

            int8 = self.settings.runtime == "onnx-int8"
            self.encoder: Any = OnnxImageEncoder(spec, self.settings.threads, int8=int8)
        else:
            self.settings.apply_threads()
            self.encoder = load_encoder(spec, long_text=long_text)  # type: ignore[arg-type]
        self.spec: str = self.encoder.spec
        self.dim = int(self.encoder.dim)
        self.use_images = has_image_tower(self.encoder)
        self.max_pixels = max_pixels
        self._pool: Any = None

    def encode(self, chunks: list[Chunk]) -> Iterator[tuple[Chunk, list[Any], list[tuple[str, str]]]]:
        from convir.gallery.ingest import _encode_batch

        if self.use_images and self._pool is None and self.settings.workers() > 0:
            from concurrent.futures import ThreadPoolExecutor

            # one pool for the whole run: no thread start-up per saved batch
            self._pool = ThreadPoolExecutor(self.settings.workers(), thread_name_prefix="convir-decode")
        for chunk in chunks:
            done, failed = _encode_batch(
                self.encoder,
                [c[0] for c in chunk],
                self.use_images,
                self.max_pixels,
                self.settings,
                self._pool,
            )
            yield chunk, done, failed

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


class EncoderWorker:
    """A Ray actor: one encoder, loaded once, encoding the batches the driver sends."""

    def __init__(
        self, spec: str, long_text: str, max_pixels: int | None, threads: int, settings: Any = None
    ) -> None:
        import torch

        from convir.encoders import has_image_tower, load_encoder

        torch.set_num_threads(max(1, threads))
        self.encoder = load_encoder(spec, long_text=long_text)  # type: ignore[arg-type]
        self.use_images = has_image_tower(self.encoder)
        self.max_pixels = max_pixels
        self.settings = settings

    def info(self) -> tuple[str, int, bool, int]:
        return self.encoder.spec, int(self.encoder.dim), self.use_images, os.getpid()

    def encode(self, items: list[Any]) -> tuple[list[tuple[Any, Any, str]], list[tuple[str, str]]]:
        from convir.gallery.ingest import _encode_batch

        marker = os.environ.get(KILL_WORKER_ENV)
        if marker and not Path(marker).exists():
            Path(marker).write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
        return _encode_batch(self.encoder, items, self.use_images, self.max_pixels, self.settings)


class RayEncoding:
    """Encode batches on a pool of Ray actors; results arrive in completion order."""

    def __init__(
        self,
        spec: str,
        long_text: str,
        max_pixels: int | None,
        address: str,
        workers: int,
        settings: Any = None,
    ) -> None:
        import ray

        self._ray = ray
        self.started = False
        self.actors: list[Any] = []
        # Ray's driver threads print worker deaths and the like on stdout: keep stdout for
        # the command's own output (`convir index --json`) while Ray runs
        self._stdout = contextlib.redirect_stdout(sys.stderr)
        self._stdout.__enter__()
        env = {k: os.environ[k] for k in (*FORWARDED_ENV, KILL_WORKER_ENV) if k in os.environ}
        try:
            if not ray.is_initialized():
                if address == LOCAL:
                    ray.init(
                        address="local",
                        num_cpus=os.cpu_count() or 1,
                        include_dashboard=False,
                        log_to_driver=False,
                        logging_level=logging.ERROR,
                        runtime_env={"env_vars": env},
                    )
                else:
                    ray.init(
                        address=address,
                        log_to_driver=False,
                        logging_level=logging.ERROR,
                        runtime_env={"env_vars": env},
                    )
                self.started = True
        except ConvirError:
            raise
        except Exception as exc:
            where = "start a local Ray" if address == LOCAL else f"reach the Ray cluster at {address}"
            raise ConvirError(f"cannot {where}: {' '.join(str(exc).split())[:300]}") from exc
        try:
            cpus = float(ray.cluster_resources().get("CPU", 1))
            per = max(1, int(cpus // workers))
            actor = ray.remote(num_cpus=per, max_restarts=2, max_task_retries=2)(EncoderWorker)
            threads = settings.threads if settings is not None and settings.threads else per
            self.actors = [
                actor.remote(spec, long_text, max_pixels, threads, settings) for _ in range(workers)
            ]
            infos = ray.get([a.info.remote() for a in self.actors])
        except BaseException:
            self.close()
            raise
        self.spec, self.dim, self.use_images = infos[0][0], infos[0][1], infos[0][2]
        self.pids = [i[3] for i in infos]
        self.workers = workers
        if any(i[:3] != infos[0][:3] for i in infos):  # pragma: no cover - nodes with other models
            self.close()
            raise ConvirError(f"the Ray workers loaded different encoders: {sorted({i[0] for i in infos})}")

    def encode(self, chunks: list[Chunk]) -> Iterator[tuple[Chunk, list[Any], list[tuple[str, str]]]]:
        ray = self._ray
        todo = list(enumerate(chunks))[::-1]
        running: dict[Any, tuple[int, int]] = {}  # ref -> (chunk index, actor index)
        load = [0] * len(self.actors)

        def submit() -> None:
            while todo:
                free = [a for a in range(len(self.actors)) if load[a] < IN_FLIGHT_PER_WORKER]
                if not free:
                    return
                a = min(free, key=lambda x: load[x])
                i, chunk = todo.pop()
                ref = self.actors[a].encode.remote([c[0] for c in chunk])
                running[ref] = (i, a)
                load[a] += 1

        submit()
        while running:
            ready, _ = ray.wait(list(running), num_returns=1)
            i, a = running.pop(ready[0])
            load[a] -= 1
            try:
                done, failed = ray.get(ready[0])
            except Exception as exc:
                raise ConvirError(
                    f"a Ray worker failed on a batch ({' '.join(str(exc).split())[:300]}); batches already "
                    "stored are kept: re-run the command to continue"
                ) from exc
            submit()
            yield chunks[i], done, failed

    def close(self) -> None:
        ray = self._ray
        for a in self.actors:
            with contextlib.suppress(Exception):  # already gone
                ray.kill(a)
        self.actors = []
        if self.started and ray.is_initialized():
            ray.shutdown()
            self.started = False
        if self._stdout is not None:
            self._stdout.__exit__(None, None, None)
            self._stdout = None


def bare_ray_flag(argv: list[str]) -> list[str]:
    """``convir index ... --ray`` with no address means a local Ray: click options cannot
    take an optional value, so a bare ``--ray`` (last, or before another option) becomes
    ``--ray local``."""
    if not argv or argv[0] != "index" or "--ray" not in argv:
        return argv
    out = list(argv)
    for i in range(len(out) - 1, -1, -1):
        if out[i] == "--ray" and (i + 1 == len(out) or out[i + 1].startswith("-")):
            out.insert(i + 1, LOCAL)
    return out
