"""Figures, one function each, drawn from run metrics and analysis.json alone.

Every function takes a list of ``RunView`` (one per regime, drawn side by side
or overlaid) and returns a matplotlib Figure; nothing here computes science.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

STYLE = {
    "font.size": 10,
    "axes.titlesize": 10,
    "axes.labelsize": 10,
    "legend.fontsize": 8,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "figure.dpi": 110,
    "savefig.dpi": 150,
    "savefig.bbox": "tight",
}
COLORS = {"grok": "#c0392b", "steady": "#2471a3"}


@dataclass
class RunView:
    """One run as the figures draw it: regime label, metrics and analysis."""

    label: str
    metrics: dict[str, np.ndarray]
    analysis: dict[str, Any]

    @property
    def color(self) -> str:
        return COLORS.get(self.label, "#555555")


def _values(seq) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in seq], dtype=float)


def _epoch_axis(ax, max_epoch: float) -> None:
    """Use a symmetric-log epoch axis for long runs so the early phase stays visible."""
    if max_epoch > 1000:
        ax.set_xscale("symlog", linthresh=10)
        ax.set_xlim(left=0)
    ax.set_xlabel("epoch")


def _log_scale_y(ax) -> None:
    """Use a log y axis when the plotted data has positive values to show."""
    data = [np.asarray(line.get_ydata(), dtype=float) for line in ax.lines]
    if any(np.any(np.isfinite(d) & (d > 0)) for d in data):
        ax.set_yscale("log")


def _mark_times(
    ax, timing: dict[str, Any], color: str = "black", prefix: str = ""
) -> None:
    styles = {"epoch_train_fit": ("--", "train fit"), "epoch_test_fit": (":", "test fit")}
    for key, (style, label) in styles.items():
        if timing.get(key) is not None:
            ax.axvline(timing[key], color=color, linestyle=style, linewidth=1,
                       label=f"{prefix}{label} ({timing[key]})")


def plot_training_curves(views: list[RunView]) -> Figure:
    """Plot accuracy and loss against epoch, one column per regime, grokking times marked."""
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(2, len(views), figsize=(4.2 * len(views), 6), squeeze=False)
        for col, view in enumerate(views):
            epochs = view.metrics["epoch"]
            acc_ax, loss_ax = axes[0, col], axes[1, col]
            for split, style in (("train", "-"), ("test", "-.")):
                acc_ax.plot(epochs, view.metrics[f"{split}/acc"], style, color=view.color,
                            label=f"{split}")
                loss_ax.plot(epochs, view.metrics[f"{split}/loss"], style, color=view.color,
                             label=f"{split}")
            for ax in (acc_ax, loss_ax):
                _mark_times(ax, view.analysis.get("timing", {}))
                _epoch_axis(ax, epochs.max())
                ax.legend(loc="best")
            acc_ax.set_title(f"{view.label} (alpha = {view.analysis['config']['alpha']:g})")
            acc_ax.set_ylabel("accuracy (fraction correct)")
            acc_ax.set_ylim(-0.02, 1.02)
            loss_ax.set_ylabel("cross-entropy loss (nats)")
            _log_scale_y(loss_ax)
        fig.tight_layout()
    return fig


def plot_fourier_spectra(views: list[RunView]) -> Figure:
    """Plot first-layer Fourier power per frequency and each neuron's purity, per regime."""
    with plt.rc_context(STYLE):
        fig, (ax, purity_ax) = plt.subplots(
            1, 2, figsize=(12, 3.8), gridspec_kw={"width_ratios": [2, 1]}
        )
        width = 0.8 / len(views)
        for i, view in enumerate(views):
            feats = view.analysis["features"]
            power = _values(feats["a"]["spectrum"]) + _values(feats["b"]["spectrum"])
            share = power / power.sum() if power.sum() > 0 else np.zeros_like(power)
            freqs = np.arange(len(share))
            ax.bar(freqs + (i - (len(views) - 1) / 2) * width, share, width=width,
                   color=view.color,
                   label=f"{view.label}: key frequencies {feats['key_frequencies']}")
        ax.set_xlabel("frequency k (cycles per P tokens)")
        ax.set_ylabel("share of squared weight norm")
        ax.set_title("Fourier spectrum of the first-layer weights (tokens a and b)")
        ax.legend(loc="upper right")
        bins = np.linspace(0, 1, 21)
        for view in views:
            purity = _values(view.analysis["features"]["a"]["purity"])
            purity_ax.hist(purity[np.isfinite(purity)], bins=bins, color=view.color,
                           alpha=0.6, label=view.label)
        purity_ax.set_xlabel("neuron purity (power share of its dominant frequency)")
        purity_ax.set_ylabel("number of neurons")
        purity_ax.set_title("Per-neuron purity, token a")
        purity_ax.legend(loc="upper left")
        fig.tight_layout()
    return fig


