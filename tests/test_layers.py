"""Data flows one way: the lower layers (gallery, index, encoders, llm, dialog, imagine,
simulate, store, server) never import the evaluation package, so the product runs and is
packaged without it (issue 27)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "convir"
LOWER = (
    "gallery",
    "index",
    "encoders",
    "llm",
    "dialog",
    "imagine",
    "simulate",
    "store",
    "server",
    "datasets",
)


def _imports(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            names += [base] + [f"{base}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names += [a.name for a in node.names]
    return names


def test_lower_layers_never_import_eval() -> None:
    bad = []
    for pkg in LOWER:
        for path in sorted((SRC / pkg).rglob("*.py")):
            for name in _imports(path):
                if name.startswith("convir.eval") or (name.startswith(".") and ".eval" in name):
                    bad.append(f"{path.relative_to(SRC)}: {name}")
    assert not bad, bad
