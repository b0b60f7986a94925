"""Wall time of `convir --help` (heavy libraries are imported lazily).

Usage: python benchmarks/cli_startup.py
"""

from __future__ import annotations

import subprocess
import sys
import time

from _common import machine, pct


def main(runs: int = 20) -> None:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "convir.cli", "--help"], capture_output=True, check=True)
        times.append(time.perf_counter() - t)
    print(
        f"convir --help over {runs} runs: p50 {pct(times, 50) * 1000:.0f} ms, max {max(times) * 1000:.0f} ms "
        f"[{machine()}]"
    )


if __name__ == "__main__":
    main()
