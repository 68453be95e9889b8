"""Decide how a run folder is (re)started and continue a run from a resume point.

A run folder keeps two resume points, ``last.safetensors`` and the one before
it, ``previous.safetensors``. A resumed run continues from the newest one that
loads, passes its SHA-256 check and has its metrics rows in ``metrics.csv``.
When neither does, the run starts again from epoch 0, which gives the same
results because the seed fixes the initialisation and the data order.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from groklab.config import RunConfig
from groklab.tasks.loader import TaskData
from groklab.training.checkpoints import CheckpointError, load_checkpoint
from groklab.training.records import (
    PREVIOUS_RESUME_FILE,
    RESUME_FILE,
    read_metrics_lines,
    write_metrics_lines,
    write_status,
)
from groklab.training.runfolder import (
    atomic_path,
    check_run_dir,
    is_partial_run_folder,
    is_run_folder,
    list_checkpoints,
    read_header,
)


@dataclass
class ResumePoint:
    """The state saved in a resume point file: training continues after ``epoch``."""

    epoch: int
    tensors: dict[str, torch.Tensor]
    path: Path | None = None
    """File the state was read from: ``last.safetensors`` or ``previous.safetensors``."""


@dataclass
class StartPlan:
    """How to start one run folder.

    ``finished`` means the folder already contains this finished run. Otherwise
    ``point`` is the state to continue from, or None to train from scratch, and
    ``replace`` allows deleting the groklab run folder that is there.
    """

    finished: bool = False
    point: ResumePoint | None = None
    replace: bool = False


def plan_start(config: RunConfig, run_dir: Path, *, force: bool, resume: bool) -> StartPlan:
    """Return how to start ``config`` in ``run_dir``; changes nothing on disk.

    With ``force`` the folder is replaced (after check_run_dir allows it), even
    when ``resume`` is set. With ``resume`` a groklab run folder of the same
    config is skipped when finished, continued from its newest usable resume
    point (see :func:`find_resume_point`) and restarted when it has none.
    Raises ValueError when the folder or a resume point contains a run of
    another config, and RunFolderError when something other than a groklab
    run folder is in the way.
    """
    run_dir = Path(run_dir)
    if resume and not force and is_partial_run_folder(run_dir):
        # Stopped while writing config.json and status.json: nothing was trained.
        return StartPlan(replace=True)
    if force or not resume or not is_run_folder(run_dir):
        check_run_dir(run_dir, force)
        return StartPlan(replace=force)
    _, saved_config, status = read_header(run_dir)
    check_same_config(run_dir, saved_config, config)
    if status.get("state") == "finished":
        return StartPlan(finished=True)
    point = find_resume_point(run_dir, config)
    if point is None:
        return StartPlan(replace=True)
    return StartPlan(point=point)


def find_resume_point(run_dir: Path, config: RunConfig) -> ResumePoint | None:
    """Return the newest usable resume point of ``run_dir``, or None to restart.

    ``last.safetensors`` is tried first, then ``previous.safetensors``. A file
    that is missing or fails to load, or whose epoch is past the rows of
    ``metrics.csv``, is skipped. Each skip is reported in one line on stderr
    together with the outcome. Raises ValueError when a resume point contains
    another config.
    """
    problems = []
    rows = len(read_metrics_lines(run_dir))
    for name in (RESUME_FILE, PREVIOUS_RESUME_FILE):
        path = run_dir / name
        try:
            point, saved_config = _load_resume_point(path)
        except CheckpointError as err:
            problems.append(f"{path} is unusable ({err.reason})")
            continue
        check_same_config(run_dir, saved_config, config)
        if point.epoch >= rows:
            problems.append(
                f"{path} is at epoch {point.epoch} but {run_dir / 'metrics.csv'} has "
                f"rows for {rows} epochs only"
            )
            continue
        if problems:
            _warn(f"{'; '.join(problems)}; resuming from {name} at epoch {point.epoch}")
        return point
    _warn(
        f"{'; '.join(problems)}; training {run_dir} again from epoch 0, which gives "
        "the same results because the seed fixes them"
    )
    return None


def resume_point_at(run_dir: Path, config: RunConfig, epoch: int) -> ResumePoint | None:
    """Return the usable resume point of ``run_dir`` at ``epoch``, or None.

    Looks at ``last.safetensors`` and ``previous.safetensors`` without
    reporting anything, so an ensemble can move a member that is one
    checkpoint ahead back to the epoch of the others.
    """
    rows = len(read_metrics_lines(run_dir))
    for name in (RESUME_FILE, PREVIOUS_RESUME_FILE):
        try:
            point, saved_config = _load_resume_point(Path(run_dir) / name)
        except CheckpointError:
            continue
        if point.epoch == epoch < rows and saved_config.to_dict() == config.to_dict():
            return point
    return None


def _load_resume_point(path: Path) -> tuple[ResumePoint, RunConfig]:
    """Load a resume point file and its config, raising CheckpointError if it is unusable."""
    tensors, meta = load_checkpoint(path)
    try:
        epoch, config = int(meta["epoch"]), RunConfig.from_dict(meta["config"])
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(
            f"checkpoint {path} has invalid metadata ({type(err).__name__}: {err}): "
            "train the run again with --force",
            f"invalid metadata, {type(err).__name__}",
        ) from None
    return ResumePoint(epoch, tensors, path), config


def _warn(message: str) -> None:
    print(f"groklab: {message}", file=sys.stderr)


def check_same_config(run_dir: Path, saved: RunConfig, requested: RunConfig) -> None:
    """Raise ValueError naming the first config key in which the two configs differ."""
    saved_dict, requested_dict = saved.to_dict(), requested.to_dict()
    for key, value in requested_dict.items():
        if saved_dict.get(key) != value:
            raise ValueError(
                f"run folder {run_dir} was trained with {key}={saved_dict.get(key)!r}, "
                f"not {value!r}: use a new folder, or --force to replace it"
            )


def check_same_data(run_dir: Path, data: TaskData) -> None:
    """Raise ValueError when the samples differ from those the run started with.

    Only the content hash of Ising data is compared: the file path and the
    file hash change when the same dataset is rebuilt or cached elsewhere.
    """
    header, _, _ = read_header(run_dir)
    saved = header.get("provenance", {}).get("data", {}).get("dataset_content_sha256")
    now = data.provenance.get("dataset_content_sha256")
    if saved is not None and now is not None and saved != now:
        raise ValueError(
            f"run folder {run_dir} was trained on other Ising samples (content SHA-256 "
            f"{saved[:12]}..., now {now[:12]}...): use a new folder, or --force to "
            "replace it"
        )


def prepare_resume(run_dir: Path, point: ResumePoint) -> None:
    """Cut the run folder back to ``point`` and mark the run as running again.

    Removes the epoch checkpoints after ``point``, which the resumed run writes
    again: a crash between writing an epoch's checkpoint and the resume point
    leaves one, and so does falling back to ``previous.safetensors``. Cuts
    ``metrics.csv`` back to the rows up to ``point.epoch``. When ``point`` came
    from ``previous.safetensors``, copies it over the unusable
    ``last.safetensors``, so the next checkpoint does not move the bad file
    into ``previous.safetensors``. Deletes the temporary files that a killed
    training process left behind.
    """
    run_dir = Path(run_dir)
    _remove_temporary_files(run_dir)
    for epoch, path in list_checkpoints(run_dir):
        if epoch > point.epoch:
            path.unlink()
    write_metrics_lines(run_dir, read_metrics_lines(run_dir)[: point.epoch + 1])
    last = run_dir / RESUME_FILE
    if point.path is not None and Path(point.path) != last:
        with atomic_path(last) as tmp:
            shutil.copyfile(point.path, tmp)
    write_status(run_dir, "running", point.epoch, resumed_from=point.epoch)


TRAINING_FILES = (
    "config.json", "status.json", "metrics.csv", RESUME_FILE, PREVIOUS_RESUME_FILE,
    "checkpoints/epoch_",
)
"""Files that training writes, relative to the run folder (a prefix for epoch checkpoints)."""


def _remove_temporary_files(run_dir: Path) -> None:
    """Delete the temporary files of ``runfolder.atomic_path`` left by training writes.

    Only the temporary names of TRAINING_FILES are deleted, so a file that
    another command (such as analyze) is writing into the folder is left alone.
    """
    for name in TRAINING_FILES:
        relative = Path(name)
        for path in (run_dir / relative.parent).glob(f".tmp-{relative.name}*"):
            if path.is_file():
                path.unlink()
