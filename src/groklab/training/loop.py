"""Train one model and write its run folder."""

from __future__ import annotations

import math
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from groklab.config import RunConfig
from groklab.models import build_model
from groklab.tasks.loader import TaskData, load_task
from groklab.training.checkpoints import (
    checkpoint_epochs,
    checkpoint_path,
    pack_state,
    save_checkpoint,
)
from groklab.training.runfolder import (
    METRIC_COLUMNS,
    check_run_dir,
    prepare_run_dir,
    versions,
    write_json,
)


class TrainingDiverged(RuntimeError):
    """The loss or a parameter became NaN or infinite."""


@torch.no_grad()
def evaluate(
    model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, batch_size: int = 8192
) -> tuple[float, float]:
    """Return mean cross-entropy and accuracy of ``model`` on the inputs."""
    loss_sum, correct = 0.0, 0
    for start in range(0, len(inputs), batch_size):
        logits = model(inputs[start : start + batch_size])
        batch_targets = targets[start : start + batch_size]
        loss_sum += nn.functional.cross_entropy(logits, batch_targets, reduction="sum").item()
        correct += (logits.argmax(-1) == batch_targets).sum().item()
    return loss_sum / len(inputs), correct / len(inputs)


def parameter_norm(model: nn.Module) -> float:
    """Return the L2 norm of all parameters together."""
    with torch.no_grad():
        return math.sqrt(sum(float(p.pow(2).sum()) for p in model.parameters()))


def train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: TaskData,
    batch_size: int,
    generator: torch.Generator,
) -> None:
    """Run one epoch of minibatch steps over the training set in a fresh random order."""
    n = len(data.train_inputs)
    order = torch.randperm(n, generator=generator) if batch_size < n else torch.arange(n)
    for start in range(0, n, batch_size):
        batch = order[start : start + batch_size]
        loss = nn.functional.cross_entropy(
            model(data.train_inputs[batch]), data.train_targets[batch]
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def metrics_row(model: nn.Module, data: TaskData, epoch: int) -> dict[str, float]:
    train_loss, train_acc = evaluate(model, data.train_inputs, data.train_targets)
    test_loss, test_acc = evaluate(model, data.test_inputs, data.test_targets)
    return {
        "epoch": epoch,
        "train/loss": train_loss,
        "train/acc": train_acc,
        "test/loss": test_loss,
        "test/acc": test_acc,
        "param_norm": parameter_norm(model),
    }


def train(
    config: RunConfig,
    run_dir: Path,
    *,
    cache_dir: Path | None = None,
    force: bool = False,
    progress: bool = True,
    position: int | None = None,
) -> Path:
    """Train ``config`` from scratch into ``run_dir`` and return the folder.

    Raises TrainingDiverged after marking the run failed when the loss or the
    parameters stop being finite; everything written until then is kept. An
    interrupted or crashed run is marked ``interrupted`` or ``failed`` too.
    The folder is checked and the data loaded before anything is deleted.
    """
    check_run_dir(run_dir, force)
    torch.set_num_threads(config.threads)
    data = load_task(config, cache_dir, progress=progress)
    run_dir = prepare_run_dir(run_dir, force)
    _write_header(run_dir, config, data)
    try:
        _train_loop(config, run_dir, data, progress, position)
    except TrainingDiverged:
        raise
    except KeyboardInterrupt:
        _write_status(run_dir, "interrupted", _last_epoch(run_dir),
                      message="interrupted by the user; re-run to train again")
        raise
    except Exception as err:
        _write_status(run_dir, "failed", _last_epoch(run_dir),
                      message=f"{type(err).__name__}: {err}")
        raise
    return run_dir


def _last_epoch(run_dir: Path) -> int:
    """Return the last epoch with a metrics row, or 0."""
    try:
        lines = (run_dir / "metrics.csv").read_text().splitlines()
        return int(float(lines[-1].split(",")[0])) if len(lines) > 1 else 0
    except (OSError, ValueError):
        return 0


def _train_loop(
    config: RunConfig, run_dir: Path, data: TaskData, progress: bool, position
) -> None:
    model = build_model(config)
    optimizer = torch.optim.Adam(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    schedule = set(
        checkpoint_epochs(
            config.epochs,
            config.checkpoint_dense_until,
            config.checkpoint_every,
            config.checkpoint_log_points,
        )
    )
    generator = torch.Generator().manual_seed(config.seed + 1)
    started = time.perf_counter()
    with open(run_dir / "metrics.csv", "w") as metrics_file:
        metrics_file.write(",".join(METRIC_COLUMNS) + "\n")
        bar = tqdm(
            range(config.epochs + 1),
            desc=config.name,
            disable=None if progress else True,
            unit="epoch",
            mininterval=0.5,
            dynamic_ncols=True,
            position=position,
        )
        for epoch in bar:
            if epoch > 0:
                train_epoch(model, optimizer, data, config.batch_size, generator)
            row = metrics_row(model, data, epoch)
            metrics_file.write(",".join(f"{row[c]:.8g}" for c in METRIC_COLUMNS) + "\n")
            metrics_file.flush()
            _check_finite(row, run_dir, config)
            if epoch in schedule:
                _save(run_dir, epoch, model, optimizer, config, row)
            if epoch % 10 == 0 or epoch == config.epochs:
                bar.set_postfix(train=f"{row['train/acc']:.3f}", test=f"{row['test/acc']:.3f}")
    _write_status(run_dir, "finished", config.epochs, seconds=time.perf_counter() - started)


def _check_finite(row: dict[str, float], run_dir: Path, config: RunConfig) -> None:
    if all(math.isfinite(row[k]) for k in ("train/loss", "param_norm")):
        return
    message = (
        f"training diverged at epoch {row['epoch']}: train loss {row['train/loss']}, "
        f"parameter norm {row['param_norm']}. Lower the learning rate "
        f"(lr {config.lr:g}), alpha ({config.alpha:g}) or weight decay "
        f"({config.weight_decay:g})"
    )
    _write_status(run_dir, "failed", int(row["epoch"]), message=message)
    raise TrainingDiverged(message)


def _save(run_dir, epoch, model, optimizer, config, row) -> None:
    meta = {"epoch": epoch, "config": config.to_dict(), "metrics": row}
    save_checkpoint(checkpoint_path(run_dir, epoch), pack_state(model), meta)
    save_checkpoint(run_dir / "last.safetensors", pack_state(model, optimizer), meta)
    _write_status(run_dir, "running", epoch)


def _write_header(run_dir: Path, config: RunConfig, data: TaskData) -> None:
    provenance = {
        "versions": versions(),
        "data": data.provenance,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "n_train": len(data.train_inputs),
        "n_test": len(data.test_inputs),
    }
    write_json(run_dir / "config.json", {"config": config.to_dict(), "provenance": provenance})
    _write_status(run_dir, "running", 0)


def _write_status(run_dir: Path, state: str, epoch: int, **extra) -> None:
    write_json(run_dir / "status.json", {"state": state, "epoch": epoch, **extra})
