"""Exact results for the square-lattice Ising model, the yardstick for the sampler.

Conventions match the rest of groklab: J = k_B = 1, no field, periodic
boundaries, and the energy per spin is e = H / (2N), so e lies in [-1, 1]
and the textbook u = H / N equals 2e. The specific heat per spin is the
textbook c = (1/N) d<H>/dT = beta^2 var(H) / N, unchanged by that factor.

Finite lattices use Kaufman's (1949) solution of the L x L torus, whose
energy and specific heat are the quantities Ferdinand and Fisher (1969)
analysed. All derivatives here are analytic, not finite differences.
Small lattices (L <= 4) can also be enumerated state by state, which the
tests use to check the closed forms. Everything is float64 and numpy only.
"""

from __future__ import annotations

import math
from enum import Enum

import numpy as np
from numpy.typing import ArrayLike, NDArray

from groklab.tasks.ising.observables import CRITICAL_TEMPERATURE, energy_per_spin

__all__ = [
    "CRITICAL_TEMPERATURE",
    "MAX_ENUMERATED_LATTICE",
    "boltzmann_probabilities",
    "brute_force",
    "enumerate_states",
    "finite_energy_per_spin",
    "finite_specific_heat",
    "infinite_energy_per_spin",
    "log_partition_function",
    "spontaneous_magnetisation",
]

MAX_ENUMERATED_LATTICE = 4
"""Largest L whose 2^(L*L) states are enumerated (65536 states at L = 4)."""

_AGM_MAX_ITERATIONS = 64
"""Cap on arithmetic-geometric mean steps. From k' = 1e-16 (next to Tc) the
mean converges in about ten steps."""


def _check_temperature(temperature: ArrayLike) -> NDArray[np.float64]:
    """Return ``temperature`` as float64; raise unless every value is finite, > 0."""
    t = np.asarray(temperature, dtype=np.float64)
    bad = ~np.isfinite(t) | (t <= 0)
    if bad.any():
        value = t[bad].flat[0].item()
        raise ValueError(f"temperature {value!r} is invalid; use finite values above 0")
    return t


def _check_lattice(lattice: int) -> int:
    """Return ``lattice`` as an int, or raise if it is not an integer of at least 2."""
    if isinstance(lattice, bool) or int(lattice) != lattice or lattice < 2:
        raise ValueError(f"lattice {lattice!r} is invalid; use an integer L >= 2")
    return int(lattice)


def _check_enumerable(lattice: int) -> int:
    """Return ``lattice`` after checking it is small enough to enumerate every state."""
    size = _check_lattice(lattice)
    if size > MAX_ENUMERATED_LATTICE:
        raise ValueError(
            f"lattice {size} has 2^{size * size} states, too many to enumerate; "
            f"use L <= {MAX_ENUMERATED_LATTICE} or the Kaufman functions"
        )
    return size


# Infinite lattice ----------------------------------------------------------


def _arithmetic_geometric_mean(
    a: NDArray[np.float64], b: NDArray[np.float64]
) -> NDArray[np.float64]:
    """Return the arithmetic-geometric mean of arrays >= 0, to machine precision."""
    for _ in range(_AGM_MAX_ITERATIONS):
        a, b = (a + b) / 2, np.sqrt(a * b)
        if np.all(np.abs(a - b) <= 4 * np.finfo(np.float64).eps * a):
            break
    return a


def infinite_energy_per_spin(temperature: ArrayLike) -> NDArray[np.float64]:
    """Return Onsager's energy per spin of the infinite lattice, e = u / 2 in [-1, 0].

    Uses u = -coth(2K) [1 + (2/pi)(2 tanh^2(2K) - 1) K1(k)] with K = 1/T and
    k = 2 sinh(2K) / cosh^2(2K). The complete elliptic integral is
    K1(k) = pi / (2 AGM(1, k')), k' = |1 - sinh^2(2K)| / cosh^2(2K), a form that
    keeps full precision next to Tc. At Tc the bracket's second term vanishes
    (zero times a logarithmic divergence), giving u = -sqrt(2). Shape as input.

    NOTE: far above Tc, 1 + (second term) cancels to order K^2, so the relative
    error grows as about 1e-16 T^2 (1e-10 at T = 1000).
    """
    coupling = 1.0 / _check_temperature(temperature)
    with np.errstate(over="ignore"):
        inverse = np.sinh(2 * coupling) ** -2.0  # 1 / sinh^2(2K), 0 once it overflows
    ratio = (1.0 - inverse) / (1.0 + inverse)  # (s^2 - 1) / (s^2 + 1) with s = sinh 2K
    complement = np.abs(ratio)  # k'
    agm = _arithmetic_geometric_mean(np.ones_like(complement), complement)
    # (2/pi)(2 tanh^2 - 1) K1 = ratio / AGM, taken as 0 at Tc where both vanish.
    with np.errstate(divide="ignore", invalid="ignore"):
        singular = np.where(complement > 0, ratio / agm, 0.0)
    u = -(1.0 + singular) / np.tanh(2 * coupling)
    return u / 2


