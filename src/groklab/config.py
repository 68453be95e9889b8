"""Typed, validated run and analysis configs, with ``KEY=VALUE`` overrides.

A config left at ``None`` takes the task's or regime's default when it is
built, so a saved config always contains the resolved values that produced a run.
"""

from __future__ import annotations

import dataclasses
import math
import re
import sys
import types
import typing
from pathlib import Path
from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class ConfigError(ValueError):
    """Invalid configuration value; the message names the key, the value and the fix."""


INT_LIMIT = 2**63
"""Integer fields must stay below INT_LIMIT, because numpy and torch store them
as 64-bit integers. Each class checks its own lower bounds."""

MESSAGE_VALUE_CHARS = 60
"""Maximum length of a value's repr in an error message. Longer ones are cut."""

ISING_GRID_KEYS = (
    "t_min", "t_max", "n_temperatures", "n_near_tc", "near_tc_width", "exclude_width"
)
"""Arguments of ``temperature_grid``. RunConfig calls them ``ising_<name>``."""


class Task(str, Enum):
    MODADD = "modadd"
    ISING = "ising"


class Regime(str, Enum):
    GROK = "grok"
    STEADY = "steady"


# Defaults per task. Modular addition follows the MLP setup that groks within
# about 60 epochs at alpha 10 and learns steadily at alpha 0.1. For Ising,
# alpha 10 fits the training set by epoch ~4000 and generalises by ~18000.
# Alpha 1 generalises by ~1000. Both were measured on one seed (see README).
TASK_DEFAULTS: dict[Task, dict[str, Any]] = {
    Task.MODADD: {
        "lr": 5e-3,
        "weight_decay": 3e-5,
        "batch_size": 64,
        "epochs": 100,
        "hidden": 512,
        "alpha": {Regime.GROK: 10.0, Regime.STEADY: 0.1},
        "checkpoint_dense_until": 40,
        "checkpoint_every": 2,
    },
    Task.ISING: {
        "lr": 1e-4,
        "weight_decay": 0.1,
        "batch_size": 300,
        "epochs": 20000,
        "hidden": 100,
        "alpha": {Regime.GROK: 10.0, Regime.STEADY: 1.0},
        "checkpoint_dense_until": 20,
        "checkpoint_every": 200,
    },
}


MAX_MODULUS = 4096
"""Largest modulus ``p``: the p*p pairs of the addition table are built in memory."""


