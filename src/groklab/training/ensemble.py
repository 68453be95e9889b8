"""Train several runs of one task and architecture as one vectorised ensemble.

The members' parameters are stacked along a leading dimension, so one
forward pass, one backward pass and one Adam step serve every member. Each
member still draws its own data order (a generator seeded with seed + 1, as
in :mod:`groklab.training.loop`) and writes its own run folder, which matches
a separate ``groklab train`` run of its config up to float32 rounding.
"""

from __future__ import annotations

import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from groklab.config import RunConfig
from groklab.models import build_model
from groklab.tasks.loader import TaskData, load_task
from groklab.training.checkpoints import RNG_KEY, CheckpointError, generator_state
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
    StartPlan,
    check_same_data,
    plan_start,
    prepare_resume,
    resume_point_at,
)
from groklab.training.lock import folder_lock
from groklab.training.runfolder import prepare_run_dir
from groklab.training.stacked import StackedModel, stack_models
from groklab.training.stacked_adam import StackedAdam

MEMBER_FIELDS = ("seed", "alpha", "lr", "weight_decay", "regime")
"""Config fields in which the members of one ensemble may differ."""


@dataclass
class MemberOutcome:
    """Outcome of one member's run folder after training."""

    run_dir: Path
    state: str
    """``finished``, ``failed`` or ``skipped`` (already finished and resume=True)."""
    epoch: int
    """Last epoch reached."""
    message: str = ""


def ensemble_key(config: RunConfig) -> tuple:
    """Return the config fields that members of one ensemble must share, as a tuple."""
    values = config.to_dict()
    return tuple((name, values[name]) for name in values if name not in MEMBER_FIELDS)


def pack_configs(configs: list[RunConfig], max_members: int) -> list[list[int]]:
    """Group config indices into ensembles of at most ``max_members``.

    Indices with equal :func:`ensemble_key` are grouped in the order their keys
    first appear, and each group is split into chunks that keep the input order.
    """
    if max_members < 1:
        raise ValueError(f"invalid max_members {max_members}: use an integer >= 1")
    groups: dict[tuple, list[int]] = {}
    for index, config in enumerate(configs):
        groups.setdefault(ensemble_key(config), []).append(index)
    return [
        indices[start : start + max_members]
        for indices in groups.values()
        for start in range(0, len(indices), max_members)
    ]


def check_compatible(configs: list[RunConfig], run_dirs: list[Path]) -> None:
    """Raise ValueError unless the configs can share one ensemble and the folders differ."""
    if len(configs) != len(run_dirs):
        raise ValueError(
            f"got {len(configs)} configs but {len(run_dirs)} run folders: pass one folder "
            "per config"
        )
    seen: dict[Path, int] = {}
    for index, run_dir in enumerate(run_dirs):
        resolved = Path(run_dir).resolve()
        if resolved in seen:
            raise ValueError(
                f"run folder {run_dir} is given to members {seen[resolved]} and {index}: "
                "give every member its own folder"
            )
        seen[resolved] = index
    first = configs[0].to_dict() if configs else {}
    for index, config in enumerate(configs[1:], start=1):
        values = config.to_dict()
        for name, value in values.items():
            if name not in MEMBER_FIELDS and value != first[name]:
                raise ValueError(
                    f"ensemble members 0 and {index} differ in {name} ({first[name]!r} vs "
                    f"{value!r}), but members may differ only in {', '.join(MEMBER_FIELDS)}: "
                    "split them with pack_configs"
                )


def train_ensemble(
    configs: list[RunConfig],
    run_dirs: list[Path],
    *,
    cache_dir: Path | None = None,
    force: bool = False,
    resume: bool = False,
    progress: bool = True,
    position: int | None = None,
) -> list[MemberOutcome]:
    """Train every config into its run folder as one ensemble; return the outcomes in order.

    ``force`` and ``resume`` act on each folder as in :func:`loop.train`.
    Members whose loss or parameters stop being finite are marked failed and
    dropped while the others go on, so no exception is raised for them. On
    an interruption or another exception every unfinished member is marked
    ``interrupted`` or ``failed`` and the exception propagates. All folders
    are checked and the data loaded before anything is deleted. The call holds
    the lock of every member's folder throughout. When another process holds
    one of them, it releases the locks it took and raises FolderLockedError.
    """
    check_compatible(configs, run_dirs)
    run_dirs = [Path(d) for d in run_dirs]
    with ExitStack() as locks:
        for run_dir in run_dirs:
            locks.enter_context(folder_lock(run_dir, "run folder"))
        plans = [
            plan_start(c, d, force=force, resume=resume) for c, d in zip(configs, run_dirs)
        ]
        _align_resume_points(plans, configs, run_dirs)
        outcomes: list[MemberOutcome | None] = [None] * len(configs)
        waiting: dict[int, list[int]] = {}
        for index, plan in enumerate(plans):
            if plan.finished:
                outcomes[index] = MemberOutcome(
                    run_dirs[index], "skipped", configs[index].epochs
                )
            else:
                start = 0 if plan.point is None else plan.point.epoch + 1
                waiting.setdefault(start, []).append(index)
        if not waiting:
            return outcomes
        torch.set_num_threads(configs[0].threads)
        data = load_task(configs[0], cache_dir, progress=progress)
        # Members that stopped at different epochs cannot step together, so each
        # start epoch trains as its own ensemble.
        for start, indices in sorted(waiting.items()):
            members = [
                _Member(configs[i], run_dirs[i], plans[i].point, i) for i in indices
            ]
            for member, plan in zip(members, (plans[i] for i in indices)):
                _prepare_folder(member, plan, data)
            for member in _run_guarded(members, data, start, progress, position):
                outcomes[member.index] = member.outcome()
        return outcomes


