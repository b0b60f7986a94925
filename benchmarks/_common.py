"""Helpers shared by the benchmark scripts (not part of the package)."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CONVIR_SHARED_DATA", REPO.parent / "shared" / "data")).resolve()


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))