def _layer_stat(layer: dict[str, Any], target: str, stat: str) -> float | None:
    if stat == "probe_r2":
        return layer["probe_r2"][target]
    return layer["correlations"][target][stat]


def plot_feature_correlations(views: list[RunView]) -> Figure:
    """Plot, per layer, the best unit's |correlation| and the linear-probe R^2."""
    targets = {"energy": "energy per spin", "abs_magnetisation": "|magnetisation| per spin"}
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, 4, figsize=(13, 3.4))
        layers = list(views[0].analysis["features"]["layers"])
        x = np.arange(len(layers))
        width = 0.8 / len(views)
        for col, (stat, stat_label) in enumerate(
            (("max_abs_corr", "max |Pearson r| over units"), ("probe_r2", "linear probe R^2"))
        ):
            for t, (target, target_label) in enumerate(targets.items()):
                ax = axes[2 * col + t]
                for i, view in enumerate(views):
                    feats = view.analysis["features"]["layers"]
                    heights = _values([_layer_stat(feats[layer], target, stat)
                                       for layer in layers])
                    ax.bar(x + (i - (len(views) - 1) / 2) * width, heights, width,
                           color=view.color, label=view.label)
                ax.set_xticks(x, layers)
                ax.set_xlabel("layer")
                ax.set_ylabel(stat_label)
                ax.set_title(target_label)
                # A probe can score far below 0 on held-out data. Clip the axis so
                # that such a bar does not flatten the others; the JSON has the value.
                ax.set_ylim(max(-0.5, min(0, ax.get_ylim()[0])), 1.05)
                ax.legend(loc="lower right")
        fig.tight_layout()
    return fig


def plot_pruning(views: list[RunView]) -> Figure:
    """Plot test loss and accuracy against pruned fraction, one column per pruning order."""
    orders = list(views[0].analysis["pruning"]["orders"])
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(2, len(orders), figsize=(4.2 * len(orders), 6),
                                 squeeze=False)
        for col, order in enumerate(orders):
            for view in views:
                entry = view.analysis["pruning"]["orders"][order]
                curve = entry["global"]
                compression = entry["compression"]
                if compression["factor"]:
                    label = f"{view.label} (CF {compression['factor']:.1f}x)"
                elif compression["n_kept"] == 0:
                    label = f"{view.label} (CF unbounded)"
                else:
                    label = view.label
                axes[0, col].plot(curve["fractions"], _values(curve["loss"]),
                                  color=view.color, label=label)
                axes[1, col].plot(curve["fractions"], _values(curve["accuracy"]),
                                  color=view.color, label=label)
            form = views[0].analysis["pruning"]["fisher_form"]
            axes[0, col].set_title(f"order: {order} ({form} Fisher)")
            _log_scale_y(axes[0, col])
            axes[0, col].set_ylabel("test cross-entropy (nats)")
            axes[1, col].set_ylabel("test accuracy (fraction correct)")
            for ax in axes[:, col]:
                ax.set_xlabel("fraction of parameters pruned")
                ax.legend(loc="best")
        fig.tight_layout()
    return fig


