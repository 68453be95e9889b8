"""Property-based tests: random and malformed input to the parsers and loaders.

Each input must give a valid result or one of the documented errors
(ConfigError, RunFolderError, CheckpointError, or a ValueError from the
dataset loaders) with a one-line message. Any other exception, a hang or a
partly written file fails the test. conftest.py sets the number of examples
and the per-example deadline that turns a hang into a failure.
"""

from __future__ import annotations

import io
import json
import math
import os
import pickle
import re
import shutil
import tempfile
import time
import typing
import zipfile
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import currently_in_test_context, event, given, strategies as st
from hypothesis.extra import numpy as hnp

from groklab.cli import main
from groklab.config import (
    AnalysisConfig,
    ConfigError,
    RunConfig,
    apply_overrides,
    config_from_dict,
    unwrap_optional,
)
from groklab.study.config import MAX_SEEDS, StudyConfig, study_config
from groklab.tasks.ising.dataset import (
    ARRAY_DTYPES,
    IsingDataSpec,
    check_arrays,
    load_dataset,
)
from groklab.tasks.ising.importer import ZIP_MAGIC, import_dataset
from groklab.tasks.ising.observables import CRITICAL_TEMPERATURE
from groklab.tasks.ising.sampling import Algorithm
from groklab.training.checkpoints import CheckpointError, load_checkpoint
from groklab.training.resume import plan_start
from groklab.training.runfolder import RunFolderError, read_run

TC = CRITICAL_TEMPERATURE

CONFIG_CLASSES = [RunConfig, AnalysisConfig, IsingDataSpec, StudyConfig]
RUN_BASE = {"task": "modadd", "regime": "grok"}
"""Smallest dict from which a RunConfig can be built."""

LONG = 10**5
"""Length of the long values that every parser must handle quickly."""

LONG_INPUT_SECONDS = 5.0
"""Wall-clock limit for one long input. A linear parser needs milliseconds."""


# Shared checks -------------------------------------------------------------


def one_line(error: BaseException) -> str:
    """Return the message of ``error`` after asserting it is one non-empty line."""
    message = str(error)
    assert message, f"{type(error).__name__} has an empty message"
    assert "\n" not in message, message
    return message


def mentions(message: str, names: typing.Iterable[Any]) -> bool:
    """Return True when ``message`` names one of ``names``.

    An identifier counts when it appears as a whole word. Any other name counts
    when the start of its repr appears, because messages quote and cut it.
    """
    for name in names:
        if not isinstance(name, str):
            name = repr(name)
        if name.isidentifier():
            if re.search(rf"(?<!\w){re.escape(name)}(?!\w)", message):
                return True
        elif repr(name)[:20] in message or name[:20] in message:
            return True
    return False


def count_outcome(outcome: str) -> None:
    """Count ``outcome`` in hypothesis's statistics (--hypothesis-show-statistics)."""
    if currently_in_test_context():
        event(outcome)


def field_names(cls: type) -> list[str]:
    return list(typing.get_type_hints(cls))


def check_config(cls: type, build: Callable[[], Any], names: list[Any]) -> Any:
    """Call ``build`` and return its config, or None after a ConfigError.

    A config must survive a JSON round trip. An error must be one line that
    names one of ``names`` or a field of ``cls``.
    """
    try:
        config = build()
    except ConfigError as error:
        count_outcome("rejected")
        message = one_line(error)
        assert mentions(message, [*names, *field_names(cls)]), message
        return None
    count_outcome("accepted")
    assert isinstance(config, cls)
    saved = json.loads(json.dumps(config.to_dict()))
    assert cls.from_dict(saved) == config
    return config


def check_dataset(build: Callable[[], Any]) -> Any:
    """Call ``build`` and return its dataset, or None after a ValueError.

    The dataset's arrays must pass check_arrays. An error must be one line.
    """
    try:
        dataset = build()
    except ValueError as error:
        count_outcome("rejected")
        one_line(error)
        return None
    count_outcome("accepted")
    check_arrays({name: getattr(dataset, name) for name in ARRAY_DTYPES})
    assert len(dataset) > 0
    assert dataset.spec is None
    json.dumps(dataset.metadata, allow_nan=False)
    return dataset


def tree_snapshot(root: Path) -> dict[str, bytes | None]:
    """Return every path under ``root`` with its bytes (None for a folder)."""
    return {
        str(path.relative_to(root)): None if path.is_dir() else path.read_bytes()
        for path in sorted(root.rglob("*"))
    }


def assert_fast(call: Callable[[], Any]) -> None:
    """Assert that ``call`` ends, returning or raising, within LONG_INPUT_SECONDS."""
    start = time.perf_counter()
    try:
        call()
    except ValueError as error:
        one_line(error)
        assert len(str(error)) < 2000, "the message repeats the whole long value"
    elapsed = time.perf_counter() - start
    assert elapsed < LONG_INPUT_SECONDS, f"took {elapsed:.1f} s"


# Strategies: JSON-like values and config dicts -----------------------------

# 10**4000 stays below the 4300 digits that repr() of an int allows, so that
# hypothesis can print a failing example.
HUGE_INTS = st.sampled_from([2**63, -(2**63) - 1, 10**400, -(10**400), 10**4000])
SPECIAL_FLOATS = st.sampled_from(
    [math.nan, math.inf, -math.inf, -0.0, 5e-324, 1.7976931348623157e308]
)
WORDS = [
    "modadd", "ising", "grok", "steady", "regression", "classification", "fisher",
    "magnitude", "fisher_theta2", "quick", "paper", "none", "None", "", " ",
    *(algorithm.value for algorithm in Algorithm),
]
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), HUGE_INTS, st.floats(), SPECIAL_FLOATS,
    st.text(max_size=20), st.sampled_from(WORDS),
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)


