"""End-to-end `convir index` time on coco5k (5,000 items, ~25k captions), model load included.

Usage: python benchmarks/index_speed.py [--runs 1]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import SHARED, machine


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=1)
    args = ap.parse_args()
    for run in range(args.runs):
        out = Path(tempfile.mkdtemp()) / "ix"
        cmd = [
            sys.executable,
            "-m",
            "convir.cli",
            "index",
            "--format",
            "coco-captions",
            str(SHARED / "coco5k"),
            "--out",
            str(out),
            "--json",
        ]
        t = time.perf_counter()
        res = subprocess.run(cmd, capture_output=True, text=True, check=True)
        total = time.perf_counter() - t
        rep = json.loads(res.stdout)
        t = time.perf_counter()
        subprocess.run(cmd, capture_output=True, text=True, check=True)
        noop = time.perf_counter() - t
        print(
            f"run {run}: {rep['total']} items, end to end {total:.1f} s "
            f"(encoding {rep['encode_seconds']:.1f} s, {rep['total'] / rep['encode_seconds']:.0f} items/s); "
            f"unchanged re-run {noop:.1f} s  [{machine()}]"
        )
        shutil.rmtree(out.parent)


if __name__ == "__main__":
    main()
