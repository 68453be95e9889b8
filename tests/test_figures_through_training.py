"""Feature rows through training and the figure that stacks all measures by epoch."""

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.colors import to_hex

from groklab.analysis.features import jaccard
from groklab.analysis.run import analyze_run
from groklab.cli import main
from groklab.config import AnalysisConfig
from groklab.report.figures import (
    COLORS,
    RunView,
    plot_through_training,
    save_figure,
    task_figures,
)
from groklab.training.runfolder import read_metrics

# Within 30 epochs at lr 0.1 both tiny modadd runs fit their training sets
# (grok near epoch 26, steady near 19) but never their test sets.
TINY_MODADD = [
    "--task", "modadd", "--epochs", "30", "--set", "p=13", "--set", "hidden=16",
    "--set", "checkpoint_every=1", "--set", "lr=0.1",
]
TINY_ISING = [
    "--task", "ising", "--epochs", "3", "--set", "ising_lattice=8",
    "--set", "ising_n_temperatures=6", "--set", "ising_samples_per_temperature=20",
    "--set", "ising_train=40", "--set", "ising_test=60", "--set", "hidden=10",
    "--set", "lr=1e-3",
]
TINY_ANALYSIS = AnalysisConfig(
    fisher_inputs=24, geometry_fisher_inputs=8, n_fractions=11,
    pruning_over_time_fractions=11, pruning_checkpoints=5,
)
TARGETS = {"energy", "abs_magnetisation"}
N_PANELS = 6


def train_and_analyse(out, task_args, regime, cache_dir=None):
    """Train a tiny run into ``out`` and return its analysis, without figures."""
    cache = ["--cache-dir", str(cache_dir)] if cache_dir else []
    code = main(["train", *task_args, "--regime", regime, "--out", str(out),
                 "--quiet", *cache])
    assert code == 0
    return analyze_run(out, TINY_ANALYSIS, progress=False, figures=False)


@pytest.fixture(scope="module")
def modadd_runs(tmp_path_factory):
    """Return {regime: (run folder, analysis)} for tiny grok and steady modadd runs."""
    root = tmp_path_factory.mktemp("through_modadd")
    return {
        regime: (root / regime, train_and_analyse(root / regime, TINY_MODADD, regime))
        for regime in ("grok", "steady")
    }


@pytest.fixture(scope="module")
def ising_analysis(tmp_path_factory):
    root = tmp_path_factory.mktemp("through_ising")
    return train_and_analyse(root / "run", TINY_ISING, "grok", root / "cache")


@pytest.fixture(scope="module")
def modadd_views(modadd_runs):
    return [
        RunView(regime, read_metrics(run_dir / "metrics.csv"), analysis)
        for regime, (run_dir, analysis) in modadd_runs.items()
    ]


@pytest.fixture(scope="module")
def through_figure(modadd_views):
    """Return the through-training figure as the report draws it, with the others."""
    return task_figures(modadd_views)["through_training"]


@pytest.fixture(autouse=True)
def close_figures():
    """Close every figure after each test, so pyplot never warns about open ones."""
    yield
    plt.close("all")


def rows_of(analysis):
    return analysis["features_over_time"]["rows"]


def vertical_lines(ax, epoch, color):
    """Return the lines of ``ax`` drawn vertically at ``epoch`` in ``color``."""
    return [
        line for line in ax.lines
        if list(line.get_xdata()) == [epoch, epoch]
        and to_hex(line.get_color()) == color
    ]


def span_limits(ax, color):
    """Return the (start, end) epochs of the shaded spans of ``ax`` in ``color``."""
    limits = []
    for patch in ax.patches:
        if to_hex(patch.get_facecolor()) != color:
            continue
        xs = patch.get_patch_transform().transform(patch.get_path().vertices)[:, 0]
        limits.append((float(xs.min()), float(xs.max())))
    return limits


# --- Feature rows ----------------------------------------------------------------


@pytest.mark.parametrize("regime", ["grok", "steady"])
def test_modadd_rows_have_all_keys(modadd_runs, regime):
    _, analysis = modadd_runs[regime]
    expected = {"epoch", "top_k_norm_fraction", "key_frequencies", "ipr",
                "jaccard_to_final"}
    for row in rows_of(analysis):
        assert set(row) == expected, row["epoch"]


def test_modadd_key_frequencies_are_valid(modadd_runs):
    _, analysis = modadd_runs["grok"]
    p = analysis["config"]["p"]
    for row in rows_of(analysis):
        frequencies = row["key_frequencies"]
        assert all(isinstance(f, int) for f in frequencies), row["epoch"]
        assert frequencies == sorted(set(frequencies)), row["epoch"]
        assert len(frequencies) == TINY_ANALYSIS.top_k, row["epoch"]
        assert frequencies[0] >= 1, row["epoch"]
        assert frequencies[-1] <= p // 2, row["epoch"]


