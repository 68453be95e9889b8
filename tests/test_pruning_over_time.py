"""Compression factors at checkpoints through training, on a tiny modadd run."""

import json
import math

import pytest
import torch

from groklab.analysis.fisher import fisher_diagonal
from groklab.analysis.pruning import (
    compression_factor,
    default_fractions,
    linear_fit,
    pruning_curve,
    saliency,
)
from groklab.analysis.pruning.core import ScopeVector
from groklab.analysis.pruning.curve import make_evaluator
from groklab.analysis.run import (
    _held_out,
    _load_params,
    analyze_run,
    select_pruning_checkpoints,
)
from groklab.cli import main
from groklab.config import AnalysisConfig
from groklab.models import build_model
from groklab.report.figures import RunView, plot_compressibility_over_time, save_figure
from groklab.sweep.table import analysis_columns
from groklab.tasks.loader import load_task
from groklab.training.checkpoints import load_checkpoint, model_tensors
from groklab.training.runfolder import read_metrics, read_run

# With lr 0.1 this tiny grok run reaches the train fit (near epoch 26) within
# 30 epochs and has both finite and unbounded compression factors. It never
# reaches the test fit, so the selection tests below cover that epoch.
TINY_RUN = [
    "--task", "modadd", "--regime", "grok", "--epochs", "30", "--set", "p=13",
    "--set", "hidden=16", "--set", "checkpoint_every=1", "--set", "lr=0.1",
]
ORDERS = ["fisher", "magnitude", "fisher_theta2"]
COLUMNS = ["compression_factor", "n_kept", "linear_fit_r2", "linear_fit_slope"]


def tiny_analysis_config(**overrides) -> AnalysisConfig:
    values = dict(
        fisher_inputs=24, geometry_fisher_inputs=8, n_fractions=11,
        pruning_over_time_fractions=11, pruning_checkpoints=5,
    )
    return AnalysisConfig(**{**values, **overrides})


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("pruning_time") / "run"
    code = main(["train", *TINY_RUN, "--out", str(out), "--quiet"])
    assert code == 0
    return out


@pytest.fixture(scope="module")
def analysis(run_dir):
    return analyze_run(run_dir, tiny_analysis_config(), progress=False)


def test_record_has_schema(analysis):
    record = analysis["pruning_over_time"]
    n = len(record["epochs"])
    assert 1 <= n <= 5
    assert record["tolerance"] == 0.01
    assert record["fisher_form"] == "regression"
    assert record["n_fractions"] == 11
    assert len(record["base_accuracy"]) == n
    assert list(record["orders"]) == ORDERS
    for order in ORDERS:
        entry = record["orders"][order]
        assert sorted(entry) == sorted(COLUMNS)
        for column in COLUMNS:
            assert len(entry[column]) == n, (order, column)
        assert all(isinstance(kept, int) for kept in entry["n_kept"])
    assert set(record["epoch_peak_compression"]) == set(ORDERS)


def test_record_matches_json_file(run_dir, analysis):
    stored = json.loads((run_dir / "analysis.json").read_text())
    assert stored["pruning_over_time"] == analysis["pruning_over_time"]


def test_epochs_include_final_and_fit(run_dir, analysis):
    epochs = analysis["pruning_over_time"]["epochs"]
    assert epochs == sorted(set(epochs))
    assert epochs[-1] == analysis["final_checkpoint_epoch"] == 30
    checkpoint_epochs = [epoch for epoch, _ in read_run(run_dir).checkpoints()]
    train_fit = analysis["timing"]["epoch_train_fit"]
    assert train_fit is not None
    nearest = min(checkpoint_epochs, key=lambda epoch: abs(epoch - train_fit))
    assert nearest in epochs


def test_run_has_finite_and_unbounded(analysis):
    factors = analysis["pruning_over_time"]["orders"]["fisher"]["compression_factor"]
    assert factors[1] is not None
    assert factors[-1] is None


def test_unbounded_factor_has_no_kept(analysis):
    for entry in analysis["pruning_over_time"]["orders"].values():
        for factor, kept in zip(entry["compression_factor"], entry["n_kept"]):
            # JSON stores inf as null, which must mean that nothing is kept.
            assert (factor is None) == (kept == 0)


def test_peak_epoch_is_max_finite_factor(analysis):
    record = analysis["pruning_over_time"]
    for order, entry in record["orders"].items():
        finite = [
            (factor, epoch) for factor, epoch in
            zip(entry["compression_factor"], record["epochs"]) if factor is not None
        ]
        expected = max(finite, key=lambda pair: pair[0])[1] if finite else None
        assert record["epoch_peak_compression"][order] == expected, order


