"""Evaluation run folders: resumable per-target results and the final report files.

An evaluation over thousands of dialogues can take hours, so a run folder is built to survive
a crash: per-target ranks are appended (and fsynced) to ``targets.jsonl`` as they are produced,
and a restarted run skips what is already there. Everything else (``config.json``,
``report.json``, ``report.md``) is written atomically, so a reader never sees half a file.

Layout of a run folder::

    config.json     the run's settings; a resumed run must use the same ones
    targets.jsonl   {"target": id, "ranks": [r_t0, r_t1, ...], "extra": {...}} per line
    report.json     config, provenance, metrics and per-target ranks (written by finish())
    report.md       the same, readable (rendered by :mod:`convir.eval.report`)

:func:`read_targets` is the one reader of ``targets.jsonl`` (resume, latency and imagination
summaries, benchmarks/summarize_runs.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from convir.atomic import write_json, write_text
from convir.errors import ConvirError

__all__ = ["RunWriter", "latest_records", "read_targets", "run_dir_for"]

CONFIG_FILE = "config.json"
TARGETS_FILE = "targets.jsonl"
REPORT_JSON = "report.json"
REPORT_MD = "report.md"

# Config keys that may legitimately change when a run is resumed (e.g. a larger --limit).
_RESUME_KEYS = frozenset({"limit", "resume"})


def run_dir_for(out: Path | None, kind: str, config: dict[str, Any]) -> Path:
    """``out``, or ``runs/<kind>-<hash of config>`` so the same command resumes its own run."""
    if out is not None:
        return out
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return Path("runs") / f"{kind}-{digest}"


def latest_records(path: Path, targets: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    """The last record of each target (a re-added target overrides), optionally only ``targets``."""
    keep = None if targets is None else {str(t) for t in targets}
    out: dict[str, dict[str, Any]] = {}
    for rec in read_targets(path):
        tid = str(rec["target"])
        if keep is None or tid in keep:
            out[tid] = rec
    return out


def read_targets(path: Path) -> Iterator[dict[str, Any]]:
    """The complete records of a ``targets.jsonl`` (a torn last line, left by a crash, is
    skipped; see :meth:`RunWriter._load` for the repairing reader)."""
    path = Path(path)
    if path.is_dir():
        path = path / TARGETS_FILE
    if not path.exists():
        return
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict) and "target" in rec:
                yield rec


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

    def finish(
        self,
        metrics: Mapping[str, Any],
        extra: Mapping[str, Any] | None = None,
        targets: Sequence[str] | None = None,
    ) -> dict[str, Any]:
        """Write report.json and report.md (atomically) and return the report dict.

        ``metrics`` is typically :func:`~convir.eval.metrics.turn_metrics` of the selected
        targets' ranks; ``targets`` are those targets (default: every target in the folder),
        so a run resumed with a smaller ``--limit`` reports exactly the subset it measured.
        ``extra`` adds top-level keys (it may not replace the standard ones).
        """
        rev, dirty = _git_state()
        from convir import __version__
        from convir.eval.report import render_markdown

        per_target = self.done()
        if targets is not None:
            missing = [t for t in targets if str(t) not in per_target]
            if missing:
                raise ValueError(f"no results recorded for {len(missing)} target(s), e.g. {missing[0]!r}")
            per_target = {str(t): per_target[str(t)] for t in targets}
        report: dict[str, Any] = {
            "config": self.config,
            "git_revision": rev,
            "git_dirty": dirty,
            "convir_version": __version__,
            "created": datetime.now(UTC).astimezone().isoformat(timespec="seconds"),
            "n_targets": len(per_target),
            "metrics": _jsonable(metrics),
            "per_target": per_target,
        }
        if len(per_target) < len(self._results):
            report["folder_targets"] = len(self._results)  # the folder holds more (a larger --limit)
        clash = set(extra or {}) & set(report)
        if clash:
            raise ValueError(f"extra may not override report keys: {sorted(clash)}")
        report.update(_jsonable(extra or {}))
        write_json(self.run_dir / REPORT_JSON, report)
        write_text(self.run_dir / REPORT_MD, render_markdown(report))
        return report