def _align_resume_points(
    plans: list[StartPlan], configs: list[RunConfig], run_dirs: list[Path]
) -> None:
    """Start every unfinished member from one epoch, so that they train as one ensemble.

    Separate ensembles would match the uninterrupted run only up to float32
    rounding, because the stacked kernels round differently for another
    number of members. A kill between two members' checkpoint writes leaves
    one member a checkpoint ahead, and its ``previous.safetensors`` is then
    at the others' epoch. When some member has no resume point at all, or one
    at the earliest epoch is missing, the resumed members start again from
    epoch 0, which the seeds reproduce exactly.
    """
    waiting = [i for i, plan in enumerate(plans) if not plan.finished]
    resumed = [i for i in waiting if plans[i].point is not None]
    epochs = {plans[i].point.epoch for i in resumed}
    if not resumed or (len(epochs) == 1 and len(resumed) == len(waiting)):
        return
    target = min(epochs)
    moved = {}
    if len(resumed) == len(waiting):
        for i in resumed:
            if plans[i].point.epoch != target:
                moved[i] = resume_point_at(run_dirs[i], configs[i], target)
    if moved and None not in moved.values():
        for i, point in moved.items():
            plans[i] = StartPlan(point=point)
        where = f"epoch {target}, the resume point they share with the others"
    else:
        moved = dict.fromkeys(resumed)
        for i in resumed:
            plans[i] = StartPlan(replace=True)
        where = "epoch 0, because the members have no resume point in common"
    print(f"groklab: resuming {len(moved)} ensemble member(s) from {where}",
          file=sys.stderr)


@dataclass
class _Member:
    config: RunConfig
    run_dir: Path
    point: ResumePoint | None
    index: int
    state: str = "running"
    epoch: int = 0
    message: str = ""

    def outcome(self) -> MemberOutcome:
        return MemberOutcome(self.run_dir, self.state, self.epoch, self.message)


def _prepare_folder(member: _Member, plan: StartPlan, data: TaskData) -> None:
    if plan.point is None:
        member.run_dir = prepare_run_dir(member.run_dir, plan.replace)
        write_header(member.run_dir, member.config, data)
    else:
        check_same_data(member.run_dir, data)
        prepare_resume(member.run_dir, plan.point)


def _run_guarded(members, data, start, progress, position) -> list[_Member]:
    """Train ``members``; mark the unfinished ones when training stops by an exception."""
    try:
        _EnsembleRun(members, data, start).train(progress, position)
    except KeyboardInterrupt:
        _mark_unfinished(members, "interrupted", "interrupted by the user; re-run to train again")
        raise
    except Exception as err:
        _mark_unfinished(members, "failed", f"{type(err).__name__}: {err}")
        raise
    return members


def _mark_unfinished(members: list[_Member], state: str, message: str) -> None:
    for member in members:
        if member.state == "running":
            write_status(member.run_dir, state, last_epoch(member.run_dir), message=message)


