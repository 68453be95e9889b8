"""Ising observables against hand-computed lattices, a plain loop and mcising."""

from __future__ import annotations

import math

import numpy as np
import pytest
from mcising._core import IsingSimulation

from groklab.tasks.ising.observables import (
    CRITICAL_TEMPERATURE,
    energy_per_spin,
    magnetisation,
    magnetisation_per_spin,
    phase_label,
)

L = 4
N = L * L


def checkerboard(size: int) -> np.ndarray:
    rows, cols = np.indices((size, size))
    return np.where((rows + cols) % 2 == 0, 1, -1).astype(np.int8)


def loop_energy(spins: np.ndarray) -> float:
    """Sum every right and down bond with explicit periodic indices, divide by 2N."""
    size = spins.shape[0]
    total = 0.0
    for i in range(size):
        for j in range(size):
            s = float(spins[i, j])
            total += s * spins[i, (j + 1) % size] + s * spins[(i + 1) % size, j]
    return -total / (2 * size * size)


def test_critical_temperature_value() -> None:
    # Onsager (1944): Tc = 2 / ln(1 + sqrt 2) = 2.269185314213022...
    assert CRITICAL_TEMPERATURE == pytest.approx(2.269185314213022, abs=1e-15)


@pytest.mark.parametrize("sign", [1, -1])
def test_aligned_lattice(sign: int) -> None:
    spins = np.full((L, L), sign, dtype=np.int8)
    assert energy_per_spin(spins) == -1.0
    assert magnetisation(spins) == sign * N
    assert magnetisation_per_spin(spins) == sign


def test_checkerboard() -> None:
    spins = checkerboard(L)
    assert energy_per_spin(spins) == 1.0
    assert magnetisation(spins) == 0.0


def test_alternating_rows() -> None:
    # Horizontal bonds all +1, vertical bonds all -1: they cancel.
    spins = np.repeat(np.array([1, -1, 1, -1])[:, None], L, axis=1)
    assert energy_per_spin(spins) == 0.0
    assert magnetisation(spins) == 0.0


def test_single_flipped_spin_by_hand() -> None:
    # 2N = 32 bonds, 4 of them broken: sum = 28 - 4 = 24, e = -24 / 32.
    spins = np.ones((L, L), dtype=np.int8)
    spins[1, 2] = -1
    assert energy_per_spin(spins) == -0.75
    assert magnetisation(spins) == 14.0
    assert magnetisation_per_spin(spins) == 14.0 / 16.0


def test_energy_matches_plain_loop() -> None:
    rng = np.random.default_rng(0)
    for size in (2, 3, 5, 8):
        spins = rng.choice([-1, 1], size=(size, size))
        assert energy_per_spin(spins) == pytest.approx(loop_energy(spins), abs=1e-14)
        assert magnetisation(spins) == spins.sum()


def test_batch_matches_per_lattice() -> None:
    rng = np.random.default_rng(1)
    batch = rng.choice([-1.0, 1.0], size=(2, 3, 5, 5))
    energy = energy_per_spin(batch)
    total = magnetisation(batch)
    assert energy.shape == total.shape == magnetisation_per_spin(batch).shape == (2, 3)
    for index in np.ndindex(2, 3):
        assert energy[index] == pytest.approx(loop_energy(batch[index]), abs=1e-14)
        assert total[index] == batch[index].sum()


def test_agrees_with_mcising() -> None:
    for temperature in (1.5, 2.3, 3.5):
        sim = IsingSimulation(12, 1.0, 0.0, 0.0, 0.0, 7, "wolff", "square")
        sim.sweep(200, temperature=temperature)
        spins = sim.get_spins()
        # mcising's energy() is H / N, twice groklab's energy per spin.
        assert energy_per_spin(spins) == pytest.approx(sim.energy() / 2, abs=1e-12)
        assert magnetisation_per_spin(spins) == pytest.approx(
            sim.magnetization(), abs=1e-12
        )


@pytest.mark.parametrize("bad", [0, 2])
def test_invalid_spin_values_named(bad: int) -> None:
    spins = np.ones((L, L), dtype=np.int64)
    spins[0, 0] = bad
    with pytest.raises(ValueError, match=f"value {bad}"):
        energy_per_spin(spins)
    with pytest.raises(ValueError, match=f"value {bad}"):
        magnetisation(spins)


def test_invalid_spin_shapes_and_dtypes() -> None:
    with pytest.raises(ValueError, match=r"shape \(4,\)"):
        energy_per_spin(np.ones(4))
    with pytest.raises(ValueError, match="dtype bool"):
        magnetisation(np.ones((L, L), dtype=bool))


def test_phase_label_convention() -> None:
    tc = CRITICAL_TEMPERATURE
    temps = np.array([1.0, tc - 1e-6, tc + 1e-6, 3.5])
    labels = phase_label(temps)
    assert labels.dtype == np.int64
    assert labels.tolist() == [0, 0, 1, 1]
    assert phase_label(2.0) == 0


@pytest.mark.parametrize("bad", [CRITICAL_TEMPERATURE, 0.0, -1.0, math.inf, math.nan])
def test_phase_label_rejects_undefined(bad: float) -> None:
    with pytest.raises(ValueError, match="temperature"):
        phase_label([1.0, bad])
