"""What both trainers share: the work folder (resume after a kill), the progress bar, seeds.

A training writes into ``OUT.partial/`` (its options, the prepared examples, Trainer
checkpoints) and only renames the finished model to ``OUT`` at the end, so ``OUT`` is either
absent or complete. Re-running the same command after a kill (Ctrl-C, ``kill -9``, power loss)
resumes from the last checkpoint: model, optimiser, scheduler and RNG states come back through
transformers' ``Trainer`` and the data order is fixed by the seed, so the resumed run sees
exactly the batches the killed one had not yet seen.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from convir.atomic import write_json
from convir.errors import ConvirError

CONFIG_FILE = "train_config.json"
EXAMPLES_FILE = "examples.jsonl"
INFO_FILE = "convir_train.json"  # provenance, written into the finished model folder


class WorkFolder:
    """``OUT.partial/`` of one training; refuses to mix two different trainings."""

    def __init__(self, out: Path, config: dict[str, Any]) -> None:
        self.out = Path(out).expanduser().absolute()
        self.partial = self.out.with_name(self.out.name + ".partial")
        self.config = json.loads(json.dumps(config, default=str))

    def check_out(self) -> None:
        """Before anything loads: OUT must not hold a finished model already."""
        if self.out.exists():
            raise ConvirError(
                f"{self.out} already exists; choose another --out or delete it (a finished training "
                "is never overwritten)"
            )
        cfg = self.partial / CONFIG_FILE
        if cfg.exists():
            try:
                old = json.loads(cfg.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise ConvirError(f"cannot read {cfg}: {exc}; delete {self.partial} to start over") from exc
            if old != self.config:
                diff = sorted(k for k in set(old) | set(self.config) if old.get(k) != self.config.get(k))
                raise ConvirError(
                    f"{self.partial} holds an unfinished training with other options ({', '.join(diff)}); "
                    f"re-run with the same options to resume it, or delete {self.partial} to start over"
                )

    def start(self) -> None:
        self.partial.mkdir(parents=True, exist_ok=True)
        write_json(self.partial / CONFIG_FILE, self.config)

    @property
    def checkpoints(self) -> Path:
        return self.partial / "checkpoints"

    def last_checkpoint(self) -> str | None:
        """The newest complete Trainer checkpoint (one killed while saving has no trainer_state)."""
        if not self.checkpoints.is_dir():
            return None
        done = [
            p
            for p in self.checkpoints.glob("checkpoint-*")
            if (p / "trainer_state.json").exists() and p.name.split("-")[-1].isdigit()
        ]
        if not done:
            return None
        return str(max(done, key=lambda p: int(p.name.split("-")[-1])))

    def examples(self, build: Callable[[], list[dict[str, Any]]]) -> list[dict[str, Any]]:
        """The prepared examples (e.g. with mined negatives), computed once and kept for a resume."""
        path = self.partial / EXAMPLES_FILE
        if path.exists():
            return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
        rows = build()
        from convir.atomic import write_text

        write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        return rows

    def finish(self, save: Callable[[Path], None], info: dict[str, Any]) -> Path:
        """Save the model into a temporary folder, add the provenance file, rename it to OUT."""
        tmp = self.partial / "final"
        shutil.rmtree(tmp, ignore_errors=True)
        save(tmp)
        write_json(tmp / INFO_FILE, {**info, "config": self.config})
        os.replace(tmp, self.out)
        shutil.rmtree(self.partial, ignore_errors=True)
        return self.out


def progress_callback(label: str, quiet: bool = False) -> Any:
    """A transformers ``TrainerCallback`` drawing a rich progress bar (steps, loss, elapsed, eta)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from transformers import TrainerCallback

    class RichProgress(TrainerCallback):
        def __init__(self) -> None:
            self.progress = Progress(
                TextColumn(f"[bold]{label}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                disable=quiet,
            )
            self.task: Any = None
            self.losses: list[tuple[int, float]] = []

        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.progress.start()
            self.task = self.progress.add_task(label, total=state.max_steps, loss="-")
            self.progress.update(self.task, completed=state.global_step)

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.progress.update(self.task, completed=state.global_step)

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            if logs and "loss" in logs:
                self.losses.append((state.global_step, float(logs["loss"])))
                self.progress.update(self.task, loss=f"{float(logs['loss']):.3f}")

        def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.progress.stop()

    return RichProgress()


def warmup_steps(rows: int, batch_size: int, share: float) -> int:
    """Linear warm-up over ``share`` of the steps (an int: transformers' ratio option moved
    between versions)."""
    return max(1, round(share * -(-rows // batch_size))) if share > 0 else 0


def trainer_args(
    output_dir: Path,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    warmup: int,
    seed: int,
    save_steps: int,
    device: str,
    **extra: Any,
) -> Any:
    """transformers ``TrainingArguments`` as every convir run uses them: checkpoints every
    ``save_steps`` (only the last kept, so a killed run resumes), our own progress bar instead
    of the Trainer's logging, no reporting integrations, rows passed through untouched."""
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(output_dir),
        num_train_epochs=epochs,
        per_device_train_batch_size=batch_size,
        learning_rate=lr,
        warmup_steps=warmup,
        seed=seed,
        save_strategy="steps",
        save_steps=save_steps,
        save_total_limit=1,
        logging_steps=1,
        report_to="none",
        disable_tqdm=True,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        use_cpu=device == "cpu",
        **extra,
    )


def quiet_trainer(trainer: Any) -> None:
    """Our progress bar replaces the Trainer's printed log dicts (its PrinterCallback)."""
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


class Stopwatch:
    """Wall and CPU seconds plus the load average at start and end (the machine may be shared)."""

    def __init__(self) -> None:
        self.t0, self.c0, self.load0 = time.perf_counter(), cpu_seconds(), load_average()

    def report(self) -> dict[str, Any]:
        return {
            "wall_s": round(time.perf_counter() - self.t0, 1),
            "cpu_s": round(cpu_seconds() - self.c0, 1),
            "load_start": self.load0,
            "load_end": load_average(),
            "peak_rss_mib": round(peak_rss_mib(), 1),
        }


def set_seed(seed: int) -> None:
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