def plot_layer_pruning(views: list[RunView], order: str) -> Figure:
    """Plot per-layer pruning curves (test accuracy) for one order, one column per regime."""
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, len(views), figsize=(4.2 * len(views), 3.4),
                                 squeeze=False)
        for col, view in enumerate(views):
            ax = axes[0, col]
            layers = view.analysis["pruning"]["orders"][order]["layers"]
            for layer, curve in layers.items():
                ax.plot(curve["fractions"], _values(curve["accuracy"]),
                        label=f"{layer} ({curve['n_total']} params)")
            ax.set_title(f"{view.label}: per-layer pruning, order {order}")
            ax.set_xlabel("fraction of the layer's parameters pruned")
            ax.set_ylabel("test accuracy (fraction correct)")
            ax.legend(loc="best")
        fig.tight_layout()
    return fig


GEOMETRY_PANELS = [
    ("fisher_step", "step_epochs", "Fisher step length per epoch", "log"),
    ("euclidean_step", "step_epochs", "Euclidean step length per epoch", "log"),
    ("fisher_cosine", "turn_epochs", "Fisher cosine of consecutive steps", "linear"),
    ("euclidean_cosine", "turn_epochs", "Euclidean cosine of consecutive steps", "linear"),
    ("fisher_decay_cosine", "step_epochs", "Fisher cosine of step with -theta", "linear"),
    ("parameter_norm", "epochs", "parameter L2 norm", "linear"),
]


def plot_geometry(views: list[RunView], subset: str = "all") -> Figure:
    """Plot information-geometry measures over training for one parameter subset."""
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(2, 3, figsize=(13, 6.4))
        for ax, (key, x_key, label, scale) in zip(axes.flat, GEOMETRY_PANELS):
            for view in views:
                geometry = view.analysis["geometry"]
                x = np.array(geometry[x_key], dtype=float)
                y = _values(geometry[subset][key])
                if key.endswith("_step"):
                    # Checkpoints thin out later in training, so a step can span
                    # several epochs; divide by the span to compare like with like.
                    y = y / np.diff(np.array(geometry["epochs"], dtype=float))
                ax.plot(x, y, ".-", color=view.color, label=view.label, markersize=3)
                _epoch_axis(ax, x.max() if len(x) else 0)
            ax.set_ylabel(label)
            if scale == "log":
                _log_scale_y(ax)
            ax.legend(loc="best")
        form = views[0].analysis["geometry"]["fisher_form"]
        fig.suptitle(f"Trajectory in information space ({subset} parameters, {form} Fisher)")
        fig.tight_layout()
    return fig


def plot_features_over_time(views: list[RunView]) -> Figure:
    """Plot the headline feature measure at each analysed checkpoint."""
    task = views[0].analysis["task"]
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(6, 3.6))
        for view in views:
            rows = view.analysis["features_over_time"]["rows"]
            epochs = np.array([r["epoch"] for r in rows], dtype=float)
            if task == "modadd":
                values = _values([r["top_k_norm_fraction"] for r in rows])
                ylabel = f"share of norm in top-{view.analysis['analysis_config']['top_k']}" \
                    " frequencies"
            else:
                values = _values([r["max_abs_corr"]["fc1"]["energy"] for r in rows])
                ylabel = "fc1: max |r| with energy"
            ax.plot(epochs, values, ".-", color=view.color, label=view.label)
            _epoch_axis(ax, epochs.max())
        ax.set_ylabel(ylabel)
        ax.set_title("Features through training")
        ax.legend(loc="best")
        fig.tight_layout()
    return fig


