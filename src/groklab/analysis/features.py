"""Feature analyses of the hidden units: Fourier features for modular addition
and energy and magnetisation probes for the Ising CNN.

Every public function returns JSON-friendly values (dicts of lists, floats,
ints and ``None``), so its output can go straight into a run's report.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
from numpy.typing import ArrayLike


def _as_float64(values: Any) -> np.ndarray:
    """Return ``values`` (numpy array, list or torch tensor) as a float64 array."""
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=np.float64)


def _finite_or_none(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


# --- Modular addition: Fourier features of the first layer ---------------------


def fourier_spectrum(block: ArrayLike) -> np.ndarray:
    """Return each neuron's power per frequency over the token axis.

    ``block`` has shape (hidden, P): one neuron's weights on the P tokens per
    row. Frequency f in 0..P//2 combines the DFT coefficients at +f and -f, so
    a cosine at f puts all its power in one bin. The power is normalised by P,
    so by Parseval each row of the result sums to that neuron's squared norm.
    """
    weights = _as_float64(block)
    if weights.ndim != 2:
        raise ValueError(
            f"block has shape {weights.shape}: pass a 2-D (hidden, P) array"
        )
    p = weights.shape[1]
    power = np.abs(np.fft.rfft(weights, axis=1)) ** 2  # hidden P//2+1
    # Bins 1..(P-1)//2 count twice because each also covers -f. For even P the
    # Nyquist bin P/2 is its own mirror and counts once, like bin 0.
    power[:, 1 : (p + 1) // 2] *= 2.0
    return power / p


def jaccard(a: Iterable[int], b: Iterable[int]) -> float:
    """Return |a & b| / |a | b| of two key-frequency sets, or 1.0 if both are empty."""
    set_a, set_b = set(a), set(b)
    union = set_a | set_b
    if not union:
        return 1.0
    return len(set_a & set_b) / len(union)


def fourier_features(fc1_weight: ArrayLike, p: int, *, top_k: int = 5) -> dict:
    """Summarise the Fourier structure of ``fc1.weight`` of a modular-addition MLP.

    ``fc1_weight`` has shape (hidden, 2P): columns 0..P-1 act on token a and
    columns P..2P-1 on token b. Key frequencies are the ``top_k`` non-zero
    frequencies with the most power summed over neurons (frequencies with no
    power at all are skipped). A ``top_k_norm_fraction`` is the power in the
    key frequencies divided by the whole squared norm, frequency 0 included.
    Neurons whose row in a block is all zero count as dead in that block and
    are left out of its per-neuron statistics, whose lists hold ``None`` there.
    """
    weights = _as_float64(fc1_weight)
    if weights.ndim != 2 or weights.shape[1] != 2 * p:
        raise ValueError(
            f"fc1_weight has shape {weights.shape}, but p={p} needs (hidden, {2 * p})"
        )
    if top_k < 1:
        raise ValueError(f"top_k={top_k} is invalid: pass a positive integer")
    spectra = {
        "a": fourier_spectrum(weights[:, :p]),
        "b": fourier_spectrum(weights[:, p:]),
    }
    total = spectra["a"].sum(axis=0) + spectra["b"].sum(axis=0)  # freq
    key_frequencies = _key_frequencies(total, top_k)
    return {
        "p": p,
        "top_k": top_k,
        "n_neurons": weights.shape[0],
        "n_dead_neurons": int(np.sum(~weights.any(axis=1))),
        "key_frequencies": key_frequencies,
        "top_k_norm_fraction": _norm_fraction(total, key_frequencies),
        "dominant_frequency_agreement": _dominant_agreement(spectra["a"], spectra["b"]),
        "a": _block_features(spectra["a"], top_k),
        "b": _block_features(spectra["b"], top_k),
    }


def _key_frequencies(total: np.ndarray, top_k: int) -> list[int]:
    """Return the ``top_k`` non-zero frequencies with the most power, ascending."""
    candidates = np.arange(1, total.size)
    candidates = candidates[total[candidates] > 0]
    # A stable sort breaks ties in favour of the lower frequency.
    ranked = candidates[np.argsort(-total[candidates], kind="stable")]
    return sorted(int(f) for f in ranked[:top_k])


def _norm_fraction(total: np.ndarray, frequencies: list[int]) -> float | None:
    """Return the share of the spectrum's power in ``frequencies``."""
    norm = total.sum()
    if norm == 0:
        return None
    return float(total[frequencies].sum() / norm)