def near_values(hint: Any) -> st.SearchStrategy:
    """Return values for a field of type ``hint``: mostly of that type, near the
    limits of its range, sometimes anything JSON can hold."""
    base = unwrap_optional(hint)
    if typing.get_origin(base) is list:
        (item,) = typing.get_args(base)
        typed = st.lists(near_values(item), max_size=3)
    elif base is int:
        typed = st.integers(-3, 3000) | HUGE_INTS
    elif base is float:
        typed = st.floats(-1, 10) | SPECIAL_FLOATS | st.integers(-2, 5) | HUGE_INTS
    elif base is str or (isinstance(base, type) and issubclass(base, Enum)):
        typed = st.sampled_from(WORDS) | st.text(max_size=10)
    else:
        typed = JSON_VALUES
    options = [typed, JSON_VALUES]
    if base is not hint:
        options.append(st.none())
    return st.one_of(*options)


def config_dicts(cls: type) -> st.SearchStrategy:
    """Return dicts of random known and unknown keys with random values."""
    hints = typing.get_type_hints(cls)
    known = st.fixed_dictionaries(
        {}, optional={name: near_values(hint) for name, hint in hints.items()}
    )
    unknown_keys = st.text(max_size=12).filter(lambda key: key not in hints)
    unknown = st.dictionaries(unknown_keys | st.integers(), JSON_VALUES, max_size=2)
    base = st.just({})
    if cls is RunConfig:
        base = st.fixed_dictionaries(
            {"task": st.sampled_from(["modadd", "ising"]),
             "regime": st.sampled_from(["grok", "steady"])}
        ) | st.just({})
    return st.builds(
        lambda *parts: {key: value for part in parts for key, value in part.items()},
        base, known, st.just({}) | unknown,
    )


# Valid by construction: every value inside its documented range.

POSITIVE_FLOATS = st.floats(1e-3, 1e3)
SEEDS = st.integers(0, 2**63 - 1)
PATHS = st.text(alphabet="abc/._-~", min_size=1, max_size=20).filter(str.strip)

VALID_RUN = st.fixed_dictionaries(
    {
        "task": st.sampled_from(["modadd", "ising"]),
        "regime": st.sampled_from(["grok", "steady"]),
        "p": st.integers(5, 2000),
        "train_fraction": st.floats(0.2, 0.8),
        "ising_t_min": st.floats(0.5, 2.0),
        "ising_t_max": st.floats(2.5, 5.0),
        "ising_n_temperatures": st.integers(26, 60),
        "ising_n_near_tc": st.integers(0, 5).map(lambda half: 2 * half),
        "ising_exclude_width": st.floats(0.0, 0.1),
        "ising_samples_per_temperature": st.integers(100, 200),
        "ising_train": st.integers(1, 300),
        "ising_test": st.integers(1, 700),
    },
    optional={
        "alpha": POSITIVE_FLOATS,
        "seed": SEEDS,
        "data_seed": SEEDS,
        "epochs": st.none() | st.integers(1, 10**6),
        "lr": st.none() | st.floats(1e-6, 1.0),
        "weight_decay": st.none() | st.floats(0.0, 1.0),
        "batch_size": st.none() | st.integers(1, 4096),
        "hidden": st.none() | st.integers(1, 4096),
        "ising_lattice": st.integers(1, 64).map(lambda k: 4 * k),
        "ising_near_tc_width": st.floats(0.01, 1.0),
        "ising_data_file": st.none() | PATHS,
        "checkpoint_dense_until": st.none() | st.integers(0, 1000),
        "checkpoint_every": st.none() | st.integers(1, 1000),
        "checkpoint_log_points": st.integers(0, 100),
        "threads": st.integers(1, 64),
    },
)

VALID_ANALYSIS = st.fixed_dictionaries(
    {},
    optional={
        "fisher_form": st.sampled_from(["regression", "classification"]),
        "fisher_inputs": st.integers(1, 10**6),
        "geometry_fisher_inputs": st.integers(1, 10**6),
        "fisher_chunk_size": st.none() | st.integers(1, 10**6),
        "memory_mb": st.integers(16, 10**6),
        "pruning_orders": st.lists(
            st.sampled_from(["fisher", "magnitude", "fisher_theta2"]), min_size=1,
            max_size=3,
        ),
        "n_fractions": st.integers(4, 1000),
        "tolerance": st.floats(0.0, 1.0, exclude_max=True),
        "linear_fit_max_fraction": st.floats(0.0, 1.0, exclude_min=True),
        "compressive_r2": st.floats(0.0, 1.0),
        "sloppy_threshold": st.floats(0.0, 1e6),
        "top_k": st.integers(1, 100),
        "max_checkpoints": st.integers(3, 1000),
        "pruning_checkpoints": st.integers(0, 100),
        "pruning_over_time_fractions": st.integers(4, 1000),
        "seed": SEEDS,
    },
)