def plot_compressibility_over_time(views: list[RunView]) -> Figure:
    """Plot the global compression factor at each pruned checkpoint, per regime.

    The Fisher order is drawn thick and other orders thin. A factor with no
    parameter kept is unbounded, so it is marked at the top edge of the axes.
    Views without ``pruning_over_time`` (older analyses) are left out.
    """
    views = [view for view in views if "pruning_over_time" in view.analysis]
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(6.4, 3.8))
        max_epoch = 0.0
        for view in views:
            record = view.analysis["pruning_over_time"]
            epochs = np.array(record["epochs"], dtype=float)
            max_epoch = max(max_epoch, epochs.max(initial=0.0))
            for order, entry in record["orders"].items():
                _plot_compression_line(ax, view, order, epochs, entry)
            _mark_times(ax, view.analysis.get("timing", {}), view.color,
                        f"{view.label}: ")
        _epoch_axis(ax, max_epoch)
        if any(_has_finite_factor(view) for view in views):
            ax.set_yscale("log")
        ax.set_ylabel("compression factor (total / kept)")
        if views:
            record = views[0].analysis["pruning_over_time"]
            ax.set_title(f"Compressibility through training ({record['fisher_form']} "
                         f"Fisher, tolerance {record['tolerance']:g})")
        else:
            ax.set_title("Compressibility through training (not measured)")
        if ax.get_legend_handles_labels()[0]:
            # Outside the axes, because the lines span the whole epoch range.
            ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
        fig.tight_layout()
    return fig


def _has_finite_factor(view: RunView) -> bool:
    orders = view.analysis["pruning_over_time"]["orders"].values()
    return any(
        np.isfinite(_values(entry["compression_factor"])).any() for entry in orders
    )


def _plot_compression_line(ax, view: RunView, order: str, epochs, entry) -> None:
    factors = _values(entry["compression_factor"])
    unbounded = np.array(
        [kept == 0 for kept in entry["n_kept"]], dtype=bool
    ) | np.isposinf(factors)
    factors[unbounded] = np.nan
    thick = order == "fisher"
    styles = {"fisher": "-", "magnitude": "--", "fisher_theta2": "-."}
    ax.plot(epochs, factors, styles.get(order, ":"), marker=".",
            color=view.color, linewidth=2.0 if thick else 0.9,
            markersize=5 if thick else 3, label=f"{view.label}, order {order}")
    if unbounded.any():
        # x in data units, y in axes units: the marker sits at the top edge.
        label = f"{view.label}: unbounded (none kept)" if thick else "_nolegend_"
        ax.plot(epochs[unbounded], np.full(int(unbounded.sum()), 0.97), "^",
                color=view.color, markersize=5 if thick else 3,
                transform=ax.get_xaxis_transform(), label=label)


def plot_through_training(views: list[RunView]) -> Figure:
    """Stack accuracy, loss, features, compressibility and Fisher geometry over epochs.

    The panels share one epoch axis. Each marks every regime's train-fit
    (dashed) and test-fit (dotted) epochs and shades its plateau between them,
    so a peak can be read against the end of the plateau. A panel names the
    views whose analysis lacks its record as not measured, in its title.
    """
    task = views[0].analysis["task"]
    panels = [
        _panel_accuracy,
        _panel_test_loss,
        _panel_modadd_features if task == "modadd" else _panel_ising_features,
        _panel_compression,
        _panel_fisher_step,
        _panel_fisher_cosine,
    ]
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(
            len(panels), 1, sharex=True, figsize=(9.5, 2.3 * len(panels))
        )
        for index, (ax, draw) in enumerate(zip(axes, panels)):
            missing = draw(ax, views)
            for view in views:
                _mark_plateau(ax, view, legend=index == 0)
            title = f"({'abcdef'[index]}) {ax.get_title()}"
            if missing:
                title += f" (not measured: {', '.join(missing)})"
            ax.set_title(title)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
        last_epoch = max(float(np.max(view.metrics["epoch"])) for view in views)
        _epoch_axis(axes[-1], last_epoch)
        fig.tight_layout()
    return fig


