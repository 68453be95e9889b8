"""Sweep definitions: ``--grid`` and ``--seeds`` parsing, expansion into run configs.

A sweep is the Cartesian product of its grids times its seeds. Every point
becomes one :class:`RunConfig` and one run folder named after its grid values.
"""

from __future__ import annotations

import itertools
import math
import re
import typing
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from groklab.config import (
    ConfigError,
    RunConfig,
    parse_value,
    unwrap_optional,
    apply_overrides,
)

# Upper bound on the runs of one sweep, checked before the grid is expanded so
# that a mistyped range such as 0-100000000 fails at once instead of filling
# memory.
MAX_RUNS = 100_000

# Keys that a sweep sets through its own options instead of --grid or --set.
RESERVED_KEYS = {
    "task": "--task (one task per sweep)",
    "seed": "--seeds",
}


@dataclass(frozen=True)
class SweepPoint:
    """One run of a sweep: its grid values, seed, resolved config and folder name."""

    values: dict[str, Any]
    seed: int
    config: RunConfig
    name: str


@dataclass
class SweepSpec:
    """The user's sweep definition: task, regime, grids, seeds and fixed overrides."""

    task: str
    regime: str | None
    grid: list[tuple[str, list[Any]]]
    seeds: list[int]
    overrides: list[str] = field(default_factory=list)

    @property
    def keys(self) -> list[str]:
        """Return the grid keys in the order of the --grid options."""
        return [key for key, _ in self.grid]

    def points(self) -> list[SweepPoint]:
        """Expand the grid and seeds into validated run configs, in grid order.

        Raises ConfigError when a point's config is invalid or two points map
        to the same folder name; nothing is written either way.
        """
        _check_overrides(self.overrides, self.keys, self.regime)
        count = math.prod(len(values) for _, values in self.grid) * len(self.seeds)
        if count > MAX_RUNS:
            raise ConfigError(
                f"the grid and --seeds give {count} runs, more than the {MAX_RUNS} "
                "one sweep may have: use fewer values or seeds, or split the sweep"
            )
        points = []
        for combination in itertools.product(*(values for _, values in self.grid)):
            values = dict(zip(self.keys, combination))
            for seed in self.seeds:
                points.append(self._point(values, seed))
        _check_unique_names(points)
        return points

    def _point(self, values: dict[str, Any], seed: int) -> SweepPoint:
        base: dict[str, Any] = {"task": self.task, "regime": self.regime or "grok"}
        base.update(values)
        base["seed"] = seed
        config = apply_overrides(RunConfig, base, self.overrides)
        return SweepPoint(values, seed, config, point_name(values, seed))

    def to_dict(self) -> dict[str, Any]:
        """Return the definition as given, for sweep.json."""
        return {
            "task": self.task,
            "regime": self.regime or "grok",
            "grid": {key: values for key, values in self.grid},
            "seeds": self.seeds,
            "overrides": self.overrides,
        }


def parse_seeds(text: str) -> list[int]:
    """Parse ``--seeds``: one seed ``3``, a range ``0-9`` (inclusive) or a comma list.

    Items of a comma list may themselves be ranges, as in ``0-4,10``.
    """
    usage = "expected N, A-B or a comma list such as 0,2,5"
    items = [item.strip() for item in text.split(",")]
    if not text.strip() or any(not item for item in items):
        raise ConfigError(f"invalid --seeds {text!r}: {usage}")
    seeds: list[int] = []
    for item in items:
        match = re.fullmatch(r"(\d+)(?:\s*-\s*(\d+))?", item)
        if not match:
            raise ConfigError(f"invalid seed {item!r} in --seeds {text!r}: {usage}")
        start = int(match.group(1))
        stop = int(match.group(2)) if match.group(2) is not None else start
        if stop < start:
            raise ConfigError(
                f"invalid seed range {item!r} in --seeds: the start must not exceed "
                f"the end, e.g. {stop}-{start}"
            )
        if len(seeds) + stop - start + 1 > MAX_RUNS:
            raise ConfigError(
                f"--seeds {text!r} gives more than {MAX_RUNS} seeds, the most runs one "
                "sweep may have: use a smaller range"
            )
        seeds.extend(range(start, stop + 1))
    seen: set[int] = set()
    for seed in seeds:
        if seed in seen:
            raise ConfigError(
                f"seed {seed} appears twice in --seeds {text!r}: list each seed once"
            )
        seen.add(seed)
    return seeds


