"""Run-folder writes shared by single-run and ensemble training.

Both trainers write the same files through these helpers, so a member of an
ensemble leaves the same files as a separate run of its config.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from pathlib import Path
from typing import IO

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


def open_metrics(run_dir: Path, start_epoch: int) -> IO[str]:
    """Open ``metrics.csv`` for the rows from ``start_epoch`` on.

    Epoch 0 starts a new file with the header. A later epoch keeps the rows
    before it and drops the rest, which a crash may have left behind.
    """
    path = run_dir / "metrics.csv"
    if start_epoch == 0:
        handle = open(path, "w")
        handle.write(",".join(METRIC_COLUMNS) + "\n")
        handle.flush()
        return handle
    lines = path.read_text().splitlines()
    kept = [lines[0]] + [
        line for line in lines[1:] if line and int(float(line.split(",")[0])) < start_epoch
    ]
    write_text(path, "\n".join(kept) + "\n")
    return open(path, "a")


def write_metrics_row(handle: IO[str], row: dict[str, float]) -> None:
    handle.write(",".join(f"{row[c]:.8g}" for c in METRIC_COLUMNS) + "\n")
    handle.flush()


def is_finite_row(row: dict[str, float]) -> bool:
    return all(math.isfinite(row[k]) for k in ("train/loss", "param_norm"))


def divergence_message(row: dict[str, float], config: RunConfig) -> str:
    """Return the failure message of a run whose loss or parameters stopped being finite."""
    return (
        f"training diverged at epoch {row['epoch']}: train loss {row['train/loss']}, "
        f"parameter norm {row['param_norm']}. Lower the learning rate "
        f"(lr {config.lr:g}), alpha ({config.alpha:g}) or weight decay "
        f"({config.weight_decay:g})"
    )


def save_epoch(
    run_dir: Path,
    config: RunConfig,
    row: dict[str, float],
    model_state: dict[str, torch.Tensor],
    resume_state: dict[str, torch.Tensor],
) -> None:
    """Write the epoch's checkpoint and ``last.safetensors``, then the status.

    ``model_state`` contains the ``model/`` tensors. ``resume_state`` adds the
    Adam state and the data-order generator state needed to continue the run.
    """
    epoch = int(row["epoch"])
    meta = {"epoch": epoch, "config": config.to_dict(), "metrics": row}
    save_checkpoint(checkpoint_path(run_dir, epoch), model_state, meta)
    save_checkpoint(run_dir / "last.safetensors", resume_state, meta)
    write_status(run_dir, "running", epoch)