@dataclass
class RunConfig:
    """Everything that determines one training run."""

    task: Task
    """Task: ``modadd`` (modular addition, MLP) or ``ising`` (phase, CNN)."""
    regime: Regime
    """Training path: ``grok`` (large alpha) or ``steady`` (small alpha)."""
    alpha: float | None = None
    """Initial scale: every parameter is multiplied by it after init (regime default)."""
    seed: int = 0
    """Seed of the initialisation and of the per-epoch data order."""
    data_seed: int = 0
    """Seed of the train/test split (and Ising sampling); shared by both regimes."""
    epochs: int | None = None
    """Number of training epochs (task default)."""
    lr: float | None = None
    """Adam learning rate (task default)."""
    weight_decay: float | None = None
    """L2 weight decay added to the gradient, as in ``torch.optim.Adam`` (task default)."""
    batch_size: int | None = None
    """Minibatch size; Ising trains full batch by default (task default)."""
    hidden: int | None = None
    """Hidden width: 512 for the MLP, 100 for the CNN's dense layer (task default)."""
    p: int = 113
    """Modulus of modular addition; inputs are all P*P pairs."""
    train_fraction: float = 0.7
    """Share of the P*P pairs used for training."""
    ising_lattice: int = 16
    """Linear size L of the L x L Ising lattice (a multiple of 4 for the CNN)."""
    ising_t_min: float = 1.0
    """Lowest sampled temperature (J = k_B = 1)."""
    ising_t_max: float = 3.5
    """Highest sampled temperature."""
    ising_n_temperatures: int = 26
    """Number of evenly spaced temperatures, inclusive of both ends."""
    ising_n_near_tc: int = 0
    """Extra evenly spaced temperatures within ising_near_tc_width of Tc (even: an odd
    count puts one at Tc, which has no phase label).

    Training defaults to 0, the evenly spaced grid that the grokking and steady
    regimes were calibrated on. ``groklab ising-data`` defaults to 6, which
    makes the phases harder to separate (see README).
    """
    ising_near_tc_width: float = 0.25
    """Half-width of the window of extra temperatures around Tc."""
    ising_exclude_width: float = 0.0
    """Drop grid temperatures with |T - Tc| below this; 0 keeps them all."""
    ising_samples_per_temperature: int = 50
    """Monte Carlo samples stored per temperature."""
    ising_train: int = 300
    """Ising training samples, drawn at random from the dataset."""
    ising_test: int = 1000
    """Ising test samples, disjoint from the training samples."""
    ising_data_file: str | None = None
    """Train on this groklab ``.npz`` (from ``ising-data`` or ``ising-import``) instead
    of sampling; the grid and sampling fields above are then unused."""
    checkpoint_dense_until: int | None = None
    """Save a checkpoint at every epoch up to this one (task default)."""
    checkpoint_every: int | None = None
    """After that, save a checkpoint every this many epochs (task default)."""
    checkpoint_log_points: int = 40
    """Also save this many log-spaced checkpoints after the dense phase."""
    threads: int = 1
    """PyTorch CPU threads; one is fastest for these small models."""

    def __post_init__(self) -> None:
        self.task = _parse_enum(Task, self.task, "task")
        self.regime = _parse_enum(Regime, self.regime, "regime")
        defaults = TASK_DEFAULTS[self.task]
        if self.alpha is None:
            self.alpha = defaults["alpha"][self.regime]
        for name in ("lr", "weight_decay", "batch_size", "epochs", "hidden"):
            if getattr(self, name) is None:
                setattr(self, name, defaults[name])
        for name in ("checkpoint_dense_until", "checkpoint_every"):
            if getattr(self, name) is None:
                setattr(self, name, defaults[name])
        self._validate()

    def _validate(self) -> None:
        require(self.alpha > 0 and math.isfinite(self.alpha), "alpha", self.alpha,
                 "use a finite value > 0, e.g. 10 (grok) or 0.1 (steady)")
        require(self.epochs >= 1, "epochs", self.epochs, "use an integer >= 1")
        require(self.lr > 0 and math.isfinite(self.lr), "lr", self.lr,
                 "use a finite value > 0")
        require(0 <= self.weight_decay < math.inf, "weight_decay", self.weight_decay,
                 "use a finite value >= 0")
        for name in ("seed", "data_seed"):
            value = getattr(self, name)
            require(0 <= value < 2**63, name, value, "use an integer in [0, 2**63)")
        # Before p**2 below, which overflows a float for a huge p.
        require_int64(self)
        require(self.batch_size >= 1, "batch_size", self.batch_size,
                 "use an integer >= 1")
        require(self.hidden >= 1, "hidden", self.hidden, "use an integer >= 1")
        require(self.p >= 2, "p", self.p, "use a modulus >= 2, e.g. 113")
        require(self.p <= MAX_MODULUS, "p", self.p,
                 f"use a modulus <= {MAX_MODULUS}, because training builds all p*p "
                 "input pairs in memory (16*p*p bytes, 268 MB at 4096)")
        require(0 < self.train_fraction < 1, "train_fraction", self.train_fraction,
                 "use a value strictly between 0 and 1")
        n_train = round(self.train_fraction * self.p**2)
        require(0 < n_train < self.p**2, "train_fraction", self.train_fraction,
                 f"it leaves an empty split of the {self.p**2} pairs; move it towards 0.5")
        require(self.ising_lattice >= 4 and self.ising_lattice % 4 == 0,
                 "ising_lattice", self.ising_lattice,
                 "use a multiple of 4, because the CNN pools twice by 2")
        require(0 < self.ising_t_min < self.ising_t_max, "ising_t_min",
                 self.ising_t_min, "use 0 < ising_t_min < ising_t_max")
        require(self.ising_t_max < math.inf, "ising_t_max", self.ising_t_max,
                 "use a finite value above ising_t_min")
        for name in ("ising_n_temperatures", "ising_samples_per_temperature",
                     "ising_train", "ising_test", "threads"):
            require(getattr(self, name) >= 1, name, getattr(self, name),
                     "use an integer >= 1")
        require(self.checkpoint_dense_until >= 0, "checkpoint_dense_until",
                 self.checkpoint_dense_until, "use an integer >= 0")
        require(self.checkpoint_log_points >= 0, "checkpoint_log_points",
                 self.checkpoint_log_points, "use an integer >= 0")
        require(self.checkpoint_every >= 1, "checkpoint_every",
                 self.checkpoint_every, "use an integer >= 1")
        self._validate_ising_grid()

    def _validate_ising_grid(self) -> None:
        """Check the grid fields and that the split fits the sampled configurations."""
        require(self.ising_n_near_tc >= 0, "ising_n_near_tc", self.ising_n_near_tc,
                 "use an even integer >= 0")
        require(0 < self.ising_near_tc_width < math.inf, "ising_near_tc_width",
                 self.ising_near_tc_width, "use a finite value > 0")
        require(0 <= self.ising_exclude_width < math.inf, "ising_exclude_width",
                 self.ising_exclude_width, "use a finite value >= 0")
        require(self.ising_data_file is None or self.ising_data_file.strip() != "",
                 "ising_data_file", self.ising_data_file,
                 "name a .npz file from groklab ising-data or ising-import, "
                 "or use none")
        if self.ising_data_file is not None:
            # Stored absolute so that analysis finds the file from any folder.
            self.ising_data_file = _absolute_path("ising_data_file", self.ising_data_file)
        if self.ising_data_file is None:
            # A data file is checked when it is loaded, against its sample count.
            n_samples = self._ising_grid_size() * self.ising_samples_per_temperature
            check_ising_split(self, n_samples)

    def _ising_grid_size(self) -> int:
        """Return the number of Ising grid temperatures, or raise a ConfigError."""
        from groklab.tasks.ising.grid import temperature_grid

        try:
            grid = temperature_grid(
                self.ising_t_min,
                self.ising_t_max,
                self.ising_n_temperatures,
                self.ising_n_near_tc,
                self.ising_near_tc_width,
                self.ising_exclude_width,
            )
        except ValueError as err:
            # The grid's messages name its arguments, which are ising_<name> here.
            named = [f"ising_{name}" for name in ISING_GRID_KEYS
                     if re.search(rf"\b{name}\b", str(err))]
            keys = ", ".join(named) or "ising_ settings"
            raise ConfigError(f"invalid Ising grid ({keys}): {err}") from None
        return len(grid)

    @property
    def name(self) -> str:
        """Run name: task, regime, alpha and seed."""
        return f"{self.task.value}-{self.regime.value}-a{self.alpha:g}-s{self.seed}"

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        return config_from_dict(cls, data)