def _mark_plateau(ax, view: RunView, legend: bool) -> None:
    """Mark the view's fit epochs and shade its plateau from train fit to test fit.

    A run that never fits its test set stays on the plateau, so the shading
    then runs to its last epoch.
    """
    timing = view.analysis.get("timing", {})
    train_fit, test_fit = timing.get("epoch_train_fit"), timing.get("epoch_test_fit")
    marks = ((train_fit, "--", "train fit"), (test_fit, ":", "test fit"))
    for epoch, style, name in marks:
        if epoch is not None:
            label = f"{view.label}: {name} ({epoch})" if legend else "_nolegend_"
            ax.axvline(epoch, color=view.color, linestyle=style, linewidth=1,
                       label=label)
    if train_fit is None:
        return
    end = test_fit if test_fit is not None else float(np.max(view.metrics["epoch"]))
    if end > train_fit:
        name = "plateau" if test_fit is not None else "plateau, test fit not reached"
        label = f"{view.label}: {name}" if legend else "_nolegend_"
        ax.axvspan(train_fit, end, color=view.color, alpha=0.08, linewidth=0,
                   label=label)


def _panel_accuracy(ax, views: list[RunView]) -> list[str]:
    for view in views:
        for split, style in (("train", "-"), ("test", "-.")):
            ax.plot(view.metrics["epoch"], view.metrics[f"{split}/acc"], style,
                    color=view.color, label=f"{view.label}: {split}")
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("accuracy")
    ax.set_title("train and test accuracy (fraction correct)")
    return [view.label + " fit epochs" for view in views
            if "epoch_train_fit" not in view.analysis.get("timing", {})]


def _panel_test_loss(ax, views: list[RunView]) -> list[str]:
    for view in views:
        ax.plot(view.metrics["epoch"], view.metrics["test/loss"], color=view.color,
                label=view.label)
    _log_scale_y(ax)
    ax.set_ylabel("test loss (nats)")
    ax.set_title("test cross-entropy")
    return []


def _feature_series(view: RunView, key: str) -> tuple[np.ndarray, list] | None:
    """Return (epochs, values of ``key``) of the features_over_time rows, or None."""
    rows = view.analysis.get("features_over_time", {}).get("rows", [])
    if not rows or any(key not in row for row in rows):
        return None
    epochs = np.array([row["epoch"] for row in rows], dtype=float)
    return epochs, [row[key] for row in rows]


def _panel_modadd_features(ax, views: list[RunView]) -> list[str]:
    missing = []
    for view in views:
        top_k = view.analysis["analysis_config"]["top_k"]
        for key, style, name in (
            ("top_k_norm_fraction", ".-", f"top-{top_k} norm fraction"),
            ("jaccard_to_final", "s--", "Jaccard to final key frequencies"),
        ):
            series = _feature_series(view, key)
            if series is None:
                missing.append(f"{view.label} {name}")
                continue
            ax.plot(series[0], _values(series[1]), style, color=view.color,
                    markersize=3, label=f"{view.label}: {name}")
    ax.set_ylim(-0.02, 1.05)
    ax.set_ylabel("fraction")
    ax.set_title("Fourier features of the first layer")
    return missing


def _panel_ising_features(ax, views: list[RunView]) -> list[str]:
    missing = []
    for view in views:
        series = _feature_series(view, "probe_r2")
        if series is None:
            missing.append(f"{view.label} probe R^2")
            continue
        epochs, probes = series
        for target, style, name in (("energy", ".-", "energy"),
                                    ("abs_magnetisation", "s--", "|m|")):
            best = [_best_score(row, target) for row in probes]
            ax.plot(epochs, _values(best), style, color=view.color, markersize=3,
                    label=f"{view.label}: {name}")
    # A probe can score far below 0 on held-out data. Clip the axis so that
    # such a point does not flatten the others; the JSON has the value.
    ax.set_ylim(max(-0.5, min(0, ax.get_ylim()[0])), 1.05)
    ax.set_ylabel("probe R^2")
    ax.set_title("best layer's held-out linear-probe R^2 of energy and |m|")
    return missing


def _best_score(
    probes: dict[str, dict[str, float | None]], target: str
) -> float | None:
    """Return the highest probe R^2 of ``target`` over layers, None if all are null."""
    scores = [by_target[target] for by_target in probes.values()
              if by_target[target] is not None]
    return max(scores, default=None)