@pytest.mark.parametrize("regime", ["grok", "steady"])
def test_final_row_matches_final_features(modadd_runs, regime):
    _, analysis = modadd_runs[regime]
    final_row = rows_of(analysis)[-1]
    features = analysis["features"]
    assert final_row["epoch"] == analysis["final_checkpoint_epoch"]
    assert final_row["key_frequencies"] == features["key_frequencies"]
    assert final_row["top_k_norm_fraction"] == features["top_k_norm_fraction"]
    assert final_row["jaccard_to_final"] == 1.0


def test_final_ipr_matches_spectrum(modadd_runs):
    _, analysis = modadd_runs["grok"]
    features = analysis["features"]
    power = np.add(features["a"]["spectrum"], features["b"]["spectrum"])
    expected = np.sum((power / power.sum()) ** 2)
    assert rows_of(analysis)[-1]["ipr"] == pytest.approx(expected, rel=1e-12)


def test_ipr_within_bounds(modadd_runs):
    _, analysis = modadd_runs["grok"]
    n_bins = analysis["config"]["p"] // 2 + 1
    for row in rows_of(analysis):
        assert 1 / n_bins - 1e-12 <= row["ipr"] <= 1.0, row["epoch"]


@pytest.mark.parametrize("regime", ["grok", "steady"])
def test_jaccard_matches_direct_call(modadd_runs, regime):
    _, analysis = modadd_runs[regime]
    rows = rows_of(analysis)
    final = rows[-1]["key_frequencies"]
    for row in rows:
        expected = jaccard(row["key_frequencies"], final)
        assert row["jaccard_to_final"] == expected, row["epoch"]


def test_jaccard_changes_during_training(modadd_runs):
    # The key frequencies of these runs change along the way, so some rows
    # must fall below 1; all 1.0 would mean the overlap was never computed.
    values = [row["jaccard_to_final"] for _, analysis in modadd_runs.values()
              for row in rows_of(analysis)]
    assert min(values) < 1.0


def test_ising_rows_have_probes(ising_analysis):
    layers = set(ising_analysis["features"]["layers"])
    for row in rows_of(ising_analysis):
        assert set(row) == {"epoch", "max_abs_corr", "probe_r2"}, row["epoch"]
        assert set(row["probe_r2"]) == layers, row["epoch"]
        assert set(row["max_abs_corr"]) == layers, row["epoch"]
        for layer, scores in row["probe_r2"].items():
            assert set(scores) == TARGETS, (row["epoch"], layer)
            for target, value in scores.items():
                assert isinstance(value, float), (row["epoch"], layer, target)
                assert value <= 1.0, (row["epoch"], layer, target)


def test_ising_final_probes_match_features(ising_analysis):
    final_row = rows_of(ising_analysis)[-1]
    for layer, entry in ising_analysis["features"]["layers"].items():
        assert final_row["probe_r2"][layer] == entry["probe_r2"], layer
        for target in TARGETS:
            expected = entry["correlations"][target]["max_abs_corr"]
            assert final_row["max_abs_corr"][layer][target] == expected, layer


# --- Figure from real runs --------------------------------------------------------


def test_figure_has_stacked_panels(through_figure):
    axes = through_figure.axes
    assert len(axes) == N_PANELS
    for index, ax in enumerate(axes):
        assert ax.get_title().startswith(f"({'abcdef'[index]}) "), ax.get_title()
        assert "not measured" not in ax.get_title(), ax.get_title()
    assert "accuracy" in axes[0].get_title()
    assert "compression factor" in axes[3].get_title()
    assert "Fisher step length" in axes[4].get_title()
    assert "Fisher cosine" in axes[5].get_title()


def test_figure_shares_epoch_axis(through_figure):
    axes = through_figure.axes
    for ax in axes[1:]:
        assert axes[0].get_shared_x_axes().joined(axes[0], ax)
    assert axes[-1].get_xlabel() == "epoch"
    assert {ax.get_xlim() for ax in axes} == {axes[0].get_xlim()}


def test_figure_marks_fit_and_plateau(modadd_views, through_figure):
    axes = through_figure.axes
    for view in modadd_views:
        train_fit = view.analysis["timing"]["epoch_train_fit"]
        assert train_fit is not None
        assert view.analysis["timing"]["epoch_test_fit"] is None
        last_epoch = float(view.metrics["epoch"][-1])
        for index, ax in enumerate(axes):
            lines = vertical_lines(ax, train_fit, view.color)
            assert len(lines) == 1, (view.label, index)
            # With no test fit the plateau lasts to the end of the run.
            limits = span_limits(ax, view.color)
            assert limits == [(train_fit, last_epoch)], (view.label, index)


def test_figure_legends_fits_once(through_figure):
    axes = through_figure.axes
    first = axes[0].get_legend_handles_labels()[1]
    assert "grok: train fit (26)" in first
    assert "grok: plateau, test fit not reached" in first
    for ax in axes[1:]:
        labels = ax.get_legend_handles_labels()[1]
        assert not [label for label in labels if "fit" in label], labels


