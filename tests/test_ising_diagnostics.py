"""Dataset diagnostics: per-temperature statistics, exact curves, balance, examples."""

import numpy as np
import pytest

from groklab.analysis.ising_data import dataset_diagnostics
from groklab.tasks.ising.dataset import IsingDataSpec, build_dataset, split_indices


@pytest.fixture(scope="module")
def small_dataset():
    spec = IsingDataSpec(lattice=8, t_min=1.5, t_max=3.5, n_temperatures=4,
                         samples_per_temperature=150, seed=11)
    return build_dataset(spec, progress=False)


def test_rows_match_direct_statistics(small_dataset):
    train, test = split_indices(len(small_dataset), 100, 200, seed=0)
    diag = dataset_diagnostics(small_dataset, train, test)
    temps = np.unique(small_dataset.temperature)
    assert [r["temperature"] for r in diag["per_temperature"]] == temps.tolist()
    for row, t in zip(diag["per_temperature"], temps):
        mask = small_dataset.temperature == t
        energy = small_dataset.energy[mask]
        assert row["n"] == mask.sum()
        assert row["mean_energy"] == pytest.approx(energy.mean(), abs=1e-12)
        assert row["se_energy"] == pytest.approx(
            energy.std(ddof=1) / np.sqrt(mask.sum()), rel=1e-12
        )


def test_sampled_energy_near_exact(small_dataset):
    """Flaky only if a 5-sigma deviation occurs at one of 4 temperatures (~2e-6)."""
    diag = dataset_diagnostics(small_dataset, np.arange(10), np.arange(10, 20))
    assert diag["max_energy_deviation_in_se"] < 5


def test_balance_and_examples(small_dataset):
    train, test = split_indices(len(small_dataset), 100, 200, seed=0)
    diag = dataset_diagnostics(small_dataset, train, test, n_examples=2)
    balance = diag["class_balance"]
    assert sum(balance["train"].values()) == 100
    assert sum(balance["test"].values()) == 200
    assert balance["all"]["ordered"] == int(np.sum(small_dataset.label == 0))
    tc = diag["critical_temperature"]
    for example in diag["examples"]["ordered"]:
        assert example["temperature"] < tc
        assert np.array(example["spins"]).shape == (8, 8)
    for example in diag["examples"]["disordered"]:
        assert example["temperature"] > tc
    assert len(diag["exact_curve"]["energy"]) == len(diag["exact_curve"]["temperature"])