VALID_SPEC = st.fixed_dictionaries(
    {},
    optional={
        "lattice": st.integers(2, 64),
        "t_min": st.floats(0.1, 2.0),
        "t_max": st.floats(2.5, 6.0),
        "n_temperatures": st.integers(1, 100),
        "n_near_tc": st.integers(0, 10).map(lambda half: 2 * half),
        "near_tc_width": st.floats(0.01, 1.0),
        "exclude_width": st.floats(0.0, 0.1),
        "samples_per_temperature": st.integers(1, 1000),
        "seed": SEEDS,
        "algorithm": st.sampled_from([algorithm.value for algorithm in Algorithm]),
        "thermalisation_sweeps": st.integers(0, 10**6),
    },
)

RUN_OVERRIDE_POOL = ["lr=1e-3", "p=23", "hidden=32", "weight_decay=0", "batch_size=16"]

VALID_STUDY = st.fixed_dictionaries(
    {},
    optional={
        "scale": st.sampled_from(["quick", "paper"]),
        "tasks": st.permutations(["modadd", "ising"]).flatmap(
            lambda order: st.integers(1, 2).map(lambda k: order[:k])
        ),
        "seeds": st.integers(1, MAX_SEEDS),
        "modadd_epochs": st.integers(1, 10**6),
        "ising_epochs": st.integers(1, 10**6),
        "modadd_alphas": st.lists(POSITIVE_FLOATS, max_size=4),
        "ising_alphas": st.lists(POSITIVE_FLOATS, max_size=4),
        "alpha_seeds": st.integers(1, MAX_SEEDS),
        "modadd_overrides": st.lists(st.sampled_from(RUN_OVERRIDE_POOL), unique=True),
        "ising_overrides": st.lists(st.sampled_from(RUN_OVERRIDE_POOL), unique=True),
        "trajectory_inputs": st.integers(1, 10**5),
        "trajectory_checkpoints": st.integers(2, 1000),
    },
)

VALID_DICTS = {
    RunConfig: VALID_RUN,
    AnalysisConfig: VALID_ANALYSIS,
    IsingDataSpec: VALID_SPEC,
    StudyConfig: VALID_STUDY,
}


# 1. config_from_dict --------------------------------------------------------


@pytest.mark.parametrize("cls", CONFIG_CLASSES, ids=lambda cls: cls.__name__)
@given(data=st.data())
def test_config_from_random_dict(cls, data):
    values = data.draw(config_dicts(cls), label="values")
    check_config(cls, lambda: config_from_dict(cls, values), list(values))


@pytest.mark.parametrize("cls", CONFIG_CLASSES, ids=lambda cls: cls.__name__)
@given(data=st.data())
def test_config_from_valid_dict(cls, data):
    values = data.draw(VALID_DICTS[cls], label="values")
    config = config_from_dict(cls, values)
    saved = json.loads(json.dumps(config.to_dict()))
    assert cls.from_dict(saved) == config


@pytest.mark.parametrize(
    "values, key",
    [
        ({"alpha": 10**400}, "alpha"),
        ({"lr": -(10**400)}, "lr"),
        ({"p": 10**400}, "p"),
        ({"seed": 10**5000}, "seed"),
        ({"epochs": [10**5000]}, "epochs"),
        ({"ising_t_max": 10**400}, "ising_t_max"),
        ({"ising_t_max": math.inf}, "ising_t_max"),
        ({"ising_n_temperatures": 10**8}, "ising_n_temperatures"),
        ({"ising_data_file": "runs/a\x00b.npz"}, "ising_data_file"),
        ({7: 1, "colour": 2}, "colour"),
    ],
)
def test_run_config_edge_values(values, key):
    with pytest.raises(ConfigError) as info:
        config_from_dict(RunConfig, {**RUN_BASE, **values})
    assert mentions(one_line(info.value), [key])


def test_ising_range_of_large_ints_accepted():
    values = {**RUN_BASE, "ising_t_min": 10**300, "ising_t_max": 10**301}
    config = config_from_dict(RunConfig, values)
    assert config.ising_t_max == 10**301


def test_analysis_seed_range_checked():
    with pytest.raises(ConfigError) as info:
        config_from_dict(AnalysisConfig, {"seed": -1})
    assert "invalid seed -1" in one_line(info.value)


def test_ising_spec_errors_are_config_errors():
    with pytest.raises(ConfigError) as info:
        config_from_dict(IsingDataSpec, {"lattice": 1})
    assert "lattice 1" in one_line(info.value)


# 2. KEY=VALUE overrides ----------------------------------------------------

ODD_VALUES = [
    "1e400", "-1e400", "1e-400", "0x10", "0o17", "0b101", "nan", "NaN", "-nan", "inf",
    "-inf", "Infinity", "1_000", "1__000", "_1", "1_", "+7", "-0", "-0.0", "1.", ".5",
    " 3 ", "\uff13", "\u0663", "null", "true", "False", "1,2", ",", ",,", "a=b", "=",
    "", " ", "\t", "\u00e9", "\x00", "9" * 400, "9" * 5000, "1e3", "2.5",
]
OVERRIDE_VALUES = st.one_of(
    st.integers(0, 64).map(str),
    st.floats(0.0, 1.0).map(repr),
    st.sampled_from(ODD_VALUES + WORDS),
    st.text(max_size=30),
    st.integers().map(str),
    st.floats().map(repr),
    st.lists(st.sampled_from(ODD_VALUES + WORDS), max_size=4).map(",".join),
)


