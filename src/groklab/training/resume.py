"""Decide how a run folder is (re)started and continue a run from ``last.safetensors``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from groklab.config import RunConfig
from groklab.tasks.loader import TaskData
from groklab.training.checkpoints import load_checkpoint
from groklab.training.records import write_status
from groklab.training.runfolder import (
    check_run_dir,
    is_run_folder,
    list_checkpoints,
    read_header,
)


@dataclass
class ResumePoint:
    """The state saved in ``last.safetensors``: training continues after ``epoch``."""

    epoch: int
    tensors: dict[str, torch.Tensor]


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
    config is skipped when finished, continued from ``last.safetensors`` when
    there is one and restarted otherwise. Raises ValueError when the folder
    contains a run of another config, and RunFolderError when something other
    than a groklab run folder is in the way.
    """
    run_dir = Path(run_dir)
    if force or not resume or not is_run_folder(run_dir):
        check_run_dir(run_dir, force)
        return StartPlan(replace=force)
    _, saved_config, status = read_header(run_dir)
    check_same_config(run_dir, saved_config, config)
    if status.get("state") == "finished":
        return StartPlan(finished=True)
    last = run_dir / "last.safetensors"
    if not last.is_file():
        return StartPlan(replace=True)
    tensors, meta = load_checkpoint(last)
    check_same_config(run_dir, RunConfig.from_dict(meta["config"]), config)
    return StartPlan(point=ResumePoint(int(meta["epoch"]), tensors))


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
    """Remove checkpoints after ``point`` and mark the run as running again.

    A crash between writing an epoch's checkpoint and ``last.safetensors``
    leaves a checkpoint newer than the resume point, which the resumed run
    writes again.
    """
    for epoch, path in list_checkpoints(run_dir):
        if epoch > point.epoch:
            path.unlink()
    write_status(run_dir, "running", point.epoch, resumed_from=point.epoch)