@dataclass
class AnalysisConfig:
    """Settings of ``groklab analyze``; every result records the values it used."""

    fisher_form: str = "regression"
    """Fisher form for pruning and geometry: ``regression`` or ``classification``."""
    fisher_inputs: int = 4096
    """Held-out inputs for the final model's Fisher diagonal (capped at the test set).

    Modular-addition inputs are one-hot, so each first-layer weight gets gradient
    only from the held-out pairs that contain its token. Too few inputs leave many
    weights with a Fisher diagonal of exactly zero by chance.
    """
    geometry_fisher_inputs: int = 512
    """Held-out inputs for the Fisher diagonal at each checkpoint (geometry)."""
    fisher_chunk_size: int | None = None
    """Inputs per vectorised Fisher chunk; None sizes chunks from ``memory_mb``."""
    memory_mb: int = 1024
    """Memory budget in MiB that sizes the chunks of pruning masks and Fisher inputs.

    Chunk sizes come from estimates of the tensors each chunk creates, so peak
    use can exceed the budget by the allocator's overhead and the fixed state.
    """
    pruning_orders: list[str] = field(
        default_factory=lambda: ["fisher", "magnitude", "fisher_theta2"]
    )
    """Pruning orders to evaluate: ``fisher``, ``magnitude``, ``fisher_theta2``."""
    n_fractions: int = 201
    """Points on each pruning curve: a coarse grid of about half, the rest added
    where loss or accuracy change most (fewer for a scope with fewer entries)."""
    tolerance: float = 0.01
    """Relative drop in test accuracy that still counts as unharmed."""
    linear_fit_max_fraction: float = 0.5
    """Fit loss against pruned fraction over fractions up to this value."""
    compressive_r2: float = 0.9
    """R^2 above which a loss-vs-fraction fit counts as the compressive regime."""
    sloppy_threshold: float = 0.1
    """Parameters whose final Fisher diagonal is below this are ``sloppy``."""
    top_k: int = 5
    """Number of key frequencies reported for modular addition."""
    max_checkpoints: int = 200
    """At most this many checkpoints, evenly spread, enter the geometry."""
    pruning_checkpoints: int = 8
    """Checkpoints at which the global pruning curves and compression factors are
    measured again (0 skips that step and leaves ``pruning_over_time`` out).

    They come from the geometry checkpoints: evenly spread, plus the final one
    and those nearest the train-fit and test-fit epochs.
    """
    pruning_over_time_fractions: int = 51
    """Pruned fractions on each curve at those checkpoints (``default_fractions``)."""
    seed: int = 0
    """Seed for choosing held-out inputs and for probe splits."""

    def __post_init__(self) -> None:
        require(self.fisher_form in ("regression", "classification"), "fisher_form",
                 self.fisher_form, "use regression or classification")
        allowed = {"fisher", "magnitude", "fisher_theta2"}
        for order in self.pruning_orders:
            require(order in allowed, "pruning_orders", order,
                     "use a comma list of fisher, magnitude, fisher_theta2")
        require(len(self.pruning_orders) >= 1, "pruning_orders",
                 self.pruning_orders, "name at least one order")
        for name in ("fisher_inputs", "geometry_fisher_inputs", "top_k"):
            require(getattr(self, name) >= 1, name, getattr(self, name),
                     "use an integer >= 1")
        require(self.fisher_chunk_size is None or self.fisher_chunk_size >= 1,
                 "fisher_chunk_size", self.fisher_chunk_size,
                 "use an integer >= 1, or none to size chunks from memory_mb")
        require(self.memory_mb >= 16, "memory_mb", self.memory_mb,
                 "use an integer >= 16 (MiB)")
        require(self.n_fractions >= 4, "n_fractions", self.n_fractions,
                 "use an integer >= 4")
        require(self.max_checkpoints >= 3, "max_checkpoints", self.max_checkpoints,
                 "use an integer >= 3")
        require(self.pruning_checkpoints >= 0, "pruning_checkpoints",
                 self.pruning_checkpoints, "use an integer >= 0, or 0 to skip")
        require(self.pruning_over_time_fractions >= 4, "pruning_over_time_fractions",
                 self.pruning_over_time_fractions, "use an integer >= 4")
        require(0 <= self.tolerance < 1, "tolerance", self.tolerance,
                 "use a value in [0, 1), e.g. 0.01 for 1 %")
        require(0 < self.linear_fit_max_fraction <= 1, "linear_fit_max_fraction",
                 self.linear_fit_max_fraction, "use a value in (0, 1]")
        require(0 <= self.compressive_r2 <= 1, "compressive_r2", self.compressive_r2,
                 "use a value in [0, 1]")
        require(0 <= self.sloppy_threshold < math.inf, "sloppy_threshold",
                 self.sloppy_threshold, "use a finite value >= 0")
        require(0 <= self.seed < INT_LIMIT, "seed", self.seed,
                 "use an integer in [0, 2**63)")
        require_int64(self)

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AnalysisConfig:
        return config_from_dict(cls, data)


