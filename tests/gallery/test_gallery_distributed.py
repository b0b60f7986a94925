"""Ray-distributed encoding (issue 19): the same vectors and the same bad-input report as a
single-process run, a killed driver or worker loses nothing. One local 2-CPU Ray serves the
whole module (starting Ray costs seconds); the CLI runs join it with ``--ray ADDRESS``."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, run_cli
from convir import ingest
from convir.errors import ConvirError
from convir.gallery.distributed import bare_ray_flag, validate_ray
from convir.gallery.ingest import KILL_ENV
from convir.gallery.store import Store

ray = pytest.importorskip("ray")

# Vectors must agree to float32 rounding: workers run the same model on the same batches
# (same padding), only with another torch thread count, which reorders float sums. Measured
# on flickr8k captions: max |diff| 0 to ~1e-7 per component; 1e-5 leaves room for other
# BLAS builds while still failing on any real difference (a wrong caption moves a vector ~1e-1).
ATOL = 1e-5


@pytest.fixture(scope="module")
def ray_address() -> str:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def manifest(shared_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 flickr8k-1k items, one bad manifest line, one item without captions."""
    rows = list(csv.reader((shared_data_dir / "flickr8k-1k" / "captions.txt").open(encoding="utf-8")))[1:]
    caps: OrderedDict[str, list[str]] = OrderedDict()
    for img, cap in rows:
        caps.setdefault(img, []).append(cap)
    path = tmp_path_factory.mktemp("ray") / "g.jsonl"
    lines = [json.dumps({"id": i, "captions": c}) for i, c in list(caps.items())[:24]]
    lines.insert(5, "{not json")
    lines.insert(9, json.dumps({"id": "empty", "captions": []}))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def single(manifest: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, np.ndarray], list]:
    out = tmp_path_factory.mktemp("single") / "ix"
    report = ingest(manifest, out, batch_size=4)
    return _vectors(out), sorted(report.failed)


def _vectors(index: Path) -> dict[str, np.ndarray]:
    store = Store(index)
    try:
        _, ids, matrix, _ = store.snapshot()
        return dict(zip(ids, matrix, strict=True))
    finally:
        store.close()


def _same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert sorted(a) == sorted(b)
    diff = max(float(np.abs(a[i] - b[i]).max()) for i in a)
    assert diff <= ATOL, diff


def test_ray_workers_give_the_single_process_vectors_and_report(
    ray_address: str, manifest: Path, single: tuple, tmp_path: Path
) -> None:
    out = tmp_path / "ix"
    res = run_cli(
        "index", str(manifest), "--out", str(out), "--batch-size", "4", "--ray", ray_address, "--json"
    )
    assert res.returncode == 1, res.stderr  # 1: some items failed (listed), the rest indexed
    report = json.loads(res.stdout)
    assert report["workers"] == 2 and report["added"] == 24
    assert sorted(tuple(f) for f in report["failed"]) == [tuple(f) for f in single[1]]
    _same(_vectors(out), single[0])
    assert run_cli("search", str(out), "a dog in the snow", "--json").returncode == 0


def test_in_process_ray_reuses_the_running_ray(
    ray_address: str, manifest: Path, single: tuple, tmp_path: Path
) -> None:
    report = ingest(manifest, tmp_path / "ix", batch_size=5, ray="local", ray_workers=1)
    assert report.workers == 1 and ray.is_initialized()  # joined the module's Ray, left it running
    _same(_vectors(tmp_path / "ix"), single[0])


def test_a_killed_driver_resumes_and_a_killed_worker_loses_nothing(
    ray_address: str, manifest: Path, single: tuple, tmp_path: Path
) -> None:
    out = tmp_path / "ix"
    env = {**os.environ, KILL_ENV: "encode", "CONVIR_CACHE": str(REPO / ".pytest_cache" / "convir")}
    args = [
        sys.executable,
        "-m",
        "convir.cli",
        "index",
        str(manifest),
        "--out",
        str(out),
        "--batch-size",
        "4",
    ]
    killed = subprocess.run(
        [*args, "--ray", ray_address], capture_output=True, text=True, env=env, timeout=600
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    stored = len(_vectors(out))
    assert 0 < stored < 24  # the batch that landed is kept
    marker = tmp_path / "worker-killed"
    env = {**env, "CONVIR_TEST_KILL_WORKER": str(marker)}
    del env[KILL_ENV]
    again = subprocess.run(
        [*args, "--ray", ray_address, "--json"], capture_output=True, text=True, env=env, timeout=600
    )
    assert marker.exists()  # a worker did die mid-batch; Ray restarted it and re-ran the batch
    assert again.returncode == 1, again.stderr
    report = json.loads(again.stdout)
    assert report["added"] == 24 - stored and report["unchanged"] == stored
    _same(_vectors(out), single[0])


@pytest.mark.parametrize(
    ("address", "workers", "message"),
    [("bad address!", None, "--ray"), (None, 2, "needs --ray"), ("local", 0, "positive")],
)
def test_bad_ray_options_are_refused_before_anything_starts(
    address: str | None, workers: int | None, message: str
) -> None:
    with pytest.raises(ConvirError, match=message):
        validate_ray(address, workers)


def test_a_bare_ray_flag_means_a_local_ray(tmp_path: Path) -> None:
    assert bare_ray_flag(["index", "G", "--out", "X", "--ray"]) == [
        "index",
        "G",
        "--out",
        "X",
        "--ray",
        "local",
    ]
    assert bare_ray_flag(["index", "G", "--ray", "--out", "X"]) == [
        "index",
        "G",
        "--ray",
        "local",
        "--out",
        "X",
    ]
    assert bare_ray_flag(["index", "G", "--ray", "h:6379"]) == ["index", "G", "--ray", "h:6379"]
    assert bare_ray_flag(["search", "IX", "--ray"]) == ["search", "IX", "--ray"]
    res = run_cli("index", str(tmp_path), "--out", str(tmp_path / "ix"), "--ray", "no such host")
    assert res.returncode == 2 and "--ray" in res.stderr and len(res.stderr.strip().splitlines()) == 1
