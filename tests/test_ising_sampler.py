"""groklab's Ising sampler against exact results: energies, magnetisation, state counts.

The sampler is ``sampling.sample_temperature`` with its default schedule (Wolff
updates, one stored configuration every five tau_int). Standard errors are
measured from the samples by blocking, never assumed. Every seed is a named
constant, so each run is deterministic. The flakiness notes in the docstrings
give how often a fresh seed (or a change in mcising's random stream) would fail.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest

from groklab.tasks.ising.exact import (
    boltzmann_probabilities,
    enumerate_states,
    finite_energy_per_spin,
    spontaneous_magnetisation,
)
from groklab.tasks.ising.sampling import TemperatureSamples, sample_temperature

LATTICE = 16
ENERGY_TEMPERATURES = (1.5, 2.0, 2.269, 2.5, 3.5)
"""2.269 lies 2e-4 below Tc, close enough to probe critical slowing down."""
ENERGY_SAMPLES = 8000
ENERGY_SEED = 1234
"""Root seed; temperature i of ENERGY_TEMPERATURES samples with ENERGY_SEED + i."""
MAX_STANDARD_ERROR = 0.005
"""A test with a wider band than this could not tell a wrong sampler apart."""
BAND = 4.0
"""Allowed distance in standard errors: a Gaussian mean leaves it 6.3e-5 of the time."""

SMALL_LATTICE = 3
SMALL_TEMPERATURE = 2.5
SMALL_SAMPLES = 20_000
SMALL_SEED = 99
MIN_EXPECTED = 5.0
"""Smallest expected count of a chi-square bin; rarer states are pooled."""
MIN_P_VALUE = 1e-3


@functools.cache
def lattice_samples(temperature: float) -> TemperatureSamples:
    """Return the ENERGY_SAMPLES configurations at ``temperature``, computed once."""
    seed = ENERGY_SEED + ENERGY_TEMPERATURES.index(temperature)
    return sample_temperature(LATTICE, temperature, ENERGY_SAMPLES, seed=seed)


# Statistics helpers ---------------------------------------------------------


def blocked_standard_error(series: np.ndarray, min_blocks: int = 64) -> float:
    """Return the standard error of the mean of a correlated series by blocking.

    Halves the series repeatedly by averaging neighbour pairs. The naive
    standard error of the block means rises with the block length until
    blocks outlast the autocorrelation, then levels off. Returns the largest
    value over all levels that keep at least ``min_blocks`` blocks, which
    errs on the wide side.
    """
    blocks = np.asarray(series, dtype=np.float64)
    largest = 0.0
    while blocks.size >= min_blocks:
        error = blocks.std(ddof=1) / math.sqrt(blocks.size)
        largest = max(largest, error)
        usable = blocks.size // 2 * 2
        blocks = (blocks[0:usable:2] + blocks[1:usable:2]) / 2
    return largest


def upper_regularised_gamma(a: float, x: float) -> float:
    """Return Q(a, x) = Gamma(a, x) / Gamma(a) for a > 0, x >= 0, to about 1e-14.

    Uses the power series of P = 1 - Q for x < a + 1 and Legendre's continued
    fraction for Q beyond, evaluated by the modified Lentz recurrence.
    """
    if x == 0:
        return 1.0
    log_prefactor = a * math.log(x) - x - math.lgamma(a)
    if x < a + 1:
        term = total = 1.0 / a
        n = 0
        while abs(term) > 1e-17 * abs(total):
            n += 1
            term *= x / (a + n)
            total += term
        return 1.0 - math.exp(log_prefactor) * total
    return math.exp(log_prefactor) * _gamma_continued_fraction(a, x)


def _gamma_continued_fraction(a: float, x: float) -> float:
    """Return 1 / (x + 1 - a - 1(1 - a) / (x + 3 - a - 2(2 - a) / ...)) by Lentz."""
    tiny = 1e-300
    b = x + 1 - a
    c, d = 1 / tiny, 1 / b
    value = d
    for n in range(1, 10_000):
        coefficient = -n * (n - a)
        b += 2
        d = b + coefficient * d
        d = 1 / (d if abs(d) > tiny else tiny)
        c = b + coefficient / c
        c = c if abs(c) > tiny else tiny
        value *= c * d
        if abs(c * d - 1) < 1e-16:
            return value
    raise RuntimeError(f"continued fraction for Q({a}, {x}) did not converge")


def chi_square_p_value(statistic: float, dof: int) -> float:
    """Return P(X >= statistic) for X chi-square distributed with ``dof`` degrees."""
    return upper_regularised_gamma(dof / 2, statistic / 2)


def state_index(spins: np.ndarray) -> np.ndarray:
    """Return each configuration's index in ``exact.enumerate_states`` order, (sample,).

    Bit i (row-major site i) is 1 for spin -1, 0 for spin +1.
    """
    flat = spins.reshape(spins.shape[0], -1)  # sample site
    bits = (flat < 0).astype(np.int64)
    return bits @ (1 << np.arange(flat.shape[1], dtype=np.int64))


def pooled_chi_square(counts: np.ndarray, expected: np.ndarray) -> tuple[float, int]:
    """Return (statistic, dof) after pooling every bin expected below MIN_EXPECTED.

    The pooled bin joins the test as one more bin when its own expected count
    reaches MIN_EXPECTED; dof is the final bin count minus one.
    """
    rare = expected < MIN_EXPECTED
    observed = list(counts[~rare])
    predicted = list(expected[~rare])
    if expected[rare].sum() >= MIN_EXPECTED:
        observed.append(counts[rare].sum())
        predicted.append(expected[rare].sum())
    obs = np.asarray(observed, dtype=np.float64)
    pred = np.asarray(predicted, dtype=np.float64)
    return float(np.sum((obs - pred) ** 2 / pred)), obs.size - 1


# Helpers against exact values ---------------------------------------------


@pytest.mark.parametrize("x", [0.1, 1.0, 2.9, 3.1, 10.0, 40.0])
def test_upper_gamma_closed_forms(x: float) -> None:
    """Q(1, x) = e^-x, Q(1/2, x) = erfc(sqrt x), Q(5, x) = Poisson tail; 1e-12.

    Q(5, x) = e^-x sum over k < 5 of x^k / k!. The x values straddle a + 1, where
    the code switches from the series to the continued fraction.
    """
    assert upper_regularised_gamma(1.0, x) == pytest.approx(math.exp(-x), rel=1e-12)
    half = math.erfc(math.sqrt(x))
    assert upper_regularised_gamma(0.5, x) == pytest.approx(half, rel=1e-12, abs=1e-300)
    poisson = math.exp(-x) * sum(x**k / math.factorial(k) for k in range(5))
    assert upper_regularised_gamma(5.0, x) == pytest.approx(poisson, rel=1e-12)


def test_chi_square_p_value_table() -> None:
    """Tabulated 95th percentiles: 3.841 (1 dof), 18.307 (10), 124.342 (100); 1e-4."""
    assert chi_square_p_value(3.841459, 1) == pytest.approx(0.05, rel=1e-5)
    assert chi_square_p_value(18.307038, 10) == pytest.approx(0.05, rel=1e-5)
    assert chi_square_p_value(124.342113, 100) == pytest.approx(0.05, rel=1e-4)


def test_blocked_standard_error_of_autoregressive_series() -> None:
    """For AR(1) with rho = 0.9, var(mean) = (1 + rho)/(1 - rho) / n of the i.i.d. one.

    The exact error is sqrt(19) = 4.4 times the naive one. The blocked estimate
    must lie between 0.8 and 1.35 times the exact value. Over seeds 0 to 299
    it ranged from 0.90 to 1.21, because the maximum over levels errs wide.
    """
    rho, n = 0.9, 2**16
    rng = np.random.default_rng(7)
    noise = rng.standard_normal(n) * math.sqrt(1 - rho**2)
    series = np.empty(n)
    series[0] = rng.standard_normal()
    for i in range(1, n):
        series[i] = rho * series[i - 1] + noise[i]
    exact = math.sqrt((1 + rho) / (1 - rho) / n)
    assert 0.8 < blocked_standard_error(series) / exact < 1.35


def test_state_index_matches_enumeration() -> None:
    states = enumerate_states(3)
    np.testing.assert_array_equal(state_index(states), np.arange(512))


# Sampler against exact results ---------------------------------------------


@pytest.mark.parametrize("temperature", ENERGY_TEMPERATURES)
def test_mean_energy_matches_kaufman(temperature: float) -> None:
    """Sampled <e> on 16 x 16 lies within 4 blocked standard errors of Kaufman's.

    Flakiness: with a fresh seed a Gaussian mean leaves a 4-sigma band about 6
    times in 100000 per temperature (3 in 10000 for all five). The blocked
    error errs wide, which makes failures rarer still. Over 20 other seeds per
    temperature the errors were 0.0002 to 0.0012 and |z| stayed below 2.3.
    """
    samples = lattice_samples(temperature)
    error = blocked_standard_error(samples.energy)
    exact = finite_energy_per_spin(LATTICE, temperature)
    assert error < MAX_STANDARD_ERROR
    assert abs(samples.energy.mean() - exact) < BAND * error


def test_magnetisation_symmetric_at_high_temperature() -> None:
    """At T = 3.5, <m> is within 4 standard errors of 0; m and -m are equally common.

    The pair test compares counts of M and -M for each |M| > 0 bin holding 10 or
    more samples; their squared difference over their sum is chi-square with
    one dof per pair. Since the sampler gives each stored sample a random
    global sign, this guards that sign mixing rather than the Markov chain.
    Flakiness: 6e-5 for the mean, 1e-3 for the pairs.
    """
    m = lattice_samples(3.5).magnetisation / LATTICE**2
    assert abs(m.mean()) < BAND * blocked_standard_error(m)
    total = lattice_samples(3.5).magnetisation.astype(np.int64)
    values, counts = np.unique(total, return_counts=True)
    count_of = dict(zip(values.tolist(), counts.tolist(), strict=True))
    pairs = [(count_of.get(v, 0), count_of.get(-v, 0)) for v in values if v > 0]
    pairs = [(a, b) for a, b in pairs if a + b >= 10]
    statistic = sum((a - b) ** 2 / (a + b) for a, b in pairs)
    assert len(pairs) >= 10
    assert chi_square_p_value(statistic, len(pairs)) > MIN_P_VALUE


def test_magnetisation_bimodal_at_low_temperature() -> None:
    """At T = 1.5 the |m| histogram sits near Yang's m0 = 0.9866 with two signed peaks.

    On 16 x 16 the finite-size <|m|> differs from m0 by well under 0.01 this
    far below Tc (4 x 4 enumeration at T = 1 is already within 1e-3). Loose
    bounds: no sample with |m| < 0.5, mean |m| within 0.01 of m0, each sign's
    share within 4 binomial standard errors of one half (flaky 6e-5).
    """
    m = lattice_samples(1.5).magnetisation / LATTICE**2
    m0 = spontaneous_magnetisation(1.5)
    assert np.mean(np.abs(m) < 0.5) == 0.0
    assert abs(np.abs(m).mean() - m0) < 0.01
    assert abs(m[m > 0].mean() - m0) < 0.01
    assert abs(m[m < 0].mean() + m0) < 0.01
    share = np.mean(m > 0)
    assert abs(share - 0.5) < BAND * math.sqrt(0.25 / m.size)


def test_small_lattice_state_frequencies_follow_boltzmann() -> None:
    """On 3 x 3 at T = 2.5, counts of all 512 states pass chi-square (p > 1e-3).

    States expected fewer than 5 times are pooled into one bin. Samples are one
    every five tau_int (the sampler's own measurement, so decorrelated).
    Flakiness: a correct sampler fails about once in 1000 seeds. Over seeds 0
    to 29 the p-values (266 dof) spread from 0.055 to 0.994, as uniform ones do.
    """
    samples = sample_temperature(
        SMALL_LATTICE, SMALL_TEMPERATURE, SMALL_SAMPLES, seed=SMALL_SEED
    )
    counts = np.bincount(state_index(samples.spins), minlength=2**9)
    expected = SMALL_SAMPLES * boltzmann_probabilities(SMALL_LATTICE, SMALL_TEMPERATURE)
    statistic, dof = pooled_chi_square(counts, expected)
    assert dof >= 50
    assert chi_square_p_value(statistic, dof) > MIN_P_VALUE