def check_ising_split(config: RunConfig, n_samples: int) -> None:
    """Raise a ConfigError unless ising_train + ising_test fit in ``n_samples``."""
    fix = (
        "raise ising_samples_per_temperature"
        if config.ising_data_file is None
        else "lower ising_train or ising_test"
    )
    require(config.ising_train + config.ising_test <= n_samples, "ising_train",
             config.ising_train, f"ising_train + ising_test ({config.ising_test}) must "
             f"not exceed the {n_samples} sampled configurations; {fix}")


def apply_overrides(config_cls: type, base: dict[str, Any], pairs: list[str]) -> Any:
    """Build ``config_cls`` from ``base`` with ``KEY=VALUE`` strings applied on top."""
    values = dict(base)
    hints = typing.get_type_hints(config_cls)
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(
                f"invalid override {short_repr(pair)}: expected KEY=VALUE, "
                "e.g. --set lr=1e-3"
            )
        if key not in hints:
            raise ConfigError(
                f"unknown config key {short_repr(key)} in {short_repr(pair)}: known "
                f"keys are {', '.join(sorted(hints))}"
            )
        values[key] = parse_value(key, raw.strip(), hints[key])
    return config_from_dict(config_cls, values)


def parse_value(key: str, raw: str, hint: Any) -> Any:
    """Convert the text ``raw`` to the type annotated for ``key``.

    Numbers follow Python's ``int()`` and ``float()``: ``1_000`` and ``1e-3``
    are accepted, but an integer field rejects ``0x10`` and ``1e3``. ``nan``
    and ``inf`` parse as floats and are left to each field's range check.
    ``none`` (any case) clears an optional field, and a list field takes a
    comma-separated list.
    """
    base = unwrap_optional(hint)
    if raw.lower() == "none" and base is not hint:
        return None
    if typing.get_origin(base) is list:
        (item_hint,) = typing.get_args(base) or (str,)
        items = [item.strip() for item in raw.split(",") if item.strip()]
        return [parse_value(key, item, item_hint) for item in items]
    try:
        if base is bool:
            if raw.lower() not in ("true", "false", "1", "0"):
                raise ValueError(raw)
            return raw.lower() in ("true", "1")
        if base is int:
            return int(raw)
        if base is float:
            return float(raw)
        return raw
    except ValueError:
        raise ConfigError(
            f"invalid value {short_repr(raw)} for {key}: expected {_TYPE_HELP[base]}"
        ) from None