def _block_features(spectrum: np.ndarray, top_k: int) -> dict:
    """Summarise one block's (hidden, P//2+1) spectrum per neuron and in total."""
    total = spectrum.sum(axis=0)  # freq
    key_frequencies = _key_frequencies(total, top_k)
    neuron_power = spectrum.sum(axis=1)  # hidden
    alive = neuron_power > 0
    q = spectrum[alive] / neuron_power[alive, None]  # alive freq
    dominant = np.argmax(q, axis=1)  # alive
    purity = q.max(axis=1)
    ipr = np.sum(q**2, axis=1)
    return {
        "spectrum": total.tolist(),
        "key_frequencies": key_frequencies,
        "top_k_norm_fraction": _norm_fraction(total, key_frequencies),
        "n_dead_neurons": int(np.sum(~alive)),
        "dominant_frequency": _per_neuron(dominant, alive, int),
        "purity": _per_neuron(purity, alive, float),
        "purity_mean": _mean_or_none(purity),
        "purity_median": _median_or_none(purity),
        "ipr": _per_neuron(ipr, alive, float),
        "ipr_mean": _mean_or_none(ipr),
        "ipr_median": _median_or_none(ipr),
        "ipr_total": _total_ipr(total),
    }


def _per_neuron(values: np.ndarray, alive: np.ndarray, kind: type) -> list:
    """Spread values of the live neurons over all neurons, ``None`` for dead ones."""
    out: list = [None] * alive.size
    for index, value in zip(np.flatnonzero(alive), values):
        out[index] = kind(value)
    return out


def _mean_or_none(values: np.ndarray) -> float | None:
    return float(np.mean(values)) if values.size else None


def _median_or_none(values: np.ndarray) -> float | None:
    return float(np.median(values)) if values.size else None


def _total_ipr(total: np.ndarray) -> float | None:
    """Return the inverse participation ratio of the summed spectrum."""
    norm = total.sum()
    if norm == 0:
        return None
    return float(np.sum((total / norm) ** 2))


def _dominant_agreement(spectrum_a: np.ndarray, spectrum_b: np.ndarray) -> float | None:
    """Return the share of neurons, live in both blocks, with one dominant frequency."""
    alive = (spectrum_a.sum(axis=1) > 0) & (spectrum_b.sum(axis=1) > 0)
    if not alive.any():
        return None
    dominant_a = np.argmax(spectrum_a[alive], axis=1)
    dominant_b = np.argmax(spectrum_b[alive], axis=1)
    return float(np.mean(dominant_a == dominant_b))


# --- Ising: energy and magnetisation probes -------------------------------------


def feature_correlations(
    activations: Mapping[str, ArrayLike], targets: Mapping[str, ArrayLike]
) -> dict:
    """Correlate every unit of every layer with every target.

    ``activations`` maps a layer name to an (n, units) array and ``targets``
    maps a name to an (n,) array over the same n samples. Returns
    ``result[layer][target]`` with the per-unit Pearson correlations (``None``
    for units constant over the samples, which are counted in
    ``n_constant_units``), their maximum and mean absolute value and the index
    of the unit with the largest absolute correlation.
    """
    result: dict[str, dict] = {}
    for layer, layer_activations in activations.items():
        units = _as_float64(layer_activations)
        result[layer] = {}
        for name, target in targets.items():
            values = _validated_target(units, _as_float64(target), name)
            result[layer][name] = _correlation_summary(_pearson(units, values))
    return result


def _validated_target(units: np.ndarray, target: np.ndarray, name: str) -> np.ndarray:
    """Return ``target`` after checking that it pairs with the (n, units) array."""
    if units.ndim != 2 or target.shape != (units.shape[0],):
        raise ValueError(
            f"activations have shape {units.shape} and target {name!r} shape "
            f"{target.shape}: pass (n, units) activations and (n,) targets"
        )
    if np.ptp(target) == 0:
        raise ValueError(f"target {name!r} is constant: pass a varying target")
    return target


