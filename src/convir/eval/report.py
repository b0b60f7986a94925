"""Evaluation run folders: resumable per-target results, final reports and comparison plots.

An evaluation over thousands of dialogues can take hours, so a run folder is built to survive
a crash: per-target ranks are appended (and fsynced) to ``targets.jsonl`` as they are produced,
and a restarted run skips what is already there. Everything else (``config.json``,
``report.json``, ``report.md``, plots) is written atomically, so a reader never sees half a file.

Layout of a run folder::

    config.json     the run's settings; a resumed run must use the same ones
    targets.jsonl   {"target": id, "ranks": [r_t0, r_t1, ...], "extra": {...}} per line
    report.json     config, provenance, metrics and per-target ranks (written by finish())
    report.md       the same, readable

Metric values are computed by :mod:`convir.eval.metrics`; this module only arranges them.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from convir.atomic import atomic_path, write_json, write_text
from convir.errors import ConvirError
from convir.eval import metrics as M

__all__ = ["RunWriter", "load_report", "plot_runs", "single_metrics", "turn_metrics", "turn_stage_seconds"]

CONFIG_FILE = "config.json"
TARGETS_FILE = "targets.jsonl"
REPORT_JSON = "report.json"
REPORT_MD = "report.md"

# Config keys that may legitimately change when a run is resumed (e.g. a larger --limit).
_RESUME_KEYS = frozenset({"limit", "resume"})


# ----------------------------------------------------------------------------- helpers


def _jsonable(value: Any) -> Any:
    """Plain-JSON copy of ``value``: numpy arrays/scalars become lists/numbers, Paths strings."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def _normalise(config: Mapping[str, Any]) -> dict[str, Any]:
    """Config as it reads back from JSON, so a fresh and a reloaded config compare equal."""
    return json.loads(json.dumps(_jsonable(config), sort_keys=True))


def _comparable(config: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k not in _RESUME_KEYS}


def _check_ranks(ranks: Sequence[int] | npt.ArrayLike) -> list[int]:
    arr = np.asarray(ranks)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"ranks must be a non-empty 1-D list (one rank per turn), got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        if not np.issubdtype(arr.dtype, np.floating) or not np.all(np.isfinite(arr)):
            raise ValueError(f"ranks must be integers, got {ranks!r}")
        if np.any(arr != np.round(arr)):
            raise ValueError(f"ranks must be whole numbers, got {ranks!r}")
    if np.any(arr < 1):
        raise ValueError(f"ranks are 1-based and must be >= 1, got {ranks!r}")
    return [int(r) for r in arr]


