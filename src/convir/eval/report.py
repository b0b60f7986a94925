"""Readable reports and comparison plots of evaluation runs.

Run folders themselves (resumable ``targets.jsonl``, ``report.json``) are
:mod:`convir.eval.runs`; metric values come from :mod:`convir.eval.metrics`. This module
renders them: ``report.md`` (:func:`render_markdown`) and per-turn plots (:func:`plot_runs`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from convir.atomic import atomic_path
from convir.errors import ConvirError
from convir.eval.metrics import single_metrics, turn_metrics, turn_stage_seconds
from convir.eval.runs import REPORT_JSON, RunWriter

# RunWriter and the metric summaries are re-exported for code written against the old layout
__all__ = [
    "RunWriter",
    "load_report",
    "plot_runs",
    "render_markdown",
    "single_metrics",
    "turn_metrics",
    "turn_stage_seconds",
]


# ------------------------------------------------------------------------------ Markdown

_NAMES = {"hits": "Hits", "recall": "Recall", "mrr": "MRR", "bri": "BRI", "r": "R", "n": "n"}


def _metric_label(key: str) -> str:
    """``hits@10`` -> ``Hits@10``, ``mrr`` -> ``MRR``; unknown keys are kept as they are."""
    head, sep, tail = key.partition("@")
    return _NAMES.get(head.lower(), head) + sep + tail


def _is_rate(key: str) -> bool:
    return key.split("@")[0].lower() in {"hits", "recall", "r", "precision"} and "@" in key


def _fmt(key: str, value: Any) -> str:
    """Rates as percentages (as ChatIR/PlugIR papers print them), other numbers plainly."""
    if isinstance(value, bool) or value is None:
        return _cell(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{100 * value:.2f}" if _is_rate(key) else f"{value:.4f}"
    return _cell(value)


def _cell(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text.replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def render_markdown(report: Mapping[str, Any]) -> str:
    """Readable summary of a report: provenance, config table, metrics (per-turn as a table)."""
    config = report.get("config") or {}
    name = config.get("name") if isinstance(config, dict) else None
    lines = [f"# Evaluation report{': ' + str(name) if name else ''}", ""]
    rev = report.get("git_revision")
    if rev and report.get("git_dirty"):
        rev = f"{rev} (uncommitted changes)"
    lines += [
        f"- created: {report.get('created')}",
        f"- convir: {report.get('convir_version')}, git: {rev or 'unknown'}",
        f"- targets: {report.get('n_targets')}",
        "",
        "## Config",
        "",
    ]
    lines += _table(["key", "value"], [[_cell(k), _cell(v)] for k, v in sorted(config.items())])

    metrics = dict(report.get("metrics") or {})
    per_turn = {k: v for k, v in metrics.items() if isinstance(v, list) and v}
    scalars = {k: v for k, v in metrics.items() if k not in per_turn}
    lines += ["", "## Metrics", ""]
    if per_turn or any(_is_rate(k) for k in scalars):
        lines += ["Rates (Hits, Recall, R@K) are percentages; Hits@K is cumulative over turns.", ""]
    if per_turn:
        n_turns = max(len(v) for v in per_turn.values())
        header = ["turn", *(_metric_label(k) for k in per_turn)]
        rows = [
            [str(t), *(_fmt(k, v[t]) if t < len(v) else "" for k, v in per_turn.items())]
            for t in range(n_turns)
        ]
        lines += _table(header, rows)
        if scalars:
            lines += ["", ", ".join(f"{_metric_label(k)}: {_fmt(k, v)}" for k, v in scalars.items())]
    elif scalars:
        lines += _table(["metric", "value"], [[_metric_label(k), _fmt(k, v)] for k, v in scalars.items()])
    else:
        lines.append("(no metrics)")
    latency = report.get("latency")
    if isinstance(latency, dict) and latency:
        lines += ["", "## Latency (seconds per turn)", ""]
        rows = [
            [_cell(k), f"{v.get('p50', 0):.3f}", f"{v.get('p95', 0):.3f}", str(v.get("n", ""))]
            for k, v in latency.items()
            if isinstance(v, dict)
        ]
        lines += _table(["stage", "p50", "p95", "n"], rows)
    imagination = report.get("imagination")
    if isinstance(imagination, dict) and imagination:
        lines += ["", "## Imagination", ""]
        lines += _table(["key", "value"], [[_cell(k), _cell(v)] for k, v in imagination.items()])
    return "\n".join(lines) + "\n"


# -------------------------------------------------------------------------------- plots


def load_report(run_dir: Path) -> dict[str, Any]:
    """The report.json of a finished run, with a user-facing error when there is none."""
    path = Path(run_dir) / REPORT_JSON
    if not path.is_file():
        raise ConvirError(f"{run_dir} has no {REPORT_JSON}: is it a finished evaluation run folder?")
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ConvirError(f"cannot read {path}: {e}") from e
    if not isinstance(report, dict):
        raise ConvirError(f"{path} is not a convir report (expected a JSON object)")
    return report


def plot_runs(
    run_dirs: Sequence[Path],
    out: Path,
    metric: str = "hits@10",
    labels: Sequence[str] | None = None,
    title: str | None = None,
) -> Path:
    """Plot a per-turn metric of several runs against the dialogue turn; save a PNG at ``out``.

    Rates are drawn in percent. The legend uses ``labels``, else each run's config ``name``,
    else its folder name. Rendering uses the Agg canvas directly, so no display and no global
    pyplot state are involved (safe in servers and tests).
    """
    run_dirs = [Path(d) for d in run_dirs]
    if not run_dirs:
        raise ConvirError("plot_runs needs at least one run folder")
    if labels is not None and len(labels) != len(run_dirs):
        raise ConvirError(f"got {len(labels)} labels for {len(run_dirs)} run folders")

    series: list[tuple[str, list[float]]] = []
    for i, run_dir in enumerate(run_dirs):
        report = load_report(run_dir)
        values = (report.get("metrics") or {}).get(metric)
        if not isinstance(values, list) or not values:
            have = sorted(k for k, v in (report.get("metrics") or {}).items() if isinstance(v, list))
            raise ConvirError(
                f"{run_dir} has no per-turn metric {metric!r}; per-turn metrics there: {have or 'none'}"
            )
        config = report.get("config") or {}
        label = labels[i] if labels is not None else (config.get("name") or run_dir.name)
        series.append((str(label), [float(v) for v in values]))

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    scale = 100.0 if _is_rate(metric) else 1.0
    ylabel = f"{_metric_label(metric)} (%)" if scale == 100.0 else _metric_label(metric)
    fig = Figure(figsize=(7, 4.5), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for label, values in series:
        ax.plot(range(len(values)), [scale * v for v in values], marker="o", label=label)
    ax.set_xlabel("dialogue turn")
    ax.set_ylabel(ylabel)
    ax.set_title(title or f"{_metric_label(metric)} per dialogue turn")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()

    out = Path(out)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png")
    return out