@pytest.mark.parametrize("position", [1, -1])
def test_values_match_direct_call(run_dir, analysis, position):
    record = analysis["pruning_over_time"]
    epoch = record["epochs"][position]
    config = tiny_analysis_config()
    run = read_run(run_dir)
    model = build_model(run.config)
    data = load_task(run.config, None, progress=False)
    path = dict(run.checkpoints())[epoch]
    stored = model_tensors(load_checkpoint(path)[0])
    # The module's parameter order, as the analysis loads it.
    params = {name: stored[name] for name, _ in model.named_parameters()}
    inputs = _held_out(data, config)["pruning"]
    fisher = fisher_diagonal(model, inputs, "regression", params=params)
    for order in ORDERS:
        scores = saliency(params, fisher, order)
        args = (model, params, scores, data.test_inputs, data.test_targets)
        curve = pruning_curve(*args, default_fractions(11), order=order)
        result = compression_factor(*args, tolerance=0.01, curve=curve, order=order)
        fit = linear_fit(curve.fractions, curve.loss, max_fraction=0.5)
        entry = record["orders"][order]
        factor = entry["compression_factor"][position]
        assert entry["n_kept"][position] == result.n_kept, order
        if math.isinf(result.factor):
            assert factor is None, order
        else:
            assert factor == pytest.approx(result.factor, rel=1e-12), order
        assert entry["linear_fit_r2"][position] == pytest.approx(fit.r2, rel=1e-9)
        assert entry["linear_fit_slope"][position] == pytest.approx(fit.slope, rel=1e-9)
        assert record["base_accuracy"][position] == pytest.approx(result.base_accuracy)


def test_zero_checkpoints_omit_record(run_dir, tmp_path):
    config = tiny_analysis_config(pruning_checkpoints=0)
    result = analyze_run(run_dir, config, progress=False, figures=False)
    assert "pruning_over_time" not in result
    columns = analysis_columns(result)
    for order in ORDERS:
        assert columns[f"epoch_peak_compression_{order}"] is None
    view = RunView("steady", read_metrics(run_dir / "metrics.csv"), result)
    png = save_figure(plot_compressibility_over_time([view]), tmp_path / "empty")
    assert png.is_file()


def test_table_has_peak_columns(analysis):
    columns = analysis_columns(analysis)
    peaks = analysis["pruning_over_time"]["epoch_peak_compression"]
    for order in ORDERS:
        assert columns[f"epoch_peak_compression_{order}"] == peaks[order]


def test_run_figures_include_compressibility(run_dir, analysis):
    figures = run_dir / "figures"
    assert (figures / "compressibility_over_time.png").is_file()
    assert (figures / "compressibility_over_time.pdf").is_file()


def test_figure_marks_unbounded_and_times(run_dir, analysis, tmp_path):
    metrics = read_metrics(run_dir / "metrics.csv")
    record = json.loads(json.dumps(analysis["pruning_over_time"]))
    record["orders"]["fisher"]["compression_factor"][0] = None
    record["orders"]["fisher"]["n_kept"][0] = 0
    grok = RunView("grok", metrics, {**analysis, "pruning_over_time": record})
    steady = RunView("steady", metrics, analysis)
    fig = plot_compressibility_over_time([grok, steady])
    ax = fig.axes[0]
    labels = ax.get_legend_handles_labels()[1]
    assert "grok: unbounded (none kept)" in labels
    assert "steady, order fisher" in labels
    assert any(label.startswith("steady: train fit") for label in labels)
    assert ax.get_yscale() == "log"
    assert save_figure(fig, tmp_path / "two").is_file()


@pytest.mark.parametrize(
    "epochs, limit, fit_epochs, expected",
    [
        (list(range(11)), 20, [None, None], list(range(11))),
        (list(range(11)), 3, [None, None], [0, 5, 10]),
        (list(range(11)), 4, [7, 3], [0, 3, 7, 10]),
        (list(range(11)), 2, [7, 3], [7, 10]),
        (list(range(11)), 1, [7, 3], [10]),
        (list(range(11)), 0, [7, 3], []),
        ([0, 1, 2, 4, 8, 16, 32, 64], 3, [30, None], [0, 6, 7]),
        ([0, 10, 20, 30], 3, [12, 12], [0, 1, 3]),
    ],
)
def test_selection_keeps_final_and_fits(epochs, limit, fit_epochs, expected):
    assert select_pruning_checkpoints(epochs, limit, fit_epochs) == expected


def test_analysis_loads_params_for_the_fast_evaluator(run_dir):
    run = read_run(run_dir)
    model = build_model(run.config)
    data = load_task(run.config, None, progress=False)
    params = _load_params(run.checkpoints()[-1][1], model)
    assert list(params) == [name for name, _ in model.named_parameters()]
    saliency = {name: torch.ones_like(value) for name, value in params.items()}
    vector = ScopeVector(params, saliency, None)
    evaluator = make_evaluator(model, vector, data.test_inputs, data.test_targets,
                               "auto", 64, 1024)
    assert evaluator.method == "incremental"