def parse_grid(text: str) -> tuple[str, list[Any]]:
    """Parse one ``--grid KEY=V1,V2,...`` into the key and its typed values.

    Values are converted with the same parser as ``--set``, so ``none`` works
    for optional fields.
    """
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(
            f"invalid --grid {text!r}: expected KEY=V1,V2,..., e.g. alpha=0.1,1,10"
        )
    hint = _grid_hint(key, text)
    items = [item.strip() for item in raw.split(",")]
    if not raw.strip() or any(not item for item in items):
        raise ConfigError(
            f"invalid --grid {text!r}: give one or more comma-separated values, "
            f"e.g. {key}=1,2"
        )
    values = [parse_value(key, item, hint) for item in items]
    for i, value in enumerate(values):
        if value in values[:i]:
            raise ConfigError(
                f"value {items[i]!r} appears twice in --grid {text!r}: list each value once"
            )
    return key, values


def parse_grids(texts: list[str]) -> list[tuple[str, list[Any]]]:
    """Parse every ``--grid`` option, rejecting a key given twice."""
    grid = [parse_grid(text) for text in texts]
    keys = [key for key, _ in grid]
    for i, key in enumerate(keys):
        if key in keys[:i]:
            raise ConfigError(
                f"grid key {key!r} given twice: put all its values in one --grid "
                f"{key}=V1,V2,..."
            )
    return grid


def _grid_hint(key: str, text: str) -> Any:
    """Return the type annotation of ``key``, or raise for keys a grid cannot vary."""
    if key in RESERVED_KEYS:
        raise ConfigError(
            f"invalid --grid {text!r}: set {key} with {RESERVED_KEYS[key]}"
        )
    hints = typing.get_type_hints(RunConfig)
    if key not in hints:
        raise ConfigError(
            f"unknown config key {key!r} in --grid {text!r}: known keys are "
            f"{', '.join(sorted(hints))}"
        )
    if typing.get_origin(unwrap_optional(hints[key])) is list:
        raise ConfigError(f"invalid --grid {text!r}: {key} is a list and cannot be swept")
    return hints[key]


def _check_overrides(overrides: list[str], grid_keys: list[str], regime: str | None) -> None:
    """Reject --set keys that a sweep sets elsewhere, so no value is silently ignored."""
    for pair in overrides:
        key = pair.partition("=")[0].strip()
        if key in RESERVED_KEYS:
            raise ConfigError(f"invalid --set {pair!r}: set {key} with {RESERVED_KEYS[key]}")
        if key == "regime":
            raise ConfigError(f"invalid --set {pair!r}: set the regime with --regime")
        if key in grid_keys:
            raise ConfigError(
                f"{key} is set by both --grid and --set {pair!r}: keep one of them"
            )
    if regime is not None and "regime" in grid_keys:
        raise ConfigError(
            f"--regime {regime} conflicts with --grid regime=...: keep one of them"
        )


def format_value(value: Any) -> str:
    """Format a grid value for a folder name: short, exact and free of path separators."""
    if isinstance(value, Enum):
        value = value.value
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isfinite(value) and value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return repr(value)
    return re.sub(r"[^A-Za-z0-9.+-]", "-", str(value))


def point_name(values: dict[str, Any], seed: int) -> str:
    """Return the folder name of one point, e.g. ``alpha=0.1_seed3``."""
    parts = [f"{key}={format_value(value)}" for key, value in values.items()]
    return "_".join([*parts, f"seed{seed}"])


def _check_unique_names(points: list[SweepPoint]) -> None:
    seen: dict[str, SweepPoint] = {}
    for point in points:
        if point.name in seen:
            raise ConfigError(
                f"grid values {seen[point.name].values} and {point.values} both map to "
                f"the run folder name {point.name!r}: make the values differ in letters "
                "or digits"
            )
        seen[point.name] = point
