"""Aggregate figures of a sweep: mean and spread over seeds against each grid variable.

The figures are drawn from the rows of the results table alone, so they can
be redrawn from ``results.csv`` without the run folders.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from groklab.report.figures import STYLE, plt, save_figure

# Colours for the lines of the other grid variables' combinations.
CYCLE = ["#c0392b", "#2471a3", "#27ae60", "#8e44ad", "#d35400", "#16a085", "#7f8c8d"]


def sweep_metrics(rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """Return (column, axis label) of each aggregated measure present in ``rows``."""
    metrics = [
        ("grokking_delay", "grokking delay (epochs, test fit - train fit)"),
        ("final_test_acc", "final test accuracy (fraction correct)"),
    ]
    columns = [c for row in rows for c in row if c.startswith("compression_factor_")]
    if columns:
        order = columns[0].removeprefix("compression_factor_")
        metrics.append((columns[0], f"compression factor ({order} order)"))
    return metrics


def aggregate(
    rows: list[dict[str, Any]], key: str, group_keys: list[str], column: str
) -> dict[tuple, dict[str, Any]]:
    """Group ``column`` over seeds by (other grid values) and ``key``'s value.

    Returns, per group (a tuple of the other grid values), sorted x values and
    per x the mean, standard deviation (ddof 0), min, max and count of the
    finite values. Missing, NaN and infinite cells are left out of the
    statistics and counted in ``n_excluded``.
    """
    groups: dict[tuple, dict[Any, list[float]]] = {}
    for row in rows:
        group = tuple(row[k] for k in group_keys)
        groups.setdefault(group, {}).setdefault(row[key], []).append(_number(row.get(column)))
    out = {}
    for group, by_x in groups.items():
        xs = sorted(by_x, key=lambda v: (v is None, v if v is not None else 0))
        stats = [_stats(by_x[x]) for x in xs]
        out[group] = {"x": xs, **{name: [s[name] for s in stats] for name in stats[0]}}
    return out


def _number(value: Any) -> float:
    if value is None or isinstance(value, (bool, str)):
        return math.nan
    return float(value)


def _stats(values: list[float]) -> dict[str, float]:
    finite = np.array([v for v in values if math.isfinite(v)], dtype=float)
    if finite.size == 0:
        nan = math.nan
        return {"mean": nan, "std": nan, "min": nan, "max": nan, "n": 0,
                "n_excluded": len(values)}
    return {
        "mean": float(finite.mean()),
        "std": float(finite.std()),
        "min": float(finite.min()),
        "max": float(finite.max()),
        "n": int(finite.size),
        "n_excluded": len(values) - int(finite.size),
    }


def plot_grid_variable(rows: list[dict[str, Any]], keys: list[str], key: str):
    """Plot each measure's mean +- std over seeds against ``key``, one line per
    combination of the other grid variables; single seeds are drawn as dots."""
    group_keys = [k for k in keys if k != key]
    metrics = sweep_metrics(rows)
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, len(metrics), figsize=(4.4 * len(metrics), 3.6),
                                 squeeze=False)
        for ax, (column, label) in zip(axes[0], metrics):
            stats = aggregate(rows, key, group_keys, column)
            positions, ticks = _x_positions(stats, key, ax)
            for i, (group, entry) in enumerate(stats.items()):
                _plot_group(ax, entry, positions, CYCLE[i % len(CYCLE)],
                            _group_label(group_keys, group), rows, key, group_keys,
                            group, column)
            if ticks is not None:
                ax.set_xticks(range(len(ticks)), [str(t) for t in ticks])
            ax.set_xlabel(key)
            ax.set_ylabel(label)
            _note_missing(ax, stats)
            if len(stats) > 1:
                ax.legend(loc="best")
        fig.suptitle(f"Sweep over {key}: mean +- std over seeds (dots: single seeds)")
        fig.tight_layout()
    return fig


def _note_missing(ax, stats: dict[tuple, dict[str, Any]]) -> None:
    """Say on the panel how many runs had no finite value (not analysed, undefined, inf)."""
    used = sum(sum(entry["n"]) for entry in stats.values())
    left_out = sum(sum(entry["n_excluded"]) for entry in stats.values())
    if used == 0:
        ax.text(0.5, 0.5, f"no finite value in {left_out} runs", ha="center",
                va="center", transform=ax.transAxes)
    elif left_out:
        ax.text(0.02, 0.02, f"{left_out} of {used + left_out} runs without a finite "
                "value left out", fontsize=7, transform=ax.transAxes)


def _x_positions(stats, key, ax):
    """Map grid values to x positions: numbers as they are, others as categories."""
    values = sorted({x for e in stats.values() for x in e["x"]},
                    key=lambda v: (v is None, str(v) if not _is_number(v) else v))
    # Limits are set from the grid, not the data, so that a panel without
    # finite values keeps a valid axis.
    if values and all(_is_number(v) for v in values):
        low, high = float(min(values)), float(max(values))
        if low > 0 and high / low >= 20:
            ax.set_xscale("log")
            ax.set_xlim(low / 1.5, high * 1.5)
        else:
            pad = 0.05 * (high - low) or 0.05 * abs(low) or 0.5
            ax.set_xlim(low - pad, high + pad)
        return {v: float(v) for v in values}, None
    ax.set_xlim(-0.5, len(values) - 0.5)
    return {v: float(i) for i, v in enumerate(values)}, values


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _plot_group(ax, entry, positions, color, label, rows, key, group_keys, group, column):
    x = np.array([positions[v] for v in entry["x"]])
    mean = np.array(entry["mean"], dtype=float)
    std = np.array(entry["std"], dtype=float)
    ax.errorbar(x, mean, yerr=std, fmt="o-", color=color, capsize=3, markersize=4,
                label=label)
    for row in rows:
        if tuple(row[k] for k in group_keys) != group:
            continue
        value = _number(row.get(column))
        if math.isfinite(value):
            ax.plot(positions[row[key]], value, ".", color=color, alpha=0.35,
                    markersize=4)


def _group_label(group_keys: list[str], group: tuple) -> str:
    if not group_keys:
        return "all runs"
    return ", ".join(f"{k}={v}" for k, v in zip(group_keys, group))


def write_sweep_figures(
    rows: list[dict[str, Any]], keys: list[str], folder: Path
) -> list[Path]:
    """Draw one figure per grid variable into ``folder`` (PNG and PDF); return the PNGs.

    A sweep over seeds alone has no grid variable and gets no figure.
    """
    return [
        save_figure(plot_grid_variable(rows, keys, key), Path(folder) / f"sweep_{key}")
        for key in keys
    ]
