#!/usr/bin/env bash
# Create .venv and install convir into it. Usage: scripts/setup.sh [EXTRAS]  (default: all)
# torch comes first and pinned: torch==2.13.0 resolves to the local CPU wheel, while an
# unpinned torch (asked for by any dependency) would pull several GB of CUDA packages.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-all}"
py="${PYTHON:-$(command -v python3.11 || command -v python3)}"
if [ ! -x .venv/bin/python ]; then
    "$py" -m venv .venv
fi
pip() { .venv/bin/python -m pip --disable-pip-version-check "$@"; }
# llama-cpp-python compiles llama.cpp; a native (-march=native) build can die with
# "Illegal instruction" on other CPUs, so target a portable AVX2 baseline (~5 min on 2 cores).
export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON}"
pip install -q torch==2.13.0
pip install -q -c constraints.txt -e ".[${extras}]"
echo "convir installed in .venv (extras: ${extras}); run: .venv/bin/convir --help"