def _fsync_dir(path: Path) -> None:
    """Make a newly created file's directory entry durable (no-op where unsupported)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def _git_state() -> tuple[str | None, bool | None]:
    """(HEAD commit, dirty?) of the repo holding the convir sources, or (None, None).

    Only a checkout that actually tracks this package counts, so an installed copy inside
    some unrelated repository (e.g. a venv in a project folder) does not report that repo.
    """
    pkg = Path(__file__).resolve().parents[1]
    if _git(["ls-files", "--error-unmatch", "__init__.py"], pkg) is None:
        return None, None
    rev = _git(["rev-parse", "HEAD"], pkg)
    if rev is None:
        return None, None
    status = _git(["status", "--porcelain", "--untracked-files=no"], pkg)
    return rev.strip(), (None if status is None else bool(status.strip()))


# ------------------------------------------------------------------------------ metrics


def turn_metrics(ranks: npt.ArrayLike | list[list[int]], ks: Sequence[int] = (1, 5, 10)) -> dict[str, Any]:
    """ChatIR/PlugIR metrics from a (n_targets, n_turns) matrix of 1-based ranks.

    Returns ``{"hits@K": [per turn, cumulative], "recall@K": [per turn], "mrr": [per turn],
    "bri": float}`` as plain lists/floats, ready for ``report.json``. Rates are fractions.
    """
    r = np.asarray(ranks)
    if r.ndim != 2:
        raise ValueError(f"ranks must be 2-D (n_targets, n_turns), got shape {r.shape}")
    out: dict[str, Any] = {}
    for k in ks:
        out[f"hits@{k}"] = M.hits_at_k_per_turn(r, k).tolist()
    for k in ks:
        out[f"recall@{k}"] = M.recall_at_k_per_turn(r, k).tolist()
    out["mrr"] = [M.mrr(r[:, t]) for t in range(r.shape[1])]
    out["bri"] = M.bri(r)
    return out


# The simulated user's own time: not part of what a person would wait for.
USER_STAGES = ("answer_s", "feedback_s")


def turn_stage_seconds(turn: Mapping[str, Any]) -> dict[str, float]:
    """Seconds per stage of one logged turn (its ``*_s`` keys), plus ``turn_s`` (all stages)
    and ``system_s`` (all but the simulated user's ``answer_s``/``feedback_s``); {} when the
    turn logged no timings."""
    parts = {k: float(v) for k, v in turn.items() if k.endswith("_s")}
    if not parts:
        return {}
    total = sum(parts.values())
    user = sum(v for k, v in parts.items() if k in USER_STAGES)
    return {**parts, "turn_s": total, "system_s": total - user}


def single_metrics(ranks: npt.ArrayLike, ks: Sequence[int] = (1, 5, 10)) -> dict[str, Any]:
    """Single-shot retrieval metrics: ``{"R@K": ..., "MRR": ..., "n": n_queries}``.

    Accepts one rank per query, or a (n, 1) matrix as produced by a 1-turn run.
    """
    r = np.asarray(ranks)
    if r.ndim == 2 and r.shape[1] == 1:
        r = r[:, 0]
    out: dict[str, Any] = {f"R@{k}": M.recall_at_k(r, k) for k in ks}
    out["MRR"] = M.mrr(r)
    out["n"] = int(r.shape[0])
    return out


# ---------------------------------------------------------------------------- run folder


class RunWriter:
    """A resumable evaluation run folder (see the module docstring for its layout).

    Typical use::

        run = RunWriter(out, config)
        done = run.done()
        for target in targets:
            if target.id not in done:
                run.add(target.id, ranks_of(target))
        run.finish(turn_metrics([ranks for ranks in run.done().values()]))

    Not safe for two processes writing the same folder at once.
    """

    def __init__(self, run_dir: Path, config: Mapping[str, Any]) -> None:
        self.run_dir = Path(run_dir)
        self.config = _normalise(config)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        cfg_path = self.run_dir / CONFIG_FILE
        if cfg_path.exists():
            try:
                old = json.loads(cfg_path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as e:
                raise ConvirError(f"cannot read {cfg_path}: {e}; use another --out") from e
            if not isinstance(old, dict) or _comparable(old) != _comparable(self.config):
                raise ConvirError(
                    f"{self.run_dir} holds a different run (its {CONFIG_FILE} does not match these "
                    "settings); use another --out, or the same settings to resume it"
                )
        elif (self.run_dir / TARGETS_FILE).exists():
            raise ConvirError(
                f"{self.run_dir} has {TARGETS_FILE} but no {CONFIG_FILE}, so it cannot be resumed "
                "safely; use another --out"
            )
        # Rewritten on resume too, so it records the latest --limit.
        write_json(cfg_path, self.config)
        self._results: dict[str, list[int]] = self._load()

    @property
    def targets_path(self) -> Path:
        return self.run_dir / TARGETS_FILE

    def _load(self) -> dict[str, list[int]]:
        """Read targets.jsonl, repairing the tail a crash may leave behind.

        A torn last line (the one in flight when the process died) is cut off so the next
        append starts on a fresh line; a complete last record that only lacks its newline is
        kept and the newline added. Damage anywhere else is reported, not guessed at.
        """
        path = self.targets_path
        if not path.exists():
            return {}
        data = path.read_bytes()
        lines = data.split(b"\n")  # the last element is the (possibly empty) unterminated tail
        results: dict[str, list[int]] = {}
        offset = 0
        for lineno, raw in enumerate(lines, start=1):
            is_tail = lineno == len(lines)
            if raw.strip():
                try:
                    rec = json.loads(raw)
                    target, ranks = str(rec["target"]), _check_ranks(rec["ranks"])
                except (ValueError, KeyError, TypeError) as e:
                    if is_tail:
                        with open(path, "r+b") as fh:
                            fh.truncate(offset)
                            fh.flush()
                            os.fsync(fh.fileno())
                        break
                    raise ConvirError(f"{path}:{lineno} is corrupt ({e}); fix or delete that line") from e
                results[target] = ranks
                if is_tail:
                    with open(path, "ab") as fh:
                        fh.write(b"\n")
                        fh.flush()
                        os.fsync(fh.fileno())
            offset += len(raw) + 1
        return results

    def done(self) -> dict[str, list[int]]:
        """Targets already recorded (id -> ranks per turn); a resumed run skips these."""
        return {k: list(v) for k, v in self._results.items()}

    def add(self, target_id: str, ranks: Sequence[int] | npt.ArrayLike, extra: dict | None = None) -> None:
        """Record one target's ranks (one per turn) durably before returning.

        The line is flushed and fsynced, so a crash loses at most the target being written.
        Adding an id again overrides its earlier ranks.
        """
        clean = _check_ranks(ranks)
        line = json.dumps(
            {"target": str(target_id), "ranks": clean, "extra": _jsonable(extra or {})},
            ensure_ascii=False,
        )
        path = self.targets_path
        new = not path.exists()
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        if new:
            _fsync_dir(self.run_dir)
        self._results[str(target_id)] = clean

    def finish(self, metrics: Mapping[str, Any], extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Write report.json and report.md (atomically) and return the report dict.

        ``metrics`` is typically :func:`turn_metrics` or :func:`single_metrics` of ``done()``;
        ``extra`` adds top-level keys (it may not replace the standard ones).
        """
        rev, dirty = _git_state()
        from convir import __version__

        report: dict[str, Any] = {
            "config": self.config,
            "git_revision": rev,
            "git_dirty": dirty,
            "convir_version": __version__,
            "created": datetime.now(UTC).astimezone().isoformat(timespec="seconds"),
            "n_targets": len(self._results),
            "metrics": _jsonable(metrics),
            "per_target": self.done(),
        }
        clash = set(extra or {}) & set(report)
        if clash:
            raise ValueError(f"extra may not override report keys: {sorted(clash)}")
        report.update(_jsonable(extra or {}))
        write_json(self.run_dir / REPORT_JSON, report)
        write_text(self.run_dir / REPORT_MD, render_markdown(report))
        return report


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