def plausible_text(hint: Any) -> st.SearchStrategy:
    """Return override values of the right type for ``hint``, mostly in range."""
    base = unwrap_optional(hint)
    if typing.get_origin(base) is list:
        (item,) = typing.get_args(base)
        return st.lists(plausible_text(item), min_size=1, max_size=3).map(",".join)
    if base is int:
        return st.integers(1, 64).map(str)
    if base is float:
        return st.floats(0.01, 1.0).map(repr)
    return st.sampled_from(WORDS)


def override_pairs(cls: type) -> st.SearchStrategy:
    """Return lists of ``KEY=VALUE`` strings: plausible pairs, then maybe one with
    an odd key or value, or junk."""
    hints = typing.get_type_hints(cls)
    plausible = st.sampled_from(sorted(hints)).flatmap(
        lambda key: plausible_text(hints[key]).map(lambda value: f"{key}={value}")
    )
    names = st.sampled_from(sorted(hints))
    keys = st.one_of(
        names,
        names.map(lambda key: f" {key}\t"),
        names.map(str.upper),
        st.text(max_size=12),
    )
    odd = st.builds(lambda key, value: f"{key}={value}", keys, OVERRIDE_VALUES)
    return st.builds(
        lambda good, bad: good + bad,
        st.lists(plausible, max_size=3),
        st.lists(odd | st.text(max_size=30), max_size=1),
    )


def override_names(pairs: list[str]) -> list[str]:
    """Return the keys and the pairs themselves: what an error may name."""
    return [*(pair.partition("=")[0].strip() for pair in pairs), *pairs]


@pytest.mark.parametrize(
    "cls, base",
    [(RunConfig, RUN_BASE), (AnalysisConfig, {}), (IsingDataSpec, {})],
    ids=["RunConfig", "AnalysisConfig", "IsingDataSpec"],
)
@given(data=st.data())
def test_overrides_random_pairs(cls, base, data):
    pairs = data.draw(override_pairs(cls), label="pairs")
    check_config(cls, lambda: apply_overrides(cls, base, pairs), override_names(pairs))


@given(pairs=override_pairs(StudyConfig))
def test_study_config_random_pairs(pairs):
    check_config(StudyConfig, lambda: study_config("quick", pairs), override_names(pairs))


@pytest.mark.parametrize(
    "pair, key, value",
    [
        ("p=1_000", "p", 1000),
        ("lr=1_0e-4", "lr", 1e-3),
        ("seed=-0", "seed", 0),
        ("alpha=+2.5", "alpha", 2.5),
        ("weight_decay=-0.0", "weight_decay", 0.0),
        ("epochs= 7 ", "epochs", 7),
        ("ising_data_file=NONE", "ising_data_file", None),
    ],
)
def test_override_spellings_accepted(pair, key, value):
    config = apply_overrides(RunConfig, RUN_BASE, [pair])
    assert getattr(config, key) == value


@pytest.mark.parametrize(
    "pair, fragments",
    [
        ("lr=nan", ["invalid lr nan", "finite value > 0"]),
        ("lr=1e400", ["invalid lr inf", "finite value > 0"]),
        ("weight_decay=-inf", ["invalid weight_decay -inf", "finite value >= 0"]),
        ("train_fraction=nan", ["invalid train_fraction nan", "between 0 and 1"]),
        ("ising_t_max=inf", ["invalid ising_t_max inf", "finite"]),
        ("ising_near_tc_width=inf", ["invalid ising_near_tc_width inf"]),
        ("p=0x10", ["invalid value '0x10' for p", "decimal"]),
        ("p=1e3", ["invalid value '1e3' for p", "decimal"]),
        ("p=1__000", ["invalid value '1__000' for p"]),
        ("seed=" + "9" * 5000, ["for seed", "decimal"]),
        ("seed=" + "9" * 30, ["invalid seed", "2**63"]),
        ("epochs=" + "9" * 30, ["invalid epochs", "below 2**63"]),
        ("ising_data_file=a\x00b", ["invalid ising_data_file", "null character"]),
    ],
)
def test_override_spellings_rejected(pair, fragments):
    with pytest.raises(ConfigError) as info:
        apply_overrides(RunConfig, RUN_BASE, [pair])
    message = one_line(info.value)
    for fragment in fragments:
        assert fragment in message