def spontaneous_magnetisation(temperature: ArrayLike) -> NDArray[np.float64]:
    """Return Yang's spontaneous magnetisation per spin, shape as input.

    m0 = (1 - sinh(2/T)^-4)^(1/8) below Tc, zero at and above it.
    """
    t = _check_temperature(temperature)
    with np.errstate(over="ignore"):
        inverse_fourth = np.sinh(2.0 / t) ** -4.0  # 0 once sinh overflows
    ordered = t < CRITICAL_TEMPERATURE
    return np.where(ordered, np.clip(1.0 - inverse_fourth, 0.0, None) ** 0.125, 0.0)


# Finite torus (Kaufman) ----------------------------------------------------


class _Factor(str, Enum):
    """Hyperbolic function in the factors 2cosh(x) or 2sinh(x) of a Kaufman product."""

    COSH = "cosh"
    SINH = "sinh"


def _log_factor_and_ratio(
    x: NDArray[np.float64], factor: _Factor
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Return ln|2f(x)| and f'(x)/f(x) for f = cosh or sinh, without overflow.

    Both outputs have the shape of ``x``; for sinh, ``x`` must be nonzero.
    """
    magnitude = np.abs(x)
    match factor:
        case _Factor.COSH:
            return magnitude + np.log1p(np.exp(-2 * magnitude)), np.tanh(x)
        case _Factor.SINH:
            log_sinh = magnitude + np.log(-np.expm1(-2 * magnitude))
            return log_sinh, 1 / np.tanh(x)
        case _:
            allowed = ", ".join(f.value for f in _Factor)
            raise ValueError(f"factor {factor!r} is unknown; use one of {allowed}")


def _gammas(
    size: int, coupling: float
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Return gamma_l and its first two K-derivatives, three arrays of shape (2L,).

    Index l runs over 0 .. 2L - 1.
    cosh(gamma_l) = cosh(2K) coth(2K) - cos(pi l / L) for l >= 1, computed as
    arccosh(1 + delta) with delta = (s - 1)^2 / s + 2 sin^2(pi l / 2L), s = sinh 2K,
    which loses nothing near Tc. gamma_0 = 2K + ln tanh K keeps its sign:
    negative above Tc, positive below.
    """
    s, ch = math.sinh(2 * coupling), math.cosh(2 * coupling)
    c1 = 2 * ch * (1 - 1 / s**2)  # d/dK of cosh(2K) coth(2K)
    c2 = 4 * s - 4 / s + 8 * ch**2 / s**3  # second derivative
    angle = np.pi * np.arange(1, 2 * size) / size  # l
    delta = (s - 1) ** 2 / s + 2 * np.sin(angle / 2) ** 2
    sinh_g = np.sqrt(delta * (delta + 2))
    gamma = np.log1p(delta + sinh_g)
    d1 = c1 / sinh_g
    d2 = (c2 - (1 + delta) * d1**2) / sinh_g
    g0 = 2 * coupling + math.log(math.tanh(coupling))
    d1_0 = 2 + 2 / s
    d2_0 = -4 * ch / s**2
    return (
        np.concatenate([[g0], gamma]),
        np.concatenate([[d1_0], d1]),
        np.concatenate([[d2_0], d2]),
    )


def _product_terms(
    x: NDArray[np.float64],
    dx: NDArray[np.float64],
    ddx: NDArray[np.float64],
    factor: _Factor,
) -> tuple[float, float, float]:
    """Return (ln P, P'/P, P''/P) for P = prod 2cosh(x) or prod 2sinh(x), x > 0.

    ``dx`` and ``ddx`` are the K-derivatives of ``x``. As f'' = f for both
    factors, P''/P = sum(dx^2 + r ddx) + (sum r dx)^2 - sum((r dx)^2) with
    r = f'/f, that is tanh(x) or coth(x).
    """
    log_factor, ratio = _log_factor_and_ratio(x, factor)
    log_p = np.sum(log_factor)
    slope = ratio * dx
    first = float(np.sum(slope))
    second = float(np.sum(dx**2 + ratio * ddx) + first**2 - np.sum(slope**2))
    return float(log_p), first, second


def _gamma_zero_terms(
    x0: float,
    dx0: float,
    ddx0: float,
    even_cosh: tuple[float, float, float],
    even_sinh: tuple[float, float, float],
) -> list[tuple[float, float, float, float]]:
    """Return Kaufman terms 3 and 4, which contain the l = 0 factor, as table rows.

    ``x0`` = L gamma_0 / 2 with its K-derivatives. ``even_cosh`` is (ln P, P'/P,
    P''/P) of prod 2cosh over even l >= 2, ``even_sinh`` the same for 2sinh.
    Term 3 multiplies ``even_cosh`` by 2cosh(x0), an even function of gamma_0.
    Term 4 multiplies ``even_sinh`` by 2sinh(x0), which changes sign at Tc, so
    its scale uses 2cosh(x0) and its ratios carry tanh(x0) instead.
    """
    log_c0 = float(_log_factor_and_ratio(np.array([x0]), _Factor.COSH)[0][0])
    t0 = math.tanh(x0)
    log_p, p1, p2 = even_cosh
    log_q, q1, q2 = even_sinh
    term3 = (
        log_p + log_c0,
        1.0,
        p1 + t0 * dx0,
        p2 + 2 * t0 * dx0 * p1 + dx0**2 + t0 * ddx0,
    )
    term4 = (
        log_q + log_c0,
        t0,
        dx0 + t0 * q1,
        t0 * dx0**2 + ddx0 + 2 * dx0 * q1 + t0 * q2,
    )
    return [term3, term4]


def _kaufman_terms(size: int, coupling: float) -> NDArray[np.float64]:
    """Return the four Kaufman terms as rows (ln S, Z/S, Z'/S, Z''/S), shape (4, 4).

    Each term Z_j = S_j * (Z_j / S_j) with S_j > 0 a scale that keeps every
    ratio finite, and primes are K-derivatives. Terms 1 and 2 are products
    over odd l of 2cosh and 2sinh of L gamma_l / 2, terms 3 and 4 over even l.
    """
    x, dx, ddx = (size / 2 * v for v in _gammas(size, coupling))  # each l
    odd, even = slice(1, None, 2), slice(2, None, 2)
    rows = []
    for kind in (_Factor.COSH, _Factor.SINH):
        log_p, first, second = _product_terms(x[odd], dx[odd], ddx[odd], kind)
        rows.append((log_p, 1.0, first, second))
    even_cosh = _product_terms(x[even], dx[even], ddx[even], _Factor.COSH)
    even_sinh = _product_terms(x[even], dx[even], ddx[even], _Factor.SINH)
    rows += _gamma_zero_terms(x[0], dx[0], ddx[0], even_cosh, even_sinh)
    return np.array(rows)


def _log_partition_and_derivatives(
    size: int, coupling: float
) -> tuple[float, float, float]:
    """Return (ln Z, d ln Z/dK, d^2 ln Z/dK^2) of the L x L torus at coupling K = 1/T.

    Z = (1/2) (2 sinh 2K)^(N/2) (Z1 + Z2 + Z3 + Z4), Kaufman (1949); the sum is
    taken as a signed log-sum-exp so that L = 256 does not overflow.
    """
    n_spins = size * size
    terms = _kaufman_terms(size, coupling)
    weight = np.exp(terms[:, 0] - terms[:, 0].max())
    total = float(weight @ terms[:, 1])
    first = float(weight @ terms[:, 2]) / total
    second = float(weight @ terms[:, 3]) / total - first**2
    s = math.sinh(2 * coupling)
    log_z = -math.log(2) + n_spins / 2 * math.log(2 * s)
    log_z += terms[:, 0].max() + math.log(total)
    first_z = first + n_spins * math.cosh(2 * coupling) / s
    second_z = second - 2 * n_spins / s**2
    return log_z, first_z, second_z


def _over_temperatures(
    lattice: int, temperature: ArrayLike, index: int
) -> NDArray[np.float64]:
    """Return item ``index`` of (ln Z, ln Z', ln Z'') in K, shaped as temperature."""
    size = _check_lattice(lattice)
    t = _check_temperature(temperature)
    flat = [
        _log_partition_and_derivatives(size, 1.0 / value)[index] for value in t.ravel()
    ]
    return np.asarray(flat, dtype=np.float64).reshape(t.shape)


def log_partition_function(lattice: int, temperature: ArrayLike) -> NDArray[np.float64]:
    """Return ln Z of the L x L torus by Kaufman's solution, shape as temperature.

    Z sums exp(-H / T) over all 2^(L*L) states with H = -sum over bonds of s_i s_j.

    NOTE: this and the other Kaufman functions work down to T = 0.0086. Below
    that, sinh(2/T)^3 overflows and Python raises OverflowError.
    """
    return _over_temperatures(lattice, temperature, 0)


def finite_energy_per_spin(lattice: int, temperature: ArrayLike) -> NDArray[np.float64]:
    """Return the exact mean energy per spin <e> = <H> / (2N) of the L x L torus.

    groklab's convention: e in [-1, 1], half the textbook u = <H> / N.
    Computed as -(1 / 2N) d ln Z / dK with the analytic K-derivative. Shape as input.
    """
    n_spins = _check_lattice(lattice) ** 2
    return -_over_temperatures(lattice, temperature, 1) / (2 * n_spins)


def finite_specific_heat(lattice: int, temperature: ArrayLike) -> NDArray[np.float64]:
    """Return the exact specific heat per spin c = (1/N) d<H>/dT of the L x L torus.

    Textbook convention, c = K^2 var(H) / N = K^2 (d^2 ln Z / dK^2) / N with
    K = 1/T; in groklab's energy per spin, c = 4 K^2 N var(e). Shape as input.
    """
    n_spins = _check_lattice(lattice) ** 2
    coupling = 1.0 / _check_temperature(temperature)
    return coupling**2 * _over_temperatures(lattice, temperature, 2) / n_spins


# Enumeration (L <= 4) ------------------------------------------------------


def enumerate_states(lattice: int) -> NDArray[np.int8]:
    """Return every spin configuration of the L x L lattice, shape (2^(L*L), L, L).

    State k has spin +1 at flat site i (row-major) when bit i of k is 0 and -1
    when it is 1, so state 0 is all up. Raises ValueError for L > 4.
    """
    size = _check_enumerable(lattice)
    n_sites = size * size
    index = np.arange(2**n_sites, dtype=np.int64)[:, None]  # state
    bits = (index >> np.arange(n_sites, dtype=np.int64)) & 1  # state site
    spins = (1 - 2 * bits).astype(np.int8)
    return spins.reshape(-1, size, size)


def _state_energies(lattice: int) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Return total energy H and magnetisation M of every state, (2^(L*L),) each."""
    spins = enumerate_states(lattice)
    n_spins = lattice * lattice
    total_energy = 2 * n_spins * energy_per_spin(spins)
    return total_energy, spins.sum(axis=(1, 2), dtype=np.float64)


def boltzmann_probabilities(lattice: int, temperature: float) -> NDArray[np.float64]:
    """Return exp(-H/T) / Z of each state in ``enumerate_states`` order, (2^(L*L),)."""
    _check_enumerable(lattice)
    t = float(_check_temperature(temperature))
    total_energy, _ = _state_energies(lattice)
    log_w = -total_energy / t
    w = np.exp(log_w - log_w.max())
    return w / w.sum()


def brute_force(lattice: int, temperature: float) -> dict[str, float]:
    """Return exact averages of the L x L torus by summing over every state (L <= 4).

    Keys: ``log_partition`` (ln Z), ``energy_per_spin`` (<H> / 2N, groklab's
    convention), ``specific_heat`` (var(H) / (N T^2), textbook convention) and
    ``abs_magnetisation_per_spin`` (<|M|> / N).
    """
    size = _check_enumerable(lattice)
    t = float(_check_temperature(temperature))
    n_spins = size * size
    total_energy, total_m = _state_energies(size)
    log_w = -total_energy / t
    shift = log_w.max()
    p = np.exp(log_w - shift)
    p_sum = p.sum()
    p /= p_sum
    mean_h = float(p @ total_energy)
    var_h = float(p @ (total_energy - mean_h) ** 2)
    return {
        "log_partition": float(shift + math.log(p_sum)),
        "energy_per_spin": mean_h / (2 * n_spins),
        "specific_heat": var_h / (n_spins * t**2),
        "abs_magnetisation_per_spin": float(p @ np.abs(total_m)) / n_spins,
    }
