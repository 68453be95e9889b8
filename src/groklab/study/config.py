"""Settings of ``groklab reproduce``: the two scales and their overrides.

A study trains, on every task, ``seeds`` grokking and ``seeds`` steady runs at
the regime alphas, and an alpha sweep of ``alpha_seeds`` runs at each extra
alpha. The ``quick`` scale takes about an hour on a 2-core laptop; the
``paper`` scale uses the published settings and takes hours.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from groklab.config import (
    ConfigError,
    RunConfig,
    Task,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    require,
    require_int64,
    short_repr,
)


# Upper bound on the seeds per regime or alpha, far above any study that fits
# a cluster, so that a mistyped count fails at once.
MAX_SEEDS = 1000

# Run config fields that the study sets itself.
RESERVED_RUN_KEYS = ("task", "regime", "alpha", "seed", "epochs")


@dataclass
class StudyConfig:
    """Settings of one study: tasks, seeds, epochs and alphas; results record them."""

    scale: str = "quick"
    """Name of the preset these values started from: ``quick`` or ``paper``."""
    tasks: list[str] = field(default_factory=lambda: ["modadd", "ising"])
    """Tasks to study: ``modadd``, ``ising`` or both."""
    seeds: int = 2
    """Seeds per regime at the regime alphas; claims need at least 2."""
    modadd_epochs: int = 100
    """Training epochs of every modular-addition run."""
    ising_epochs: int = 14000
    """Training epochs of every Ising run (full batch)."""
    modadd_alphas: list[float] = field(default_factory=lambda: [0.3, 1.0, 3.0])
    """Alpha sweep of modular addition, besides the regime alphas 0.1 and 10."""
    ising_alphas: list[float] = field(default_factory=lambda: [0.1])
    """Alpha sweep of Ising, besides the regime alphas 1 and 10."""
    alpha_seeds: int = 1
    """Seeds per extra alpha of the sweep (the regime alphas have ``seeds``)."""
    modadd_overrides: list[str] = field(default_factory=list)
    """Run config overrides (``KEY=VALUE``) for every modular-addition run."""
    ising_overrides: list[str] = field(default_factory=list)
    """Run config overrides (``KEY=VALUE``) for every Ising run."""
    trajectory_inputs: int = 500
    """Fixed held-out inputs on which the trajectory embedding compares models."""
    trajectory_checkpoints: int = 40
    """Checkpoints per run in the trajectory embedding."""

    def __post_init__(self) -> None:
        require(self.scale in SCALES, "scale", self.scale, "use quick or paper")
        known = {task.value for task in Task}
        for task in self.tasks:
            require(task in known, "tasks", task, "use a comma list of modadd, ising")
        require(len(self.tasks) >= 1 and len(set(self.tasks)) == len(self.tasks),
                 "tasks", self.tasks, "name each task once, e.g. modadd,ising")
        for name in ("modadd_epochs", "ising_epochs", "trajectory_inputs"):
            require(getattr(self, name) >= 1, name, getattr(self, name),
                     "use an integer >= 1")
        for name in ("seeds", "alpha_seeds"):
            require(1 <= getattr(self, name) <= MAX_SEEDS, name, getattr(self, name),
                     f"use an integer from 1 to {MAX_SEEDS}")
        require(self.trajectory_checkpoints >= 2, "trajectory_checkpoints",
                 self.trajectory_checkpoints, "use an integer >= 2")
        require_int64(self)
        for task in Task:
            self._check_run_overrides(task)
        for name in ("modadd_alphas", "ising_alphas"):
            for alpha in getattr(self, name):
                require(alpha > 0 and math.isfinite(alpha), name, alpha,
                         "use finite values > 0, e.g. 0.3,1,3")

    def _check_run_overrides(self, task: Task) -> None:
        """Raise a ConfigError unless ``<task>_overrides`` build a valid run config."""
        name = f"{task.value}_overrides"
        pairs = getattr(self, name)
        keys = [pair.partition("=")[0].strip() for pair in pairs]
        counts = Counter(keys)
        for key, pair in zip(keys, pairs):
            require(key not in RESERVED_RUN_KEYS, name, pair,
                    "set tasks, epochs, alphas and seeds with the study's own keys")
            require(counts[key] == 1, name, pair, f"give {key} once in the list")
        try:
            apply_overrides(RunConfig, {"task": task.value, "regime": "grok"}, pairs)
        except ConfigError as err:
            raise ConfigError(f"invalid {name}: {err}") from None

    def epochs(self, task: str) -> int:
        """Return the training epochs of ``task``."""
        return self.modadd_epochs if task == Task.MODADD.value else self.ising_epochs

    def run_overrides(self, task: str) -> list[str]:
        """Return the ``KEY=VALUE`` overrides of every run of ``task``, epochs first."""
        extra = self.modadd_overrides if task == Task.MODADD.value else self.ising_overrides
        return [f"epochs={self.epochs(task)}", *extra]

    def sweep_alphas(self, task: str) -> list[float]:
        """Return the extra alphas of ``task``'s sweep, sorted."""
        values = self.modadd_alphas if task == Task.MODADD.value else self.ising_alphas
        return sorted(set(values))

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "StudyConfig":
        return config_from_dict(cls, data)


SCALES: dict[str, dict[str, Any]] = {
    # Two seeds per regime are the fewest that give a spread. Ising stops at
    # epoch 14000, after the end of its plateau (about epoch 12300 at alpha 10
    # in a 20000-epoch run), because one Ising epoch took about 50 ms on a
    # 2-core test machine.
    "quick": {},
    # The published study: 10 seeds, alpha from 0.1 to 10, Ising up to 100000
    # epochs.
    "paper": {
        "seeds": 10,
        "ising_epochs": 100000,
        "modadd_alphas": [0.2, 0.5, 1.0, 2.0, 5.0],
        "ising_alphas": [0.1, 0.2, 0.5, 2.0, 5.0],
        "alpha_seeds": 10,
        "trajectory_inputs": 1000,
        "trajectory_checkpoints": 60,
    },
}


def study_config(scale: str, overrides: list[str]) -> StudyConfig:
    """Return the preset ``scale`` with ``KEY=VALUE`` overrides applied."""
    if scale not in SCALES:
        raise ConfigError(f"unknown scale {short_repr(scale)}: use quick or paper")
    for pair in overrides:
        if pair.partition("=")[0].strip() == "scale":
            raise ConfigError(
                f"invalid override {short_repr(pair)}: choose the scale with --scale"
            )
    return apply_overrides(StudyConfig, {"scale": scale, **SCALES[scale]}, overrides)
