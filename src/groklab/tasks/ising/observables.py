"""Observables of square-lattice Ising configurations and the phase label.

Conventions used throughout groklab: spins are +1 or -1 on an L x L square
lattice with periodic boundaries, coupling J = 1 and no field. Every function
here is vectorised over leading axes, so a batch of shape (..., L, L) gives
results of shape (...).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray

CRITICAL_TEMPERATURE: float = 2.0 / math.log(1.0 + math.sqrt(2.0))
"""Onsager's critical temperature of the infinite lattice, about 2.269 (k_B = J = 1)."""

CRITICAL_TOLERANCE: float = 1e-9
"""Temperatures closer than this to the critical temperature have no phase label."""

ORDERED, DISORDERED = 0, 1
"""Phase labels: ordered below the critical temperature, disordered above it."""


def validate_spins(spins: ArrayLike) -> NDArray[np.float64]:
    """Return ``spins`` as float64 after checking every value is exactly +1 or -1.

    Raises ValueError for fewer than two dimensions, a non-numeric dtype or any
    other value (0/1 encodings are the usual mistake).
    """
    array = np.asarray(spins)
    if array.ndim < 2:
        raise ValueError(
            f"spins have shape {array.shape}; pass a lattice of shape (..., L, L)"
        )
    if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.number):
        raise ValueError(
            f"spins have dtype {array.dtype}; pass integers or floats in {{-1, +1}}"
        )
    bad = np.abs(array) != 1
    if bad.any():
        value = array[bad].flat[0].item()
        raise ValueError(
            f"spins contain the value {value!r}; every spin must be -1 or +1 "
            "(map a 0/1 encoding with 2 * s - 1)"
        )
    return array.astype(np.float64, copy=False)


def energy_per_spin(spins: ArrayLike) -> NDArray[np.float64]:
    """Return e = -(1 / 2N) * sum over nearest-neighbour bonds of s_i s_j, shape (...).

    Each of the 2N bonds of the periodic lattice is counted once, so e lies in
    [-1, 1]: -1 for an aligned lattice, +1 for the checkerboard. This is half
    of the H / N that mcising reports.
    """
    s = validate_spins(spins)
    right = s * np.roll(s, -1, axis=-1)
    down = s * np.roll(s, -1, axis=-2)
    n_spins = s.shape[-1] * s.shape[-2]
    return -(right.sum(axis=(-2, -1)) + down.sum(axis=(-2, -1))) / (2 * n_spins)


def magnetisation(spins: ArrayLike) -> NDArray[np.float64]:
    """Return the total magnetisation M = sum of s_i over the lattice, shape (...)."""
    return validate_spins(spins).sum(axis=(-2, -1))


def magnetisation_per_spin(spins: ArrayLike) -> NDArray[np.float64]:
    """Return M / N, in [-1, 1], shape (...)."""
    s = validate_spins(spins)
    return s.mean(axis=(-2, -1))


def phase_label(temperature: ArrayLike) -> NDArray[np.int64]:
    """Return the phase of each temperature: 0 ordered (T < Tc), 1 disordered (T > Tc).

    Raises ValueError for a temperature that is not finite and positive, or
    that lies within ``CRITICAL_TOLERANCE`` of Tc, where the phase is undefined.
    """
    t = np.asarray(temperature, dtype=np.float64)
    bad = ~np.isfinite(t) | (t <= 0)
    if bad.any():
        value = t[bad].flat[0].item()
        raise ValueError(f"temperature {value!r} is invalid; use finite values above 0")
    at_critical = np.abs(t - CRITICAL_TEMPERATURE) < CRITICAL_TOLERANCE
    if at_critical.any():
        value = t[at_critical].flat[0].item()
        raise ValueError(
            f"temperature {value!r} is the critical temperature, which has no phase; "
            "move it off Tc"
        )
    return np.where(t > CRITICAL_TEMPERATURE, DISORDERED, ORDERED).astype(np.int64)