@pytest.mark.parametrize(
    "pairs, fragment",
    [
        (["modadd_alphas=1,nan"], "invalid modadd_alphas nan"),
        (["ising_alphas=1e400"], "invalid ising_alphas inf"),
        (["seeds=1_001"], "invalid seeds 1001"),
        (["modadd_overrides=lr=x"], "invalid modadd_overrides: invalid value 'x' for lr"),
        (["ising_overrides=colour=3"], "unknown config key 'colour'"),
    ],
)
def test_study_overrides_rejected(pairs, fragment):
    with pytest.raises(ConfigError) as info:
        study_config("quick", pairs)
    assert fragment in one_line(info.value)


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--set", "lr=nan"], "invalid lr nan"),
        (["--set", "p=0x10"], "invalid value '0x10' for p"),
        (["--set", "seed=" + "9" * 5000], "for seed"),
        (["--set", "ising_data_file=a\x00b"], "invalid ising_data_file"),
        (["--set", "epochs==3"], "invalid value '=3' for epochs"),
        (["--alpha", "nan"], "invalid alpha nan"),
        (["--seed", "-1"], "invalid seed -1"),
    ],
)
def test_cli_train_bad_override(tmp_path, capsys, args, fragment):
    out = tmp_path / "run"
    code = main(["train", "--task", "modadd", "--regime", "grok", *args,
                 "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1, err
    assert fragment in err
    assert not out.exists()


# 3. Ising dataset import ---------------------------------------------------


class CreatesMarker:
    """Object whose unpickling creates the folder ``path``, proving it ran."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def real_arrays(n: int = 8, side: int = 4) -> dict[str, np.ndarray]:
    """Return arrays of a small valid outside dataset: spins, temperature, label."""
    rng = np.random.default_rng(1)
    temperature = np.linspace(1.5, 3.0, n)
    return {
        "spins": rng.choice(np.array([-1, 1]), size=(n, side, side)),
        "temperature": temperature,
        "label": (temperature > TC).astype(np.int64),
    }


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def real_pickle_bytes() -> bytes:
    arrays = real_arrays()
    rows = zip(arrays["spins"], arrays["label"], arrays["temperature"])
    return pickle.dumps([(s.tolist(), int(y), float(t)) for s, y, t in rows])


REAL_NPZ = npz_bytes(real_arrays())
REAL_PICKLE = real_pickle_bytes()


def import_bytes(raw: bytes, name: str, *, trust_pickle: bool) -> Any:
    """Write ``raw`` to a fresh file called ``name`` and import it."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        path.write_bytes(raw)
        return check_dataset(lambda: import_dataset(path, trust_pickle=trust_pickle))


@given(
    head=st.sampled_from([b"", ZIP_MAGIC, b"\x80\x04", b"\x93NUMPY"]),
    body=st.binary(max_size=600),
    name=st.sampled_from(["in.npz", "in.pkl", "in.pickle", "in.p", "in.bin", "in"]),
)
def test_import_random_bytes(head, body, name):
    # Random bytes are never unpickled: they could encode any call.
    assert import_bytes(head + body, name, trust_pickle=False) is None


@given(
    kind=st.sampled_from(["npz", "pickle"]),
    fraction=st.floats(0.0, 1.0, exclude_max=True),
)
def test_import_truncated_file(kind, fraction):
    raw = REAL_NPZ if kind == "npz" else REAL_PICKLE
    cut = raw[: int(fraction * len(raw))]
    assert import_bytes(cut, f"in.{kind}", trust_pickle=True) is None


@given(index=st.integers(0, len(REAL_NPZ) - 1), mask=st.integers(1, 255))
def test_import_flipped_npz_byte(index, mask):
    raw = bytearray(REAL_NPZ)
    raw[index] ^= mask
    import_bytes(bytes(raw), "in.npz", trust_pickle=False)


SPIN_DTYPES = [np.int8, np.int16, np.int64, np.uint8, np.float16, np.float32, np.float64]
ANY_DTYPE = st.one_of(
    hnp.scalar_dtypes(), hnp.unicode_string_dtypes(), hnp.byte_string_dtypes()
)
ANY_ARRAY = hnp.arrays(ANY_DTYPE, hnp.array_shapes(min_dims=0, max_dims=3, max_side=4))


# Temperatures of valid samples: both phases, never within 1e-6 of Tc.
VALID_TEMPERATURES = st.floats(0.5, 4.0).filter(lambda t: abs(t - TC) > 1e-6)
BAD_TEMPERATURES = st.sampled_from([math.nan, math.inf, 0.0, -1.0, TC])
BAD_SPINS = st.sampled_from([0, 2, 127, 0.5, math.nan])


@st.composite
def outside_arrays(draw) -> dict[str, np.ndarray]:
    """Return the arrays of an outside .npz: a valid dataset with random damage.

    Up to three damages put in bad values, drop or replace an array, or add one.
    """
    n = draw(st.integers(1, 6), label="n")
    side = draw(st.integers(2, 5), label="side")
    seed = draw(st.integers(0, 2**32 - 1), label="seed")
    spins = np.random.default_rng(seed).choice(np.array([-1, 1]), size=(n, side, side))
    if draw(st.booleans(), label="flat"):
        spins = spins.reshape(n, side * side)
    spins = spins.astype(draw(st.sampled_from(SPIN_DTYPES), label="spin dtype"))
    temperature = np.array(draw(st.lists(VALID_TEMPERATURES, min_size=n, max_size=n)))
    label = (temperature > TC).astype(np.int64)
    if draw(st.booleans(), label="inverted"):
        label = 1 - label
    arrays = {"spins": spins, "temperature": temperature, "label": label}
    damage_kinds = ["bad spin", "bad temperature", "drop", "random array", "extra"]
    for kind in draw(st.lists(st.sampled_from(damage_kinds), max_size=3), label="damage"):
        _damage_arrays(draw, arrays, kind)
    return arrays


def _damage_arrays(draw, arrays: dict[str, np.ndarray], kind: str) -> None:
    """Apply one damage from ``outside_arrays`` to ``arrays`` in place."""
    name = draw(st.sampled_from(["spins", "temperature", "label"]), label="array")
    if kind == "extra":
        name = draw(st.from_regex(r"x_[a-z0-9_]{0,8}", fullmatch=True), label="extra")
        arrays[name] = draw(ANY_ARRAY, label=name)
    elif kind == "drop":
        arrays.pop(name, None)
    elif kind == "random array":
        arrays[name] = draw(ANY_ARRAY, label=name)
    elif kind == "bad temperature" and "temperature" in arrays:
        temperature = arrays["temperature"]
        if temperature.dtype != np.float64 or temperature.size == 0:
            return  # a random array replaced the temperatures
        index = draw(st.integers(0, temperature.size - 1), label="index")
        temperature.flat[index] = draw(BAD_TEMPERATURES, label="temperature")
    elif kind == "bad spin" and arrays.get("spins", np.empty(0)).size:
        spins = arrays["spins"]
        value = draw(BAD_SPINS, label="spin")
        fits = np.issubdtype(spins.dtype, np.floating) or float(value).is_integer()
        # A random array that replaced the spins may not take the value.
        if fits and spins.dtype in [np.dtype(dtype) for dtype in SPIN_DTYPES]:
            spins.flat[draw(st.integers(0, spins.size - 1), label="index")] = value


@given(arrays=outside_arrays())
def test_import_random_npz(arrays):
    import_bytes(npz_bytes(arrays), "in.npz", trust_pickle=False)


@given(
    name=st.sampled_from(["spins", "temperature", "label", "x_notes"]),
    trust_pickle=st.booleans(),
)
def test_import_object_array_not_unpickled(name, trust_pickle):
    with tempfile.TemporaryDirectory() as folder:
        marker = Path(folder) / "created-by-unpickling"
        arrays = real_arrays()
        arrays[name] = np.array([CreatesMarker(str(marker))] * 8, dtype=object)
        assert import_bytes(npz_bytes(arrays), "in.npz", trust_pickle=trust_pickle) is None
        assert not marker.exists()


def test_import_npz_header_with_huge_shape():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, shape in (("spins", (10**12, 4, 4)), ("temperature", (10**12,))):
            member = io.BytesIO()
            header = {"descr": "<f8", "fortran_order": False, "shape": shape}
            np.lib.format.write_array_header_1_0(member, header)
            archive.writestr(f"{name}.npy", member.getvalue())
    assert import_bytes(buffer.getvalue(), "in.npz", trust_pickle=False) is None


CELLS = st.one_of(
    st.sampled_from([-1, 1]), st.integers(), HUGE_INTS, st.floats(), st.booleans(),
    st.text(max_size=3), st.none(),
)


@st.composite
def pickled_records(draw) -> Any:
    """Return benign Python data in the published layout, with random damage.

    The layout is a list of (configuration, label, temperature) tuples. Up to
    three damages hit a record, one of its parts or the list itself.
    """
    side = draw(st.integers(2, 4), label="side")
    n = draw(st.integers(1, 5), label="n")
    inverted = draw(st.booleans(), label="inverted")
    style = draw(st.sampled_from(["rows", "flat", "array"]), label="style")
    records = []
    for _ in range(n):
        lattice = draw(st.lists(st.sampled_from([-1, 1]), min_size=side**2,
                                max_size=side**2), label="spins")
        if style == "rows":
            lattice = [lattice[i * side:(i + 1) * side] for i in range(side)]
        elif style == "array":
            lattice = np.array(lattice).reshape(side, side)
        temperature = draw(VALID_TEMPERATURES, label="temperature")
        records.append([lattice, int(temperature > TC) ^ inverted, temperature])

    top: Any = records
    damage_kinds = ["lattice", "label", "temperature", "record", "length", "top"]
    for kind in draw(st.lists(st.sampled_from(damage_kinds), max_size=3), label="damage"):
        index = draw(st.integers(0, n - 1), label="record index")
        whole = isinstance(records[index], list) and len(records[index]) == 3
        if kind in ("lattice", "label", "temperature") and whole:
            part = ["lattice", "label", "temperature"].index(kind)
            records[index][part] = draw(CELLS | JSON_VALUES | _random_lattice(side))
        elif kind == "record":
            records[index] = draw(JSON_VALUES, label="record")
        elif kind == "length" and isinstance(records[index], list):
            records[index] = records[index][: draw(st.integers(0, 2))]
        elif kind == "top":
            top = draw(JSON_VALUES | st.just(tuple(records)), label="top")

    if top is records:
        top = [tuple(r) if isinstance(r, list) and len(r) == 3 else r for r in records]
    return top


def _random_lattice(side: int) -> st.SearchStrategy:
    """Return square lists of random cells, and lattices of another size."""
    square = st.lists(st.lists(CELLS, min_size=side, max_size=side), min_size=side,
                      max_size=side)
    other = st.integers(0, 5).filter(lambda k: k != side).map(
        lambda k: np.ones((k, k), dtype=np.int64)
    )
    return square | other


@given(records=pickled_records())
def test_import_random_pickle(records):
    raw = pickle.dumps(records)
    import_bytes(raw, "in.pkl", trust_pickle=True)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "in.pkl"
        path.write_bytes(raw)
        with pytest.raises(ValueError, match="nothing was loaded"):
            import_dataset(path)


def run_import_cli(source: Path, out: Path) -> tuple[int, str]:
    """Run ``groklab ising-import SOURCE --out OUT``; return the exit status and stderr."""
    stderr = io.StringIO()
    with redirect_stderr(stderr), redirect_stdout(io.StringIO()):
        code = main(["ising-import", str(source), "--out", str(out)])
    return code, stderr.getvalue()


@given(
    raw=st.one_of(
        st.binary(max_size=300).map(lambda body: ZIP_MAGIC + body),
        st.integers(0, len(REAL_NPZ)).map(lambda cut: REAL_NPZ[:cut]),
    ),
)
def test_cli_import_failure_writes_nothing(raw):
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "in.npz"
        source.write_bytes(raw)
        out_dir = Path(folder) / "out"
        out_dir.mkdir()
        out = out_dir / "data.npz"
        code, err = run_import_cli(source, out)
        if code == 0:
            assert raw == REAL_NPZ
            assert len(load_dataset(out)) == 8
            assert [path.name for path in out_dir.iterdir()] == ["data.npz"]
            return
        assert code == 2, err
        assert len(err.strip().splitlines()) == 1, err
        assert err.startswith("groklab ising-import: error: ")
        assert list(out_dir.iterdir()) == []


def test_cli_import_write_failure_leaves_nothing(tmp_path, monkeypatch):
    source = tmp_path / "in.npz"
    source.write_bytes(REAL_NPZ)
    out_dir = tmp_path / "out"
    out_dir.mkdir()

    def write_half_then_fail(handle, **arrays):
        handle.write(b"PK\x03\x04 half an archive")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez_compressed", write_half_then_fail)
    code, err = run_import_cli(source, out_dir / "data.npz")
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1, err
    assert "No space left on device" in err
    assert list(out_dir.iterdir()) == []


# 4. Run folders and checkpoints --------------------------------------------


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """Return a finished modadd run folder: 4 epochs, checkpoints 0, 1, 2, 4."""
    run_dir = tmp_path_factory.mktemp("fuzz") / "run"
    code = main([
        "train", "--task", "modadd", "--regime", "grok", "--epochs", "4",
        "--out", str(run_dir), "--quiet", "--set", "p=23", "--set", "hidden=32",
        "--set", "checkpoint_dense_until=2", "--set", "checkpoint_every=2",
        "--set", "checkpoint_log_points=0",
    ])
    assert code == 0
    return run_dir


JSON_FILES = {
    "config.json": ["config", "provenance"],
    "status.json": ["state", "epoch", "message"],
}
RUN_FILES = [*JSON_FILES, "metrics.csv"]
DEEP_JSON = "[" * LONG + "]" * LONG


@st.composite
def damages(draw) -> tuple[str, str, Any]:
    """Return one damage to a run folder file as (file name, kind, payload)."""
    name = draw(st.sampled_from(RUN_FILES))
    kinds = ["bytes", "truncate", "delete", "directory"]
    kinds += ["field", "drop field", "document"] if name in JSON_FILES else ["cell", "line"]
    kind = draw(st.sampled_from(kinds))
    if kind == "bytes":
        payload = draw(st.binary(max_size=300))
    elif kind == "truncate":
        payload = draw(st.floats(0.0, 1.0, exclude_max=True))
    elif kind in ("field", "drop field"):
        keys = JSON_FILES[name] + ([f"config.{key}" for key in field_names(RunConfig)]
                                   if name == "config.json" else [])
        value = draw(JSON_VALUES | st.sampled_from(["finished", "running", "x\ny"]))
        payload = (draw(st.sampled_from(keys) | st.text(max_size=6)), value)
    elif kind == "document":
        payload = draw(
            JSON_VALUES.map(json.dumps)
            | st.sampled_from([DEEP_JSON, "1" * 5000, "NaN", '{"config": 1e999}', ""])
        )
    elif kind == "cell":
        payload = (draw(st.integers(0, 5)), draw(st.integers(0, 6)),
                   draw(st.text(max_size=20) | st.sampled_from(["nan", "1e999", "x" * LONG])))
    elif kind == "line":
        payload = draw(st.text(max_size=40))
    else:
        payload = None
    return name, kind, payload


def apply_damage(run_dir: Path, name: str, kind: str, payload: Any) -> None:
    """Apply one damage from ``damages`` to ``run_dir / name``."""
    path = run_dir / name
    if not path.is_file():
        return  # an earlier damage removed it
    if kind == "bytes":
        path.write_bytes(payload)
    elif kind == "truncate":
        raw = path.read_bytes()
        path.write_bytes(raw[: int(payload * len(raw))])
    elif kind == "delete":
        path.unlink()
    elif kind == "directory":
        path.unlink()
        (path / "inner").mkdir(parents=True)
    elif kind in ("field", "drop field"):
        _damage_json_field(path, kind, *payload)
    elif kind == "document":
        path.write_text(payload)
    elif kind == "cell":
        _damage_csv_cell(path, *payload)
    elif kind == "line":
        with open(path, "a") as handle:
            handle.write(payload + "\n")


def _damage_json_field(path: Path, kind: str, key: str, value: Any) -> None:
    try:
        document = json.loads(path.read_text())
    except ValueError:
        return
    if not isinstance(document, dict):
        return  # an earlier damage replaced the whole document
    target = document
    if key.startswith("config.") and isinstance(document.get("config"), dict):
        target, key = document["config"], key[len("config."):]
    if kind == "drop field":
        target.pop(key, None)
    else:
        target[key] = value
    path.write_text(json.dumps(document, allow_nan=True))


def _damage_csv_cell(path: Path, row: int, column: int, text: str) -> None:
    try:
        lines = path.read_text().splitlines()
    except UnicodeDecodeError:
        return  # an earlier damage wrote bytes that are not text
    if row < len(lines):
        cells = lines[row].split(",")
        cells[column % len(cells)] = text
        lines[row] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")


def load_or_reject(call: Callable[[], Any], error_type: type[ValueError]) -> Any:
    """Return ``call()``, or None when it raises ``error_type`` with one line."""
    try:
        result = call()
    except error_type as error:
        count_outcome(type(error).__name__)
        one_line(error)
        return None
    count_outcome("loaded")
    return result


@given(damage_list=st.lists(damages(), min_size=1, max_size=3))
def test_damaged_run_folder(finished_run, damage_list):
    config = read_run(finished_run).config
    with tempfile.TemporaryDirectory() as folder:
        run_dir = Path(folder) / "run"
        shutil.copytree(finished_run, run_dir)
        for damage in damage_list:
            apply_damage(run_dir, *damage)
        before = tree_snapshot(run_dir)
        run = load_or_reject(lambda: read_run(run_dir), RunFolderError)
        if run is not None:
            assert run.status["state"] == "finished"
        unfinished = load_or_reject(
            lambda: read_run(run_dir, allow_unfinished=True), RunFolderError
        )
        if unfinished is not None:
            lengths = {len(values) for values in unfinished.metrics.values()}
            assert len(lengths) == 1
            assert lengths != {0}
            assert isinstance(unfinished.provenance, dict)
        load_or_reject(
            lambda: plan_start(config, run_dir, force=False, resume=True), ValueError
        )
        assert tree_snapshot(run_dir) == before


def checkpoint_files(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "checkpoints").glob("*.safetensors")) + [
        run_dir / "last.safetensors"
    ]


def expect_checkpoint_error(raw: bytes) -> None:
    """Assert that loading the checkpoint bytes ``raw`` raises a one-line
    CheckpointError."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "epoch_0000001.safetensors"
        path.write_bytes(raw)
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(path)
        one_line(info.value)


def header_end(raw: bytes) -> int:
    """Return the offset of the first tensor byte: 8 length bytes plus the header."""
    return 8 + int.from_bytes(raw[:8], "little")


@given(data=st.data())
def test_truncated_checkpoint_detected(finished_run, data):
    path = data.draw(st.sampled_from(checkpoint_files(finished_run)), label="file")
    raw = path.read_bytes()
    cut = data.draw(st.integers(0, len(raw) - 1), label="cut")
    expect_checkpoint_error(raw[:cut])


@given(data=st.data())
def test_damaged_checkpoint_header_detected(finished_run, data):
    path = data.draw(st.sampled_from(checkpoint_files(finished_run)), label="file")
    raw = bytearray(path.read_bytes())
    end = header_end(raw)
    if data.draw(st.booleans(), label="length prefix"):
        length = data.draw(st.integers(0, len(raw) + 16).filter(lambda n: n != end - 8))
        raw[:8] = length.to_bytes(8, "little")
    else:
        # Setting the top bit leaves a byte that is not valid UTF-8 on its own.
        index = data.draw(st.integers(8, end - 1), label="index")
        raw[index] ^= 0x80
    expect_checkpoint_error(bytes(raw))


@given(data=st.data())
def test_checkpoint_tensor_byte_flip_detected(finished_run, data):
    """Require the checkpoint's SHA-256 of the tensor data to catch any flipped bit.

    Without that check a flipped data byte loads as a silently changed weight.
    """
    path = data.draw(st.sampled_from(checkpoint_files(finished_run)), label="file")
    raw = bytearray(path.read_bytes())
    index = data.draw(st.integers(header_end(raw), len(raw) - 1), label="index")
    raw[index] ^= data.draw(st.integers(1, 255), label="mask")
    expect_checkpoint_error(bytes(raw))


# 5. Long inputs ------------------------------------------------------------


@pytest.mark.parametrize("cls", CONFIG_CLASSES, ids=lambda cls: cls.__name__)
def test_long_override_values(cls):
    base = RUN_BASE if cls is RunConfig else {}
    for name in field_names(cls):
        for value in ("9" * LONG, "x" * LONG, ",".join(["1"] * (LONG // 2))):
            assert_fast(lambda: apply_overrides(cls, base, [f"{name}={value}"]))
        assert_fast(lambda: config_from_dict(cls, {**base, name: "x" * LONG}))
    assert_fast(lambda: apply_overrides(cls, base, ["k" * LONG + "=1"]))
    assert_fast(lambda: apply_overrides(cls, base, ["k" * LONG]))


@pytest.mark.parametrize(
    "pair",
    ["ising_n_temperatures=100000000", "ising_n_near_tc=100000000", "p=" + "9" * 4000],
)
def test_huge_counts_rejected_fast(pair):
    assert_fast(lambda: apply_overrides(RunConfig, RUN_BASE, [pair]))


def test_long_run_folder_files(finished_run):
    with tempfile.TemporaryDirectory() as folder:
        run_dir = Path(folder) / "run"
        for text in (DEEP_JSON, "x" * LONG, '{"config": "' + "x" * LONG + '"}'):
            shutil.copytree(finished_run, run_dir)
            (run_dir / "config.json").write_text(text)
            assert_fast(lambda: read_run(run_dir))
            shutil.rmtree(run_dir)
        shutil.copytree(finished_run, run_dir)
        with open(run_dir / "metrics.csv", "a") as handle:
            handle.write("5," + "7" * LONG + ",1,1,1,1\n")
        assert_fast(lambda: read_run(run_dir))


def test_long_pickle_configuration():
    record = ([1, -1] * (LONG // 2), 0, 1.5)
    assert_fast(lambda: import_bytes(pickle.dumps([record]), "in.pkl", trust_pickle=True))