_TYPE_HELP = {
    bool: "bool (true or false)",
    int: "int (a decimal integer within 64 bits such as 113; _ may separate digits)",
    float: "float (a number such as 0.5 or 1e-3)",
}


def config_to_dict(config: Any) -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        out[f.name] = value.value if isinstance(value, Enum) else value
    return out


def config_from_dict(config_cls: type, data: dict[str, Any]) -> Any:
    """Build a config from a dict, rejecting unknown keys and mistyped values.

    Every error, including a ValueError that the class raises itself, is a
    one-line ConfigError.
    """
    if not isinstance(data, dict):
        raise ConfigError(
            f"invalid config: expected a JSON object, got {type(data).__name__}"
        )
    hints = typing.get_type_hints(config_cls)
    unknown = sorted(set(data) - set(hints), key=repr)
    if unknown:
        raise ConfigError(
            f"unknown config key {short_repr(unknown[0])}: known keys are "
            f"{', '.join(sorted(hints))}"
        )
    for key, value in data.items():
        _check_type(key, value, hints[key])
    try:
        return config_cls(**data)
    except ConfigError:
        raise
    except (TypeError, ValueError) as err:
        lines = str(err).splitlines() or [type(err).__name__]
        prefix = "invalid config: " if isinstance(err, TypeError) else ""
        raise ConfigError(f"{prefix}{_cut_middle(lines[0])}") from None


