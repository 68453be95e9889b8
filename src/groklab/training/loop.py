"""Train one model and write its run folder."""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from groklab.config import RunConfig
from groklab.models import build_model
from groklab.tasks.loader import TaskData, load_task
from groklab.training.checkpoints import pack_state, unpack_state
from groklab.training.records import (
    MetricsLog,
    checkpoint_schedule,
    divergence_message,
    is_finite_row,
    last_epoch,
    save_epoch,
    write_header,
    write_status,
)
from groklab.training.resume import (
    ResumePoint,
    check_same_data,
    plan_start,
    prepare_resume,
)
from groklab.training.lock import folder_lock
from groklab.training.runfolder import prepare_run_dir


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
    resume: bool = False,
    progress: bool = True,
    position: int | None = None,
) -> Path:
    """Train ``config`` into ``run_dir`` and return the folder.

    Without ``resume`` training starts from scratch. With ``resume`` a folder
    that contains this finished run is returned untouched, and an unfinished
    one continues from ``last.safetensors`` exactly as if it had never
    stopped. ``force`` overrides ``resume`` and starts from scratch.

    Raises TrainingDiverged after marking the run failed when the loss or the
    parameters stop being finite; everything written until then is kept. An
    interrupted or crashed run is marked ``interrupted`` or ``failed`` too.
    The folder is checked and the data loaded before anything is deleted.
    The call holds the folder's lock throughout, and raises FolderLockedError
    when another process holds it.
    """
    with folder_lock(run_dir, "run folder"):
        plan = plan_start(config, run_dir, force=force, resume=resume)
        if plan.finished:
            return Path(run_dir)
        torch.set_num_threads(config.threads)
        data = load_task(config, cache_dir, progress=progress)
        if plan.point is None:
            run_dir = prepare_run_dir(run_dir, plan.replace)
            write_header(run_dir, config, data)
        else:
            run_dir = Path(run_dir)
            check_same_data(run_dir, data)
            prepare_resume(run_dir, plan.point)
        try:
            _train_loop(config, run_dir, data, plan.point, progress, position)
        except TrainingDiverged:
            raise
        except KeyboardInterrupt:
            write_status(run_dir, "interrupted", last_epoch(run_dir),
                         message="interrupted by the user; re-run to train again")
            raise
        except Exception as err:
            write_status(run_dir, "failed", last_epoch(run_dir),
                         message=f"{type(err).__name__}: {err}")
            raise
        return run_dir


def _train_loop(
    config: RunConfig,
    run_dir: Path,
    data: TaskData,
    point: ResumePoint | None,
    progress: bool,
    position: int | None,
) -> None:
    model = build_model(config)
    optimizer = torch.optim.Adam(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    generator = torch.Generator().manual_seed(config.seed + 1)
    start = 0
    if point is not None:
        unpack_state(point.tensors, model, optimizer, generator)
        start = point.epoch + 1
    schedule = checkpoint_schedule(config)
    started = time.perf_counter()
    metrics = MetricsLog(run_dir, start)
    bar = tqdm(
        range(start, config.epochs + 1),
        desc=config.name,
        disable=None if progress else True,
        unit="epoch",
        mininterval=0.5,
        dynamic_ncols=True,
        position=position,
        initial=start,
        total=config.epochs + 1,
    )
    # metrics.csv is written before each checkpoint, so it always covers the
    # resume point, and once more however the loop ends.
    try:
        for epoch in bar:
            if epoch > 0:
                train_epoch(model, optimizer, data, config.batch_size, generator)
            row = metrics_row(model, data, epoch)
            metrics.append(row)
            _check_finite(row, run_dir, config, metrics)
            if epoch in schedule:
                metrics.write()
                save_epoch(run_dir, config, row, pack_state(model),
                           pack_state(model, optimizer, generator))
            if epoch % 10 == 0 or epoch == config.epochs:
                bar.set_postfix(train=f"{row['train/acc']:.3f}", test=f"{row['test/acc']:.3f}")
    finally:
        metrics.write()
    extra = {"resumed_from": point.epoch} if point is not None else {}
    write_status(run_dir, "finished", config.epochs,
                 seconds=time.perf_counter() - started, **extra)


def _check_finite(
    row: dict[str, float], run_dir: Path, config: RunConfig, metrics: MetricsLog
) -> None:
    """Raise TrainingDiverged unless ``row`` is finite.

    The metrics so far and a ``failed`` status are written before raising.
    """
    if is_finite_row(row):
        return
    metrics.write()
    message = divergence_message(row, config)
    write_status(run_dir, "failed", int(row["epoch"]), message=message)
    raise TrainingDiverged(message)