def _panel_compression(ax, views: list[RunView]) -> list[str]:
    missing, tolerances, finite = [], set(), False
    for view in views:
        record = view.analysis.get("pruning_over_time")
        if record is None or "fisher" not in record["orders"]:
            missing.append(view.label)
            continue
        entry = record["orders"]["fisher"]
        epochs = np.array(record["epochs"], dtype=float)
        _plot_compression_line(ax, view, "fisher", epochs, entry)
        finite |= bool(np.isfinite(_values(entry["compression_factor"])).any())
        tolerances.add(f"{record['tolerance']:g}")
    if finite:
        ax.set_yscale("log")
    ax.set_ylabel("total / kept")
    title = "global compression factor, Fisher order"
    if tolerances:
        title += f", tolerance {' and '.join(sorted(tolerances))}"
    ax.set_title(title)
    return missing


def _geometry_series(
    view: RunView, key: str, x_key: str
) -> tuple[np.ndarray, np.ndarray] | None:
    """Return (epochs, values) of ``geometry["all"][key]``, or None if absent."""
    geometry = view.analysis.get("geometry")
    if geometry is None or key not in geometry["all"]:
        return None
    return np.array(geometry[x_key], dtype=float), _values(geometry["all"][key])


def _panel_fisher_step(ax, views: list[RunView]) -> list[str]:
    missing = []
    for view in views:
        series = _geometry_series(view, "fisher_step", "step_epochs")
        if series is None:
            missing.append(view.label)
            continue
        # A step can span several epochs, so divide by the span, as in plot_geometry.
        spans = np.diff(np.array(view.analysis["geometry"]["epochs"], dtype=float))
        ax.plot(series[0], series[1] / spans, ".-", color=view.color, markersize=3,
                label=view.label)
    _log_scale_y(ax)
    ax.set_ylabel("Fisher length / epoch")
    ax.set_title("Fisher step length per epoch, all parameters")
    return missing


def _panel_fisher_cosine(ax, views: list[RunView]) -> list[str]:
    missing = []
    for view in views:
        series = _geometry_series(view, "fisher_cosine", "turn_epochs")
        if series is None:
            missing.append(view.label)
            continue
        ax.plot(*series, ".-", color=view.color, markersize=3, label=view.label)
    ax.set_ylim(-1.05, 1.05)
    ax.set_ylabel("cosine")
    ax.set_title("Fisher cosine of consecutive steps, all parameters")
    return missing


def plot_ising_diagnostics(diagnostics: dict[str, Any]) -> Figure:
    """Plot sampled energy and |m| against T with exact curves, class balance, examples."""
    rows = diagnostics["per_temperature"]
    t = np.array([r["temperature"] for r in rows])
    curve = diagnostics["exact_curve"]
    lattice = diagnostics["lattice"]
    with plt.rc_context(STYLE):
        fig = plt.figure(figsize=(13, 6.6))
        grid = fig.add_gridspec(2, 6, height_ratios=[1.2, 1])
        energy_ax = fig.add_subplot(grid[0, 0:2])
        energy_ax.plot(curve["temperature"], curve["energy"], color="black", linewidth=1,
                       label=f"exact, {lattice} x {lattice} torus (Kaufman)")
        energy_ax.errorbar(t, [r["mean_energy"] for r in rows],
                           yerr=[2 * (r["se_energy"] or 0) for r in rows], fmt="o",
                           markersize=3, color=COLORS["steady"], label="sampled, +-2 SE")
        energy_ax.set_ylabel("energy per spin e = H / 2N (J)")
        magnet_ax = fig.add_subplot(grid[0, 2:4])
        magnet_ax.plot(curve["temperature"], curve["spontaneous_magnetisation"],
                       color="black", linewidth=1, label="Yang, infinite lattice")
        magnet_ax.errorbar(t, [r["mean_abs_m"] for r in rows],
                           yerr=[2 * (r["se_abs_m"] or 0) for r in rows], fmt="o",
                           markersize=3, color=COLORS["grok"], label="sampled |m|, +-2 SE")
        magnet_ax.set_ylabel("|magnetisation| per spin")
        for ax in (energy_ax, magnet_ax):
            ax.axvline(diagnostics["critical_temperature"], color="grey", linestyle=":",
                       label="Tc")
            ax.set_xlabel("temperature T (J / k_B)")
            ax.legend(loc="best")
        _plot_class_balance(fig.add_subplot(grid[0, 4:6]), diagnostics["class_balance"])
        examples = diagnostics["examples"]["ordered"] + diagnostics["examples"]["disordered"]
        for i, example in enumerate(examples[:6]):
            ax = fig.add_subplot(grid[1, i])
            ax.imshow(np.array(example["spins"]), cmap="gray", vmin=-1, vmax=1)
            phase = "ordered" if example["temperature"] < diagnostics[
                "critical_temperature"] else "disordered"
            ax.set_title(f"T = {example['temperature']:.2f} ({phase})")
            ax.set_xlabel("black -1, white +1")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
        fig.tight_layout()
    return fig