def unwrap_optional(hint: Any) -> Any:
    """Return ``X`` for ``X | None`` and ``hint`` itself otherwise."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return next(a for a in typing.get_args(hint) if a is not type(None))
    return hint


def _check_type(key: str, value: Any, hint: Any) -> None:
    """Raise a ConfigError unless ``value`` has type ``hint`` and fits its storage."""
    base = unwrap_optional(hint)
    if value is None and base is not hint:
        return
    if isinstance(base, type) and issubclass(base, Enum):
        ok = isinstance(value, str)
    elif base is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif base is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif typing.get_origin(base) is list:
        (item_hint,) = typing.get_args(base) or (str,)
        ok = isinstance(value, list)
        for item in value if ok else []:
            _check_type(key, item, item_hint)
    else:
        ok = isinstance(value, base)
    if not ok:
        name = getattr(base, "__name__", str(base))
        raise ConfigError(
            f"invalid type for {key}: {short_repr(value)} is {type(value).__name__}, "
            f"expected {name}"
        )
    # Python compares an int with a float exactly, so no conversion can overflow.
    if base is float and isinstance(value, int) and abs(value) > sys.float_info.max:
        raise ConfigError(
            f"invalid {key} {short_repr(value)}: use a finite number, at most "
            f"{sys.float_info.max:.4g} in magnitude"
        )


def _parse_enum(enum_cls: type[Enum], value: Any, key: str) -> Any:
    try:
        return enum_cls(value)
    except ValueError:
        allowed = ", ".join(member.value for member in enum_cls)
        raise ConfigError(
            f"unknown {key} {short_repr(value)}: use one of {allowed}"
        ) from None


def _absolute_path(key: str, path: str) -> str:
    """Return ``path`` made absolute with ``~`` expanded, or raise a ConfigError."""
    if "\x00" in path:
        raise ConfigError(
            f"invalid {key} {short_repr(path)}: a path cannot contain the null "
            "character; name an existing file"
        )
    try:
        return str(Path(path).expanduser().resolve())
    except (OSError, RuntimeError) as err:
        # resolve() raises RuntimeError for a symlink loop (seen on Python 3.11).
        raise ConfigError(
            f"invalid {key} {short_repr(path)}: {err.__class__.__name__} while "
            "resolving it; name an existing file"
        ) from None


def short_repr(value: Any) -> str:
    """Return ``repr(value)`` for a one-line message, cut to MESSAGE_VALUE_CHARS."""
    try:
        text = repr(value)
    except ValueError:
        # repr of an int with more digits than sys.get_int_max_str_digits() fails.
        return f"<{type(value).__name__} too large to print>"
    if len(text) <= MESSAGE_VALUE_CHARS:
        return text
    return f"{text[:MESSAGE_VALUE_CHARS - 3]}..."


def _cut_middle(text: str, limit: int = 300) -> str:
    """Return ``text`` with its middle cut out if it is longer than ``limit``.

    Messages start with the key and end with the fix, so both ends are kept.
    """
    if len(text) <= limit:
        return text
    half = (limit - 3) // 2
    return f"{text[:half]}...{text[-half:]}"


def require_int64(config: Any) -> None:
    """Raise a ConfigError for the first int field of ``config`` not below INT_LIMIT."""
    for name, hint in typing.get_type_hints(type(config)).items():
        value = getattr(config, name)
        if unwrap_optional(hint) is int and value is not None:
            require(value < INT_LIMIT, name, value,
                    "use an integer below 2**63, the 64-bit limit of numpy and torch")


def require(ok: bool, key: str, value: Any, fix: str) -> None:
    if not ok:
        raise ConfigError(f"invalid {key} {short_repr(value)}: {fix}")
