"""Sweep grid and seed parsing, expansion into run configs, and the table helpers."""

import math

import pytest

from groklab.cli import main
from groklab.config import ConfigError, Regime
from groklab.report.sweep import aggregate, write_sweep_figures
from groklab.sweep.grid import SweepSpec, format_value, parse_grids, parse_seeds
from groklab.sweep.table import format_cell, sort_rows
from cli_assertions import assert_one_line_error


@pytest.mark.parametrize(
    "text, expected",
    [
        ("3", [3]),
        ("0-9", list(range(10))),
        ("0,2,5", [0, 2, 5]),
        ("0-2,7", [0, 1, 2, 7]),
        (" 4 - 5 ", [4, 5]),
    ],
)
def test_parse_seeds_forms(text, expected):
    assert parse_seeds(text) == expected


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("", "invalid --seeds ''"),
        ("a", "invalid seed 'a'"),
        ("-1", "invalid seed '-1'"),
        ("1.5", "invalid seed '1.5'"),
        ("1,,2", "invalid --seeds '1,,2'"),
        ("5-2", "the start must not exceed the end, e.g. 2-5"),
        ("0-3,2", "seed 2 appears twice"),
        ("0-100000000", "more than 100000 seeds"),
        ("0-60000,70000-130000", "more than 100000 seeds"),
    ],
)
def test_parse_seeds_rejects(text, fragment):
    with pytest.raises(ConfigError, match=fragment) as info:
        parse_seeds(text)
    assert "\n" not in str(info.value)


def test_parse_grids_typed_values():
    grid = parse_grids(["alpha=0.1,0.3,1", "hidden=16,32", "ising_data_file=none,a.npz"])
    assert grid[0] == ("alpha", [0.1, 0.3, 1.0])
    assert all(isinstance(v, float) for v in grid[0][1])
    assert grid[1] == ("hidden", [16, 32])
    assert grid[2] == ("ising_data_file", [None, "a.npz"])


@pytest.mark.parametrize(
    "texts, fragment",
    [
        (["alpha"], "expected KEY=V1,V2"),
        (["alpha="], "one or more comma-separated values"),
        (["alpha=1,,2"], "one or more comma-separated values"),
        (["beta=1,2"], "unknown config key 'beta'"),
        (["seed=1,2"], "set seed with --seeds"),
        (["task=ising"], "set task with --task"),
        (["alpha=x"], "invalid value 'x' for alpha"),
        (["hidden=1.5"], "invalid value '1.5' for hidden"),
        (["alpha=1,1.0"], "value '1.0' appears twice"),
        (["alpha=1", "alpha=2"], "grid key 'alpha' given twice"),
    ],
)
def test_parse_grids_rejects(texts, fragment):
    with pytest.raises(ConfigError, match=fragment):
        parse_grids(texts)


def spec(grid=("alpha=0.1,10",), seeds="0-1", overrides=(), regime=None):
    return SweepSpec("modadd", regime, parse_grids(list(grid)), parse_seeds(seeds),
                     list(overrides))


def test_expansion_rejects_too_many_runs():
    too_many = spec(["alpha=0.1,10"], "0-50000")
    with pytest.raises(ConfigError, match="give 100002 runs, more than the 100000"):
        too_many.points()


def test_expansion_order_and_names():
    points = spec(["alpha=0.1,10", "weight_decay=0,1e-4"], "0-1", ["p=13"]).points()
    assert len(points) == 8
    names = [p.name for p in points]
    assert names[:3] == [
        "alpha=0.1_weight_decay=0_seed0",
        "alpha=0.1_weight_decay=0_seed1",
        "alpha=0.1_weight_decay=0.0001_seed0",
    ]
    assert names[-1] == "alpha=10_weight_decay=0.0001_seed1"
    last = points[-1].config
    assert (last.alpha, last.weight_decay, last.seed, last.p) == (10.0, 1e-4, 1, 13)
    assert last.regime is Regime.GROK
    assert points[0].values == {"alpha": 0.1, "weight_decay": 0.0}


def test_expansion_seeds_only():
    points = spec([], "3,5").points()
    assert [p.name for p in points] == ["seed3", "seed5"]


