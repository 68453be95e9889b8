"""Figure of training trajectories in InPCA space, drawn from ``embed_trajectories``."""

from __future__ import annotations

from collections import Counter
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from groklab.report.figures import COLORS, STYLE

# Line widths: a regime drawn once gets the thick line, several seeds the thin one.
SINGLE_RUN_WIDTH = 1.8
SEED_WIDTH = 0.9
OTHER_COLOR = "#555555"
# Marker, legend label and size of the checkpoint nearest each fit epoch.
FIT_MARKERS = {
    "epoch_train_fit": ("^", "train fit", 45),
    "epoch_test_fit": ("D", "test fit", 35),
}


def plot_inpca_trajectories(
    embedding: dict[str, Any], timings: dict[str, dict[str, Any]] | None = None
) -> Figure:
    """Plot each run's path in InPCA components 1-2 and 1-3, coloured by regime.

    ``embedding`` is the output of ``embed_trajectories``. Circles mark the
    first checkpoint of each run and squares the last. ``timings`` maps a run
    name to its ``epoch_train_fit`` and ``epoch_test_fit``, and the
    checkpoint nearest each defined epoch gets a triangle or a diamond.
    With two components only the 1-2 panel is drawn.
    """
    n_components = int(embedding["n_components"])
    if n_components < 2:
        raise ValueError(
            f"the embedding has {n_components} component(s): embed with "
            "n_components >= 2 to plot trajectories"
        )
    pairs = [(0, k) for k in range(1, min(n_components, 3))]
    runs_per_regime = Counter(run["regime"] for run in embedding["runs"])
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, len(pairs), figsize=(5.2 * len(pairs), 4.6))
        axes = np.atleast_1d(axes)
        for ax, (x, y) in zip(axes, pairs):
            labelled: set[str] = set()
            for run in embedding["runs"]:
                several = runs_per_regime[run["regime"]] > 1
                width = SEED_WIDTH if several else SINGLE_RUN_WIDTH
                timing = (timings or {}).get(run["name"], {})
                _draw_run(ax, run, (x, y), width, timing, labelled)
            ax.set_xlabel(_axis_label(embedding, x))
            ax.set_ylabel(_axis_label(embedding, y))
            ax.set_title(f"InPCA components {x + 1} and {y + 1}")
        axes[0].legend(loc="best")
        fig.supxlabel(
            "Time-like components have a negative eigenvalue, so separations "
            "along them lower the squared distance.",
            fontsize=8,
        )
        fig.tight_layout()
    return fig


def _draw_run(
    ax: Axes,
    run: dict[str, Any],
    components: tuple[int, int],
    width: float,
    timing: dict[str, Any],
    labelled: set[str],
) -> None:
    """Draw one run's line, its start and end, and its fit checkpoints on ``ax``.

    ``labelled`` collects the legend labels already used on ``ax``, so each
    regime and marker appears in the legend once.
    """
    coordinates = np.asarray(run["coordinates"], dtype=float)
    xs, ys = coordinates[:, components[0]], coordinates[:, components[1]]
    color = COLORS.get(run["regime"], OTHER_COLOR)
    ax.plot(xs, ys, "-", color=color, linewidth=width,
            label=_first_label(run["regime"], labelled))
    ends = {"start": (0, "o"), "end": (-1, "s")}
    for label, (index, marker) in ends.items():
        ax.scatter(xs[index], ys[index], marker=marker, s=30, color=color, zorder=3,
                   edgecolors="black", linewidths=0.6,
                   label=_first_label(label, labelled))
    epochs = np.asarray(run["epochs"], dtype=float)
    for key, (marker, label, size) in FIT_MARKERS.items():
        if timing.get(key) is None:
            continue
        nearest = int(np.argmin(np.abs(epochs - timing[key])))
        ax.scatter(xs[nearest], ys[nearest], marker=marker, s=size, color="white",
                   edgecolors=color, linewidths=1.4, zorder=4,
                   label=_first_label(label, labelled))


def _first_label(label: str, labelled: set[str]) -> str:
    """Return ``label`` the first time it is seen, else a label the legend skips."""
    if label in labelled:
        return "_nolegend_"
    labelled.add(label)
    return label


def _axis_label(embedding: dict[str, Any], component: int) -> str:
    """Name a component with its kind and its share of the total |eigenvalue|."""
    kind = embedding["component_kinds"][component]
    share = 100 * embedding["explained_fraction"][component]
    return f"InPCA {component + 1}: {kind}, {share:.0f} % of |eigenvalue|"
