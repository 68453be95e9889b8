"""Run-folder writes shared by single-run and ensemble training.

Both trainers write the same files through these helpers, so a member of an
ensemble leaves the same files as a separate run of its config. Every file is
replaced atomically (temporary file, then rename), ``metrics.csv`` included:
its rows are kept in memory and the whole file is rewritten, so a reader never
sees a partial row, even after a crash.
"""

from __future__ import annotations

import math
import os
from datetime import datetime, timezone
from pathlib import Path

import torch

from groklab.config import RunConfig
from groklab.tasks.loader import TaskData
from groklab.training.checkpoints import checkpoint_epochs, checkpoint_path, save_checkpoint
from groklab.training.runfolder import METRIC_COLUMNS, versions, write_json, write_text


def checkpoint_schedule(config: RunConfig) -> set[int]:
    """Return the epochs at which ``config`` saves a checkpoint."""
    return set(
        checkpoint_epochs(
            config.epochs,
            config.checkpoint_dense_until,
            config.checkpoint_every,
            config.checkpoint_log_points,
        )
    )


def write_header(run_dir: Path, config: RunConfig, data: TaskData) -> None:
    """Write ``config.json`` with provenance and mark the run as running at epoch 0."""
    provenance = {
        "versions": versions(),
        "data": data.provenance,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "n_train": len(data.train_inputs),
        "n_test": len(data.test_inputs),
    }
    write_json(run_dir / "config.json", {"config": config.to_dict(), "provenance": provenance})
    write_status(run_dir, "running", 0)


def write_status(run_dir: Path, state: str, epoch: int, **extra) -> None:
    write_json(run_dir / "status.json", {"state": state, "epoch": epoch, **extra})


def last_epoch(run_dir: Path) -> int:
    """Return the last epoch with a metrics row, or 0."""
    try:
        lines = (run_dir / "metrics.csv").read_text().splitlines()
        return int(float(lines[-1].split(",")[0])) if len(lines) > 1 else 0
    except (OSError, ValueError):
        return 0


RESUME_FILE = "last.safetensors"
"""The newest resume point of a run folder."""
PREVIOUS_RESUME_FILE = "previous.safetensors"
"""The resume point before ``RESUME_FILE``, kept in case that one is unusable."""


def format_metrics_row(row: dict[str, float]) -> str:
    """Return ``row`` as one ``metrics.csv`` line, without the newline."""
    return ",".join(f"{row[c]:.8g}" for c in METRIC_COLUMNS)


def read_metrics_lines(run_dir: Path) -> list[str]:
    """Return the data lines of ``metrics.csv`` that form epochs 0, 1, 2, ... in order.

    Reading stops at the first line that is garbled or out of sequence, and a
    missing or unreadable file or one with another header gives no lines.
    """
    try:
        lines = (Path(run_dir) / "metrics.csv").read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return []
    if not lines or lines[0] != ",".join(METRIC_COLUMNS):
        return []
    rows = []
    for line in lines[1:]:
        fields = line.split(",")
        try:
            in_sequence = len(fields) == len(METRIC_COLUMNS) and float(fields[0]) == len(rows)
        except ValueError:
            in_sequence = False
        if not in_sequence:
            break
        rows.append(line)
    return rows


def write_metrics_lines(run_dir: Path, lines: list[str]) -> None:
    """Replace ``metrics.csv`` atomically with the header and ``lines``."""
    text = "\n".join([",".join(METRIC_COLUMNS), *lines]) + "\n"
    write_text(Path(run_dir) / "metrics.csv", text)


class MetricsLog:
    """The rows of one run's ``metrics.csv``, kept in memory and written whole.

    Training calls :meth:`write` before each checkpoint and when it stops, so
    the file always ends at or after the newest resume point.
    """

    def __init__(self, run_dir: Path, start_epoch: int) -> None:
        """Keep the rows before ``start_epoch`` from disk and write them back at once."""
        self.run_dir = Path(run_dir)
        self.lines = read_metrics_lines(self.run_dir)[:start_epoch]
        if len(self.lines) != start_epoch:
            raise ValueError(
                f"{self.run_dir / 'metrics.csv'} has rows for {len(self.lines)} epochs, "
                f"but training continues at epoch {start_epoch}: train the run again "
                "with --force"
            )
        self._written = -1
        self.write()

    def append(self, row: dict[str, float]) -> None:
        self.lines.append(format_metrics_row(row))

    def write(self) -> None:
        """Rewrite ``metrics.csv`` with every row so far, unless nothing changed."""
        if self._written != len(self.lines):
            write_metrics_lines(self.run_dir, self.lines)
            self._written = len(self.lines)


def is_finite_row(row: dict[str, float]) -> bool:
    return all(math.isfinite(row[k]) for k in ("train/loss", "param_norm"))


def divergence_message(row: dict[str, float], config: RunConfig) -> str:
    """Return the failure message of a run whose loss or parameters stopped being finite."""
    return (
        f"training diverged at epoch {row['epoch']}: train loss {row['train/loss']}, "
        f"parameter norm {row['param_norm']}. Likely cause: {likely_cause(row, config)}. "
        f"Lower the learning rate (lr {config.lr:g}), alpha ({config.alpha:g}) or "
        f"weight decay ({config.weight_decay:g}) and train again"
    )


def likely_cause(row: dict[str, float], config: RunConfig) -> str:
    """Return the most likely cause of a non-finite metrics row, as a clause.

    Epoch 0 is measured before any step, so only the initial scale can be at
    fault there. Later, non-finite parameters point to steps too large for the
    scale, and a non-finite loss with finite parameters to outputs that alpha
    has scaled past the float32 range.
    """
    if int(row["epoch"]) == 0:
        return (
            f"alpha {config.alpha:g} scales the initial parameters or outputs past the "
            "float32 range before the first step"
        )
    if not math.isfinite(row["param_norm"]):
        return (
            f"the learning rate (lr {config.lr:g}) is too large for alpha "
            f"{config.alpha:g}, so the parameters overflowed"
        )
    return (
        f"alpha {config.alpha:g} is too large for the learning rate (lr {config.lr:g}): "
        f"the parameters are finite (norm {row['param_norm']:.3g}) but the loss overflowed"
    )


def save_epoch(
    run_dir: Path,
    config: RunConfig,
    row: dict[str, float],
    model_state: dict[str, torch.Tensor],
    resume_state: dict[str, torch.Tensor],
) -> None:
    """Write the epoch's checkpoint and a new resume point, then the status.

    ``model_state`` contains the ``model/`` tensors. ``resume_state`` adds the
    Adam state and the data-order generator state needed to continue the run.
    The current ``last.safetensors`` is renamed to ``previous.safetensors``
    first, so the folder keeps the two newest resume points.
    """
    epoch = int(row["epoch"])
    meta = {"epoch": epoch, "config": config.to_dict(), "metrics": row}
    save_checkpoint(checkpoint_path(run_dir, epoch), model_state, meta)
    last = run_dir / RESUME_FILE
    if last.exists():
        os.replace(last, run_dir / PREVIOUS_RESUME_FILE)
    save_checkpoint(last, resume_state, meta)
    write_status(run_dir, "running", epoch)
