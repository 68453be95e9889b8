"""Diagnostics of an Ising dataset against exact results, for the report.

Per temperature: the sampled mean energy per spin and |m| per spin with their
standard errors, beside the exact finite-lattice energy (Kaufman's solution)
and Yang's infinite-lattice spontaneous magnetisation; the class balance of
the train and test splits; and a few example configurations per phase.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from groklab.tasks.ising.observables import CRITICAL_TEMPERATURE


def dataset_diagnostics(
    dataset: Any,
    train_index: np.ndarray,
    test_index: np.ndarray,
    *,
    n_examples: int = 3,
    n_curve: int = 200,
) -> dict[str, Any]:
    """Summarise ``dataset`` (an IsingDataset) for the diagnostics figure.

    Standard errors are std / sqrt(n) per temperature: stored samples are
    spaced by several integrated autocorrelation times, so they are treated
    as independent.
    """
    from groklab.tasks.ising.exact import finite_energy_per_spin, spontaneous_magnetisation

    lattice = dataset.spins.shape[-1]
    n_sites = lattice * lattice
    abs_m = np.abs(dataset.magnetisation) / n_sites
    rows = [
        _temperature_row(t, dataset.energy, abs_m, dataset.temperature == t)
        for t in np.unique(dataset.temperature)
    ]
    for row in rows:
        row["exact_energy"] = float(finite_energy_per_spin(lattice, row["temperature"]))
        row["energy_deviation_in_se"] = _deviation(row)
    t_curve = np.linspace(dataset.temperature.min(), dataset.temperature.max(), n_curve)
    return {
        "lattice": lattice,
        "critical_temperature": CRITICAL_TEMPERATURE,
        "per_temperature": rows,
        "max_energy_deviation_in_se": _max_or_none(
            [r["energy_deviation_in_se"] for r in rows]
        ),
        "exact_curve": {
            "temperature": t_curve.tolist(),
            "energy": [float(finite_energy_per_spin(lattice, t)) for t in t_curve],
            "spontaneous_magnetisation": [
                float(spontaneous_magnetisation(t)) for t in t_curve
            ],
        },
        "class_balance": {
            "all": _counts(dataset.label),
            "train": _counts(dataset.label[train_index]),
            "test": _counts(dataset.label[test_index]),
        },
        "examples": _examples(dataset, n_examples),
    }


def _temperature_row(t: float, energy, abs_m, mask) -> dict[str, Any]:
    n = int(mask.sum())
    return {
        "temperature": float(t),
        "n": n,
        "mean_energy": float(energy[mask].mean()),
        "se_energy": _standard_error(energy[mask]),
        "mean_abs_m": float(abs_m[mask].mean()),
        "se_abs_m": _standard_error(abs_m[mask]),
    }


def _standard_error(values: np.ndarray) -> float | None:
    if len(values) < 2:
        return None
    return float(values.std(ddof=1) / np.sqrt(len(values)))


def _deviation(row: dict[str, Any]) -> float | None:
    if not row["se_energy"]:
        return None
    return abs(row["mean_energy"] - row["exact_energy"]) / row["se_energy"]


def _max_or_none(values: list[float | None]) -> float | None:
    finite = [v for v in values if v is not None]
    return max(finite) if finite else None


def _counts(labels: np.ndarray) -> dict[str, int]:
    return {"ordered": int(np.sum(labels == 0)), "disordered": int(np.sum(labels == 1))}


def _examples(dataset: Any, n_examples: int) -> dict[str, list[dict[str, Any]]]:
    """Pick one configuration at each of ``n_examples`` temperatures spread over a phase."""
    out: dict[str, list[dict[str, Any]]] = {}
    for label, phase in ((0, "ordered"), (1, "disordered")):
        temperatures = np.unique(dataset.temperature[dataset.label == label])
        if len(temperatures) == 0:
            out[phase] = []
            continue
        picks = temperatures[np.unique(
            np.round(np.linspace(0, len(temperatures) - 1, n_examples)).astype(int)
        )]
        out[phase] = [
            {
                "temperature": float(t),
                "spins": dataset.spins[np.flatnonzero(dataset.temperature == t)[0]]
                .astype(int)
                .tolist(),
            }
            for t in picks
        ]
    return out
