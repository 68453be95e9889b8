"""Compression factor and grokking delay against the initial scale alpha, per task."""

from __future__ import annotations

import math
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import FormatStrFormatter, LogFormatter  # noqa: E402

from groklab.report.figures import COLORS, STYLE  # noqa: E402


def alpha_point(analysis: dict[str, Any]) -> dict[str, Any]:
    """Return one run's alpha-sweep numbers from its analysis (first pruning order)."""
    order, entry = next(iter(analysis["pruning"]["orders"].items()))
    timing = analysis["timing"]
    train_fit, test_fit = timing["epoch_train_fit"], timing["epoch_test_fit"]
    delay = None if train_fit is None or test_fit is None else test_fit - train_fit
    return {
        "run": analysis["run"],
        "alpha": float(analysis["config"]["alpha"]),
        "seed": int(analysis["config"]["seed"]),
        "pruning_order": order,
        "fisher_form": analysis["analysis_config"]["fisher_form"],
        "tolerance": analysis["analysis_config"]["tolerance"],
        "compression_factor": entry["compression"]["factor"],
        "compression_unbounded": entry["compression"]["n_kept"] == 0,
        "linear_fit_r2": entry["linear_fit"]["r2"],
        "linear_fit_slope": entry["linear_fit"]["slope"],
        "compressive": bool(entry["compressive"]),
        "epoch_train_fit": train_fit,
        "epoch_test_fit": test_fit,
        "grokking_delay": delay,
        "final_test_acc": analysis["final"]["test/acc"],
    }


def alpha_table(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Aggregate the points per alpha: seeds, share compressive, factor and delay.

    The factor is summarised by its geometric mean and the standard deviation
    of its log10 over seeds. The delay is summarised by its median over the
    seeds that reached the test fit.
    """
    rows = []
    for alpha in sorted({p["alpha"] for p in points}):
        group = [p for p in points if p["alpha"] == alpha]
        factors = np.array([_num(p["compression_factor"]) for p in group])
        logs = np.log10(factors[np.isfinite(factors) & (factors > 0)])
        delays = np.array([_num(p["grokking_delay"]) for p in group])
        delays = delays[np.isfinite(delays)]
        rows.append({
            "alpha": alpha,
            "n_seeds": len(group),
            "compressive_fraction": float(np.mean([p["compressive"] for p in group])),
            "compression_factor_geomean": float(10 ** logs.mean()) if logs.size else None,
            "log10_factor_std": float(logs.std(ddof=1)) if logs.size > 1 else None,
            "median_grokking_delay": float(np.median(delays)) if delays.size else None,
            "n_test_fit": int(delays.size),
        })
    return rows


def compressive_onset(rows: list[dict[str, Any]]) -> float | None:
    """Return the largest alpha up to which most seeds of every alpha are compressive.

    Counts from the smallest alpha; None when the smallest is not compressive.
    """
    onset = None
    for row in rows:
        if row["compressive_fraction"] <= 0.5:
            break
        onset = row["alpha"]
    return onset


def _num(value: Any) -> float:
    return math.nan if value is None else float(value)


def plot_alpha_sweep(task: str, points: list[dict[str, Any]]) -> Figure:
    """Plot compression factor and grokking delay against alpha, one dot per run.

    Filled dots are compressive runs (positive slope, R^2 at or above the
    threshold); the shaded band is the alpha range where most seeds are.
    """
    rows = alpha_table(points)
    with plt.rc_context(STYLE):
        fig, (top, bottom) = plt.subplots(2, 1, figsize=(6.4, 6.4), sharex=True)
        _factor_panel(top, points, rows)
        _delay_panel(bottom, points, rows)
        onset = compressive_onset(rows)
        for ax in (top, bottom):
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
            if onset is not None:
                ax.axvspan(min(r["alpha"] for r in rows) / 1.5, onset * 1.2,
                           color=COLORS["steady"], alpha=0.08,
                           label="compressive regime" if ax is top else None)
        bottom.set_xlabel("initial scale alpha")
        first = points[0] if points else {}
        top.set_title(
            f"{task}: alpha sweep ({first.get('pruning_order', '?')} order, "
            f"{first.get('fisher_form', '?')} Fisher, tolerance "
            f"{first.get('tolerance', float('nan')):g})"
        )
        top.legend(loc="best")
        fig.tight_layout()
    return fig


def _factor_panel(ax, points, rows) -> None:
    bounded = [p for p in points if not p.get("compression_unbounded")]
    for compressive, marker_face in ((True, COLORS["steady"]), (False, "white")):
        group = [p for p in bounded if p["compressive"] is compressive]
        ax.scatter([p["alpha"] for p in group],
                   [_num(p["compression_factor"]) for p in group],
                   facecolors=marker_face, edgecolors=COLORS["steady"], zorder=3,
                   label="compressive run" if compressive else "not compressive")
    means = [_num(r["compression_factor_geomean"]) for r in rows]
    ax.plot([r["alpha"] for r in rows], means, "-", color="black", linewidth=1,
            label="geometric mean over seeds")
    unbounded = [p for p in points if p.get("compression_unbounded")]
    if unbounded:
        # x in data units, y in axes units: the marker sits at the top edge.
        ax.plot([p["alpha"] for p in unbounded], np.full(len(unbounded), 0.97), "^",
                color=COLORS["steady"], transform=ax.get_xaxis_transform(),
                label="unbounded (nothing kept, e.g. chance accuracy)")
    if any(np.isfinite(means)) and np.nanmin(means) > 0:
        ax.set_yscale("log")
        # Plain numbers such as 1.4 and 20 in place of 1.4 x 10^0.
        ax.yaxis.set_major_formatter(LogFormatter())
        ax.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False))
    ax.set_ylabel("compression factor (total / kept)")


def _delay_panel(ax, points, rows) -> None:
    reached = [p for p in points if p["grokking_delay"] is not None]
    ax.scatter([p["alpha"] for p in reached], [p["grokking_delay"] for p in reached],
               color=COLORS["grok"], zorder=3, label="run")
    ax.plot([r["alpha"] for r in rows], [_num(r["median_grokking_delay"]) for r in rows],
            "-", color="black", linewidth=1, label="median over seeds")
    never = [p for p in points if p["grokking_delay"] is None]
    if never:
        ax.plot([p["alpha"] for p in never], np.full(len(never), 0.97), "v",
                color=COLORS["grok"], transform=ax.get_xaxis_transform(),
                label="no test fit within the run")
    ax.set_ylabel("grokking delay (test fit - train fit, epochs)")
    ax.legend(loc="best")
