"""The temperature grid of an Ising dataset: both phases, denser near Tc.

Far from Tc the phase can be read off |m| alone, so the samples that test a
classifier lie near Tc. The grid therefore adds extra points in a window
around Tc to the evenly spaced ones. Optionally, a window around Tc is cut
out instead, which separates the two classes by a temperature margin.
"""

from __future__ import annotations

import sys

import numpy as np
from numpy.typing import NDArray

from groklab.tasks.ising.observables import CRITICAL_TEMPERATURE, CRITICAL_TOLERANCE

DUPLICATE_TOLERANCE = 1e-9
"""Grid points closer than this are one point, the lower of the two being kept."""

MAX_POINTS = 100_000
"""Upper bound on ``n_temperatures`` and on ``n_near_tc``. Every grid point
gets its own Monte Carlo chain, and the default grids have at most 32 points,
so the bound only stops a mistyped count from building a huge grid in memory."""


def temperature_grid(
    t_min: float,
    t_max: float,
    n_temperatures: int,
    n_near_tc: int = 6,
    near_tc_width: float = 0.25,
    exclude_width: float = 0.0,
) -> NDArray[np.float64]:
    """Return the sorted grid temperatures, shape (n_points,), k_B = J = 1.

    The grid is the union of ``n_temperatures`` evenly spaced points on
    [t_min, t_max] (both ends included) and ``n_near_tc`` evenly spaced points
    on [Tc - near_tc_width, Tc + near_tc_width] clipped to [t_min, t_max]; a
    window that misses the range adds nothing. Points within 1e-9 of each
    other count once. Every point with |T - Tc| < exclude_width is then
    removed. Raises a one-line ValueError for an invalid argument, for a
    remaining point within 1e-9 of Tc (which has no phase label) and for an
    empty grid.
    """
    _check_arguments(
        t_min, t_max, n_temperatures, n_near_tc, near_tc_width, exclude_width
    )
    # Python ints beyond int64 would give linspace an object array.
    t_min, t_max = float(t_min), float(t_max)
    near_tc_width, exclude_width = float(near_tc_width), float(exclude_width)
    even = np.linspace(t_min, t_max, n_temperatures)
    near = _near_tc_points(t_min, t_max, n_near_tc, near_tc_width)
    grid = _deduplicate(np.concatenate([even, near]))
    grid = grid[np.abs(grid - CRITICAL_TEMPERATURE) >= exclude_width]
    _reject_critical(grid, near)
    if grid.size == 0:
        raise ValueError(
            f"exclude_width {exclude_width} removes every grid temperature in "
            f"[{t_min}, {t_max}]; lower it or widen the range"
        )
    return grid


def _check_arguments(
    t_min: float,
    t_max: float,
    n_temperatures: int,
    n_near_tc: int,
    near_tc_width: float,
    exclude_width: float,
) -> None:
    """Raise a one-line ValueError naming the first invalid argument."""
    if not 0 < t_min < t_max <= sys.float_info.max:
        raise ValueError(
            f"temperature range [{t_min}, {t_max}] is invalid; "
            "use 0 < t_min < t_max < inf"
        )
    if not 1 <= n_temperatures <= MAX_POINTS:
        raise ValueError(
            f"n_temperatures {n_temperatures} is invalid; use 1 to {MAX_POINTS}"
        )
    if not 0 <= n_near_tc <= MAX_POINTS:
        raise ValueError(f"n_near_tc {n_near_tc} is invalid; use 0 to {MAX_POINTS}")
    if not 0 < near_tc_width <= sys.float_info.max:
        raise ValueError(
            f"near_tc_width {near_tc_width} is invalid; use a finite value > 0"
        )
    if not 0 <= exclude_width <= sys.float_info.max:
        raise ValueError(
            f"exclude_width {exclude_width} is invalid; use a finite value >= 0"
        )


def _near_tc_points(
    t_min: float, t_max: float, n_near_tc: int, near_tc_width: float
) -> NDArray[np.float64]:
    """Return ``n_near_tc`` evenly spaced points of the clipped window around Tc."""
    low = max(t_min, CRITICAL_TEMPERATURE - near_tc_width)
    high = min(t_max, CRITICAL_TEMPERATURE + near_tc_width)
    if n_near_tc == 0 or low > high:
        return np.empty(0)
    return np.linspace(low, high, n_near_tc)


def _deduplicate(points: NDArray[np.float64]) -> NDArray[np.float64]:
    """Return ``points`` sorted, each run of points within the tolerance kept once."""
    ordered = np.sort(points)
    kept = [ordered[0]] if ordered.size else []
    for value in ordered[1:]:
        if value - kept[-1] > DUPLICATE_TOLERANCE:
            kept.append(value)
    return np.array(kept, dtype=np.float64)


def _reject_critical(grid: NDArray[np.float64], near: NDArray[np.float64]) -> None:
    """Raise a ValueError, saying which setting moves it, for a point at Tc."""
    at_tc = np.abs(grid - CRITICAL_TEMPERATURE) < CRITICAL_TOLERANCE
    if not at_tc.any():
        return
    value = grid[at_tc][0].item()
    from_window = bool(np.any(np.abs(near - value) <= DUPLICATE_TOLERANCE))
    fix = (
        "use an even n_near_tc or set exclude_width > 0"
        if from_window
        else "change t_min, t_max or n_temperatures, or set exclude_width > 0"
    )
    raise ValueError(
        f"grid temperature {value!r} is Tc, which has no phase label; {fix}"
    )