def _plot_class_balance(ax, balance: dict[str, dict[str, int]]) -> None:
    splits = [s for s in ("all", "train", "test") if s in balance]
    x = np.arange(len(splits))
    for offset, phase, color in ((-0.2, "ordered", COLORS["steady"]),
                                 (0.2, "disordered", COLORS["grok"])):
        ax.bar(x + offset, [balance[s][phase] for s in splits], 0.4, color=color,
               label=f"{phase} (T {'<' if phase == 'ordered' else '>'} Tc)")
    ax.set_xticks(x, splits)
    ax.set_xlabel("split")
    ax.set_ylabel("number of samples")
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.set_title("class balance")
    ax.legend(loc="best")


def task_figures(views: list[RunView]) -> dict[str, Figure]:
    """Return every figure for one task, keyed by a file-name stem."""
    task = views[0].analysis["task"]
    first_order = next(iter(views[0].analysis["pruning"]["orders"]))
    figures = {
        "training_curves": plot_training_curves(views),
        "features": (plot_fourier_spectra if task == "modadd"
                     else plot_feature_correlations)(views),
        "features_over_time": plot_features_over_time(views),
        "pruning": plot_pruning(views),
        "pruning_layers": plot_layer_pruning(views, first_order),
        "geometry": plot_geometry(views),
        "geometry_sloppy": plot_geometry(views, "sloppy"),
        "geometry_stiff": plot_geometry(views, "stiff"),
    }
    if any("pruning_over_time" in view.analysis for view in views):
        figures["compressibility_over_time"] = plot_compressibility_over_time(views)
    figures["through_training"] = plot_through_training(views)
    if "dataset" in views[0].analysis:
        figures["dataset"] = plot_ising_diagnostics(views[0].analysis["dataset"])
    return figures


def save_figure(fig: Figure, stem: Path) -> Path:
    """Save ``fig`` as PNG (for the report) and PDF (for papers); return the PNG path."""
    from groklab.training.runfolder import atomic_path

    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    png = stem.with_suffix(".png")
    # The temporary names have no suffix, so the format is passed explicitly.
    with atomic_path(png) as tmp:
        fig.savefig(tmp, format="png")
    with atomic_path(stem.with_suffix(".pdf")) as tmp:
        fig.savefig(tmp, format="pdf")
    plt.close(fig)
    return png


def write_run_figures(run_dir: Path, analysis: dict[str, Any]) -> list[Path]:
    """Draw one run's figures into ``run_dir/figures``."""
    from groklab.training.runfolder import read_metrics

    metrics = read_metrics(Path(run_dir) / "metrics.csv")
    views = [RunView(analysis["regime"], metrics, analysis)]
    return [
        save_figure(fig, Path(run_dir) / "figures" / name)
        for name, fig in task_figures(views).items()
    ]