def test_regime_grid_takes_regime_defaults():
    points = spec(["regime=grok,steady"], "0").points()
    assert [p.config.alpha for p in points] == [10.0, 0.1]
    assert [p.name for p in points] == ["regime=grok_seed0", "regime=steady_seed0"]


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"overrides": ["alpha=3"]}, "alpha is set by both --grid and --set"),
        ({"overrides": ["seed=3"]}, "set seed with --seeds"),
        ({"overrides": ["regime=steady"]}, "set the regime with --regime"),
        ({"grid": ["regime=grok,steady"], "regime": "grok"}, "conflicts with --grid"),
        ({"grid": ["alpha=0,1"]}, "invalid alpha 0.0"),
        ({"grid": ["regime=grok,fast"]}, "unknown regime 'fast'"),
        ({"grid": ["ising_data_file=a/b.npz,a_b.npz"]}, "both map to the run folder"),
    ],
)
def test_expansion_rejects(kwargs, fragment):
    with pytest.raises(ConfigError, match=fragment):
        spec(**kwargs).points()


@pytest.mark.parametrize(
    "value, text",
    [(10.0, "10"), (0.1, "0.1"), (1e-05, "1e-05"), (3, "3"), (None, "none"),
     (True, "true"), ("a/b c.npz", "a-b-c.npz"), (Regime.STEADY, "steady")],
)
def test_format_value_for_folder_names(value, text):
    assert format_value(value) == text


@pytest.mark.parametrize(
    "value, text",
    [(None, ""), (0.1, "0.1"), (math.inf, "inf"), (math.nan, "nan"), (False, "false"),
     ([3, 7], "3 7"), (12, "12"), (1 / 3, "0.3333333333333333")],
)
def test_format_cell(value, text):
    assert format_cell(value) == text


def test_sort_rows_by_grid_then_seed():
    rows = [{"alpha": a, "seed": s} for a in (10.0, None, 0.1) for s in (1, 0)]
    ordered = [(r["alpha"], r["seed"]) for r in sort_rows(rows, ["alpha"])]
    assert ordered == [(0.1, 0), (0.1, 1), (10.0, 0), (10.0, 1), (None, 0), (None, 1)]


def test_aggregate_mean_and_spread():
    rows = [
        {"alpha": 1.0, "wd": 0, "seed": 0, "delay": 10},
        {"alpha": 1.0, "wd": 0, "seed": 1, "delay": 20},
        {"alpha": 1.0, "wd": 0, "seed": 2, "delay": None},
        {"alpha": 0.1, "wd": 0, "seed": 0, "delay": math.inf},
    ]
    stats = aggregate(rows, "alpha", ["wd"], "delay")
    entry = stats[(0,)]
    assert entry["x"] == [0.1, 1.0]
    assert entry["mean"][1] == 15.0
    assert entry["std"][1] == 5.0
    assert (entry["min"][1], entry["max"][1]) == (10.0, 20.0)
    assert entry["n"] == [0, 2]
    assert entry["n_excluded"] == [1, 1]
    assert math.isnan(entry["mean"][0])


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--grid", "alpha=0.1,,1"], "comma-separated values"),
        (["--grid", "beta=1"], "unknown config key 'beta'"),
        (["--seeds", "9-0"], "the start must not exceed the end"),
        (["--seeds", "x"], "invalid seed 'x'"),
        (["--set", "alpha=1", "--grid", "alpha=1,2"], "set by both --grid and --set"),
        (["--analysis-set", "fisher_form=empirical"], "invalid fisher_form"),
        (["--backend", "spark"], "invalid choice: 'spark'"),
        (["--max-members", "0"], "invalid --max-members 0"),
        (["--workers", "0"], "invalid --workers 0"),
        (["--address", "127.0.0.1:1"], "applies only to --backend ray"),
    ],
)
def test_sweep_cli_bad_input(tmp_path, capsys, args, fragment):
    out = tmp_path / "sweep"
    code = main(["sweep", "--task", "modadd", "--out", str(out), "--quiet",
                 "--set", "p=11", *args])
    assert_one_line_error(capsys, code, fragment)
    assert not out.exists()


@pytest.mark.parametrize(
    "grid_values",
    [[0.1, 1.0, 10.0], [3.0], [0.0], [1e30], ["grok", "steady"]],
)
def test_sweep_figures_without_values(tmp_path, grid_values):
    rows = [{"alpha": value, "wd": wd, "seed": seed, "grokking_delay": None,
             "final_test_acc": 0.5 + 0.1 * seed, "compression_factor_fisher": math.inf}
            for value in grid_values for wd in (0.0, 1e-4) for seed in (0, 1)]
    paths = write_sweep_figures(rows, ["alpha", "wd"], tmp_path)
    assert [p.name for p in paths] == ["sweep_alpha.png", "sweep_wd.png"]
    for path in paths:
        assert path.stat().st_size > 0
        assert path.with_suffix(".pdf").is_file()