def _pearson(units: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Return each column's Pearson correlation with ``target``, NaN if constant."""
    constant = np.ptp(units, axis=0) == 0  # units
    centred = units - units.mean(axis=0)  # n units
    centred_target = target - target.mean()  # n
    norms = np.linalg.norm(centred, axis=0) * np.linalg.norm(centred_target)
    correlations = np.full(units.shape[1], np.nan)
    live = ~constant
    correlations[live] = centred_target @ centred[:, live] / norms[live]
    return correlations


def _correlation_summary(correlations: np.ndarray) -> dict:
    """Summarise per-unit correlations, NaN marking constant units."""
    finite = np.isfinite(correlations)
    summary: dict[str, Any] = {
        "correlations": [_finite_or_none(c) for c in correlations],
        "n_constant_units": int(np.sum(~finite)),
        "max_abs_corr": None,
        "mean_abs_corr": None,
        "best_unit": None,
    }
    if finite.any():
        magnitude = np.where(finite, np.abs(correlations), -np.inf)
        summary["max_abs_corr"] = float(magnitude.max())
        summary["mean_abs_corr"] = float(np.abs(correlations[finite]).mean())
        summary["best_unit"] = int(np.argmax(magnitude))
    return summary


def probe_r2(
    activations: ArrayLike,
    target: ArrayLike,
    *,
    seed: int = 0,
    ridge: float = 1e-3,
    test_fraction: float = 0.5,
) -> float:
    """Return the held-out R^2 of a linear probe from the units to ``target``.

    ``activations`` has shape (n, units) and ``target`` shape (n,). A seeded
    random ``test_fraction`` of the samples is held out (at least two samples on
    each side). On the rest, units are standardised and a ridge regression with
    an unpenalised intercept minimises mean squared error + ridge * |w|^2.
    The score is 1 - SSE/SST on the held-out samples, which is negative when the
    probe does worse than their mean.
    """
    units = _as_float64(activations)
    values = _validated_target(units, _as_float64(target), "target")
    n = units.shape[0]
    if n < 4:
        raise ValueError(f"n={n} samples are too few: a probe needs at least 4")
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction={test_fraction} is invalid: pass 0 < f < 1")
    train, test = _split(n, seed, test_fraction)
    predict = _fit_ridge(units[train], values[train], ridge)
    return _r2(values[test], predict(units[test]))


def _split(n: int, seed: int, test_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Return seeded disjoint train and test indices covering range(n)."""
    order = np.random.default_rng(seed).permutation(n)
    n_test = min(max(round(test_fraction * n), 2), n - 2)
    return order[n_test:], order[:n_test]


def _fit_ridge(
    units: np.ndarray, target: np.ndarray, ridge: float
) -> Callable[[np.ndarray], np.ndarray]:
    """Fit ridge regression on standardised units and return its predictor."""
    mean = units.mean(axis=0)
    scale = units.std(axis=0)
    scale[scale == 0] = 1.0  # constant units standardise to zero, not NaN
    x = (units - mean) / scale  # n units
    y = target - target.mean()
    gram = x.T @ x / x.shape[0] + ridge * np.eye(x.shape[1])
    coefficients = np.linalg.solve(gram, x.T @ y / x.shape[0])
    intercept = target.mean()
    return lambda new: ((new - mean) / scale) @ coefficients + intercept


def _r2(target: np.ndarray, prediction: np.ndarray) -> float:
    total = np.sum((target - target.mean()) ** 2)
    if total == 0:
        raise ValueError("target is constant on the held-out samples: use more samples")
    return float(1.0 - np.sum((target - prediction) ** 2) / total)


def ising_features(
    activations: Mapping[str, ArrayLike],
    energy: ArrayLike,
    abs_magnetisation: ArrayLike,
    *,
    seed: int = 0,
) -> dict:
    """Probe every layer for the energy and the absolute magnetisation.

    Returns ``{"targets": [...], "layers": {layer: entry}}`` where each entry
    has ``n_units``, ``correlations[target]`` (the summary that
    ``feature_correlations`` gives) and ``probe_r2[target]`` (scored with
    ``seed``), for targets ``"energy"`` and ``"abs_magnetisation"``.
    """
    targets = {"energy": energy, "abs_magnetisation": abs_magnetisation}
    correlations = feature_correlations(activations, targets)
    layers = {}
    for layer, layer_activations in activations.items():
        layers[layer] = {
            "n_units": int(np.shape(layer_activations)[1]),
            "correlations": correlations[layer],
            "probe_r2": {
                name: probe_r2(layer_activations, target, seed=seed)
                for name, target in targets.items()
            },
        }
    return {"targets": list(targets), "layers": layers}