def test_figure_draws_fisher_compression(through_figure):
    ax = through_figure.axes[3]
    labels = ax.get_legend_handles_labels()[1]
    assert "grok, order fisher" in labels
    assert "steady, order fisher" in labels
    assert not [label for label in labels if "magnitude" in label]
    assert ax.get_yscale() == "log"


def test_figure_draws_ising_probes(ising_analysis):
    metrics = {
        "epoch": np.arange(4.0), "train/acc": np.linspace(0.4, 0.6, 4),
        "test/acc": np.linspace(0.4, 0.5, 4), "test/loss": np.linspace(0.7, 0.6, 4),
    }
    view = RunView("grok", metrics, ising_analysis)
    ax = plot_through_training([view]).axes[2]
    assert "probe R^2" in ax.get_title()
    energy = next(line for line in ax.lines if line.get_label() == "grok: energy")
    expected = [max(scores["energy"] for scores in row["probe_r2"].values())
                for row in rows_of(ising_analysis)]
    assert list(energy.get_ydata()) == pytest.approx(expected)


# --- Figure from synthetic analyses -----------------------------------------------


def synthetic_view(label, n_epochs, timing=None, rows_keys=None):
    """Return a view of a made-up modadd run with no pruning_over_time record."""
    epochs = np.arange(n_epochs + 1, dtype=float)
    checkpoints = [0, n_epochs // 4, n_epochs // 2, n_epochs]
    rows = [{"epoch": e, "top_k_norm_fraction": 0.2 + 0.1 * i,
             "jaccard_to_final": 0.25 * (i + 1)} for i, e in enumerate(checkpoints)]
    if rows_keys is not None:
        rows = [{key: row[key] for key in rows_keys} for row in rows]
    analysis = {
        "task": "modadd",
        "analysis_config": {"top_k": 5},
        "features_over_time": {"rows": rows},
        "geometry": {
            "epochs": checkpoints,
            "step_epochs": checkpoints[:-1],
            "turn_epochs": checkpoints[1:-1],
            "all": {"fisher_step": [4.0, 2.0, 1.0], "fisher_cosine": [0.9, 0.5]},
        },
    }
    if timing is not None:
        analysis["timing"] = timing
    metrics = {
        "epoch": epochs,
        "train/acc": np.minimum(1.0, epochs / (n_epochs / 4)),
        "test/acc": np.minimum(1.0, epochs / n_epochs),
        "test/loss": np.exp(-epochs / n_epochs),
    }
    return RunView(label, metrics, analysis)


def test_missing_records_say_not_measured(tmp_path):
    view = synthetic_view("grok", 40, rows_keys=("epoch", "top_k_norm_fraction"))
    fig = plot_through_training([view])
    axes = fig.axes
    assert len(axes) == N_PANELS
    assert axes[0].get_title().endswith("(not measured: grok fit epochs)")
    assert "not measured: grok Jaccard to final key frequencies" in axes[2].get_title()
    assert axes[3].get_title().endswith("(not measured: grok)")
    assert len(axes[3].lines) == 0
    assert axes[3].get_yscale() == "linear"
    for ax in axes:
        assert len(ax.patches) == 0
    fractions = next(line for line in axes[2].lines
                     if line.get_label() == "grok: top-5 norm fraction")
    assert list(fractions.get_ydata()) == pytest.approx([0.2, 0.3, 0.4, 0.5])
    assert save_figure(fig, tmp_path / "old").is_file()


def test_plateau_ends_at_test_fit():
    timing = {"epoch_train_fit": 500, "epoch_test_fit": 1500}
    grok = synthetic_view("grok", 2000, timing=timing)
    steady = synthetic_view("steady", 2000,
                            timing={"epoch_train_fit": 400, "epoch_test_fit": 420})
    axes = plot_through_training([grok, steady]).axes
    for ax in axes:
        assert span_limits(ax, COLORS["grok"]) == [(500.0, 1500.0)]
        assert span_limits(ax, COLORS["steady"]) == [(400.0, 420.0)]
        assert len(vertical_lines(ax, 1500, COLORS["grok"])) == 1
        assert ax.get_xscale() == "symlog"
    labels = axes[0].get_legend_handles_labels()[1]
    assert "grok: plateau" in labels
    assert "steady: test fit (420)" in labels


def test_no_plateau_when_test_fits_first():
    view = synthetic_view("steady", 40,
                          timing={"epoch_train_fit": 12, "epoch_test_fit": 10})
    axes = plot_through_training([view]).axes
    for ax in axes:
        assert len(ax.patches) == 0
        assert len(vertical_lines(ax, 12, COLORS["steady"])) == 1
        assert len(vertical_lines(ax, 10, COLORS["steady"])) == 1