class _EnsembleRun:
    """The stacked state of the members still training, and the epoch loop over it."""

    def __init__(self, members: list[_Member], data: TaskData, start: int):
        self.members = members
        self.alive = list(members)
        self.data = data
        self.start = start
        self.config = members[0].config
        self.model: StackedModel = stack_models([build_model(m.config) for m in members])
        self.adam = StackedAdam(
            self.model.params, [m.config.lr for m in members],
            [m.config.weight_decay for m in members],
        )
        self.generators = [torch.Generator().manual_seed(m.config.seed + 1) for m in members]
        if start > 0:
            self._restore()

    def _restore(self) -> None:
        """Load every member's parameters, Adam state and generator from its resume point."""
        steps = set()
        with torch.no_grad():
            for i, member in enumerate(self.members):
                tensors = member.point.tensors
                for name, stacked in self.model.params.items():
                    value = tensors[f"model/{name}"].unsqueeze(0)
                    stacked[i].copy_(self.model.to_internal(name, value)[0])
                self.adam.load_member(i, tensors, self.model)
                step = tensors.get(f"optim/{next(iter(self.model.params))}/step")
                steps.add(0 if step is None else int(step.item()))
                self.generators[i].set_state(generator_state(tensors))
        if len(steps) != 1:
            raise CheckpointError(
                f"members resumed at epoch {self.start - 1} have taken different numbers "
                f"of Adam steps {sorted(steps)}: train them again with --force"
            )
        self.adam.steps = steps.pop()

    def train(self, progress: bool, position: int | None) -> None:
        config = self.config
        schedule = checkpoint_schedule(config)
        started = time.perf_counter()
        self.metrics = {id(m): MetricsLog(m.run_dir, self.start) for m in self.members}
        try:
            bar = tqdm(
                range(self.start, config.epochs + 1),
                desc=f"{config.task.value} ensemble x{len(self.members)}",
                disable=None if progress else True,
                unit="epoch",
                mininterval=0.5,
                dynamic_ncols=True,
                position=position,
                initial=self.start,
                total=config.epochs + 1,
            )
            for epoch in bar:
                if epoch > 0:
                    self._train_epoch()
                rows = self._metrics_rows(epoch)
                self._record(epoch, rows, epoch in schedule)
                if not self.alive:
                    break
                mean_test = sum(r["test/acc"] for r in rows) / len(rows)
                bar.set_postfix(alive=len(self.alive), test=f"{mean_test:.3f}")
        finally:
            for metrics in self.metrics.values():
                metrics.write()
        seconds = time.perf_counter() - started
        for member in self.alive:
            extra = {"resumed_from": member.point.epoch} if member.point is not None else {}
            write_status(member.run_dir, "finished", config.epochs, seconds=seconds, **extra)
            member.state, member.epoch = "finished", config.epochs

    def _train_epoch(self) -> None:
        train_stacked_epoch(
            self.model, self.adam, self.data, self.config.batch_size, self.generators
        )

    def _metrics_rows(self, epoch: int) -> list[dict[str, float]]:
        data = self.data
        train_loss, train_acc = self.model.evaluate(data.train_inputs, data.train_targets)
        test_loss, test_acc = self.model.evaluate(data.test_inputs, data.test_targets)
        norms = self.model.parameter_norms()
        return [
            {
                "epoch": epoch,
                "train/loss": train_loss[i],
                "train/acc": train_acc[i],
                "test/loss": test_loss[i],
                "test/acc": test_acc[i],
                "param_norm": norms[i],
            }
            for i in range(len(self.alive))
        ]

    def _record(self, epoch: int, rows: list[dict[str, float]], checkpoint: bool) -> None:
        """Record each member's metrics row and checkpoint, and drop the diverged members.

        A member's ``metrics.csv`` is written before its checkpoint and when it
        diverges, so the file always covers its resume point.
        """
        keep = []
        for i, (member, row) in enumerate(zip(self.alive, rows)):
            metrics = self.metrics[id(member)]
            metrics.append(row)
            member.epoch = epoch
            if not is_finite_row(row):
                metrics.write()
                member.state, member.message = "failed", divergence_message(row, member.config)
                write_status(member.run_dir, "failed", epoch, message=member.message)
                continue
            keep.append(i)
            if checkpoint:
                metrics.write()
                self._save(i, member, row)
        if len(keep) < len(self.alive):
            self.alive = [self.alive[i] for i in keep]
            self.generators = [self.generators[i] for i in keep]
            if keep:
                self.model.select(keep)
                self.adam.select(keep)

    def _save(self, i: int, member: _Member, row: dict[str, float]) -> None:
        model_state = self.model.member_tensors(i)
        resume_state = {
            **model_state,
            **self.adam.member_tensors(i, self.model),
            RNG_KEY: self.generators[i].get_state(),
        }
        save_epoch(member.run_dir, member.config, row, model_state, resume_state)


def train_stacked_epoch(
    model: StackedModel,
    adam: StackedAdam,
    data: TaskData,
    batch_size: int,
    generators: list[torch.Generator],
) -> None:
    """Run one epoch of minibatch steps for every member of a stacked model.

    Member i shuffles the training set with ``generators[i]``, as a separate
    run with that generator would, so each member gets its own batches.
    """
    n = len(data.train_inputs)
    if batch_size < n:
        order = torch.stack([torch.randperm(n, generator=g) for g in generators])
    else:
        order = torch.arange(n).expand(len(generators), n)
    names = list(model.params)
    for start in range(0, n, batch_size):
        batch = order[:, start : start + batch_size]
        logits = model.forward(data.train_inputs[batch], shared=False)
        members, size, classes = logits.shape
        losses = nn.functional.cross_entropy(
            logits.reshape(-1, classes),
            data.train_targets[batch].reshape(-1),
            reduction="none",
        )
        # Each member's loss is its batch mean, as in a separate run; the sum
        # leaves every member's gradient unchanged.
        loss = losses.view(members, size).mean(1).sum()
        grads = torch.autograd.grad(loss, [model.params[name] for name in names])
        adam.step(model.params, dict(zip(names, grads)))
