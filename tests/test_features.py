"""Fourier features of modular-addition weights and Ising feature probes."""

import json

import numpy as np
import pytest
import torch

from groklab.analysis.features import (
    feature_correlations,
    fourier_features,
    fourier_spectrum,
    ising_features,
    jaccard,
    probe_r2,
)

P = 13


def cosine_rows(frequencies, phases, p=P, amplitude=1.0):
    """Return one row per (frequency, phase): amplitude * cos(2 pi f x / p + phase)."""
    tokens = np.arange(p)
    return np.stack(
        [
            amplitude * np.cos(2 * np.pi * f * tokens / p + phase)
            for f, phase in zip(frequencies, phases)
        ]
    )


def cosine_weight(freq_a, freq_b, phases_a, phases_b):
    """Return a (hidden, 2P) fc1 weight with pure cosines in the a and b blocks."""
    return np.concatenate(
        [cosine_rows(freq_a, phases_a), cosine_rows(freq_b, phases_b)], axis=1
    )


# --- fourier_spectrum ---------------------------------------------------------


@pytest.mark.parametrize("p", [12, 13])
def test_spectrum_parseval(p):
    block = np.random.default_rng(1).normal(size=(7, p))
    spectrum = fourier_spectrum(block)
    assert spectrum.shape == (7, p // 2 + 1)
    # Each row sums to the neuron's squared norm, to 1e-12 relative tolerance.
    np.testing.assert_allclose(spectrum.sum(axis=1), (block**2).sum(axis=1), rtol=1e-12)


@pytest.mark.parametrize("p", [12, 13])
def test_spectrum_pure_cosine_one_bin(p):
    frequency = 3
    row = cosine_rows([frequency], [0.7], p=p, amplitude=2.0)
    spectrum = fourier_spectrum(row)[0]
    # A cosine of amplitude A has squared norm A^2 p / 2 over p tokens.
    assert spectrum[frequency] == pytest.approx(4.0 * p / 2, rel=1e-12)
    others = np.delete(spectrum, frequency)
    np.testing.assert_allclose(others, 0.0, atol=1e-20)


def test_spectrum_even_nyquist_counts_once():
    p = 12
    row = np.array([[(-1.0) ** x for x in range(p)]])  # frequency p/2
    spectrum = fourier_spectrum(row)[0]
    assert spectrum[p // 2] == pytest.approx(p, rel=1e-12)
    assert spectrum.sum() == pytest.approx(p, rel=1e-12)


def test_spectrum_constant_is_frequency_zero():
    spectrum = fourier_spectrum(np.full((1, P), 3.0))[0]
    assert spectrum[0] == pytest.approx(9.0 * P, rel=1e-12)
    np.testing.assert_allclose(spectrum[1:], 0.0, atol=1e-20)


def test_spectrum_rejects_1d():
    with pytest.raises(ValueError):
        fourier_spectrum(np.ones(P))


# --- fourier_features ---------------------------------------------------------


def test_features_pure_cosines():
    frequencies = [2, 5, 2, 5, 5]
    phases = [0.0, 1.0, 2.0, 0.3, -1.2]
    weight = cosine_weight(frequencies, frequencies, phases, phases[::-1])
    features = fourier_features(weight, P, top_k=2)
    assert features["key_frequencies"] == [2, 5]
    assert features["top_k_norm_fraction"] == pytest.approx(1.0, abs=1e-12)
    assert features["dominant_frequency_agreement"] == 1.0
    assert features["n_dead_neurons"] == 0
    for block in ("a", "b"):
        stats = features[block]
        assert stats["key_frequencies"] == [2, 5]
        assert stats["dominant_frequency"] == frequencies
        np.testing.assert_allclose(stats["purity"], 1.0, atol=1e-12)
        np.testing.assert_allclose(stats["ipr"], 1.0, atol=1e-12)
        assert stats["ipr_mean"] == pytest.approx(1.0, abs=1e-12)
        assert stats["ipr_median"] == pytest.approx(1.0, abs=1e-12)
        assert stats["top_k_norm_fraction"] == pytest.approx(1.0, abs=1e-12)
        # Two frequencies with power 2 x 13/2 and 3 x 13/2: IPR (4 + 9) / 25.
        assert stats["ipr_total"] == pytest.approx(13 / 25, rel=1e-12)


def test_features_a_b_split():
    weight = cosine_weight([2, 2, 2], [4, 4, 6], [0.0, 1.0, 2.0], [0.5, 0.1, 0.2])
    features = fourier_features(weight, P, top_k=1)
    assert features["a"]["key_frequencies"] == [2]
    assert features["b"]["key_frequencies"] == [4]
    assert features["dominant_frequency_agreement"] == 0.0
    key_a, key_b = features["a"]["key_frequencies"], features["b"]["key_frequencies"]
    assert jaccard(key_a, key_b) == 0.0
    # Combined power: f=2 has 3 units, f=4 two and f=6 one, so the top is f=2.
    assert features["key_frequencies"] == [2]
    assert features["top_k_norm_fraction"] == pytest.approx(0.5, rel=1e-12)


def test_features_partial_agreement():
    weight = cosine_weight([1, 3, 3, 6], [1, 3, 4, 5], [0.0] * 4, [0.0] * 4)
    features = fourier_features(weight, P, top_k=3)
    assert features["dominant_frequency_agreement"] == pytest.approx(0.5)


def test_features_random_gaussian():
    rng = np.random.default_rng(0)
    p, top_k = 31, 3
    weight = rng.normal(size=(512, 2 * p))
    features = fourier_features(weight, p, top_k=top_k)
    # Each non-zero frequency gets about 2/p of the power, so about 0.2 in all.
    expected = top_k / (p // 2)
    assert features["top_k_norm_fraction"] == pytest.approx(expected, rel=0.25)
    for block in ("a", "b"):
        assert features[block]["top_k_norm_fraction"] == pytest.approx(
            expected, rel=0.25
        )
        assert features[block]["purity_mean"] < 0.5
        # Total spectrum is nearly flat over p//2 + 1 bins.
        assert features[block]["ipr_total"] < 1.5 / (p // 2)


def test_features_dead_neurons():
    weight = cosine_weight([2, 5, 5], [2, 5, 5], [0.0, 1.0, 2.0], [0.0, 1.0, 2.0])
    weight[1] = 0.0  # dead in both blocks
    weight[2, P:] = 0.0  # dead in block b only
    features = fourier_features(weight, P, top_k=2)
    assert features["n_dead_neurons"] == 1
    assert features["a"]["n_dead_neurons"] == 1
    assert features["b"]["n_dead_neurons"] == 2
    assert features["a"]["dominant_frequency"] == [2, None, 5]
    assert features["b"]["purity"][1:] == [None, None]
    assert features["b"]["purity_mean"] == pytest.approx(1.0, abs=1e-12)
    assert features["dominant_frequency_agreement"] == 1.0
    text = json.dumps(features, allow_nan=False)
    assert "NaN" not in text


def test_features_all_dead():
    features = fourier_features(np.zeros((4, 2 * P)), P)
    assert features["key_frequencies"] == []
    assert features["top_k_norm_fraction"] is None
    assert features["dominant_frequency_agreement"] is None
    assert features["a"]["purity_mean"] is None
    json.dumps(features, allow_nan=False)


def test_features_accepts_torch_parameter():
    layer = torch.nn.Linear(2 * P, 8)
    features = fourier_features(layer.weight, P)
    assert features["n_neurons"] == 8
    assert len(features["key_frequencies"]) == 5


@pytest.mark.parametrize("shape, top_k", [((4, 2 * P + 1), 5), ((4, 2 * P), 0)])
def test_features_bad_input(shape, top_k):
    with pytest.raises(ValueError):
        fourier_features(np.ones(shape), P, top_k=top_k)


def test_jaccard_cases():
    assert jaccard([], []) == 1.0
    assert jaccard([1, 2], [2, 3]) == pytest.approx(1 / 3)
    assert jaccard([4], [4]) == 1.0
    assert jaccard([1], []) == 0.0


# --- Ising probes -------------------------------------------------------------


def ising_samples(n=400, seed=0):
    rng = np.random.default_rng(seed)
    energy = rng.uniform(-2.0, 0.0, size=n)
    abs_magnetisation = rng.uniform(0.0, 1.0, size=n)
    return rng, energy, abs_magnetisation


def test_correlation_affine_unit():
    rng, energy, abs_m = ising_samples()
    units = np.column_stack([rng.normal(size=energy.size), -3.0 * energy + 1.0])
    result = feature_correlations({"fc1": units}, {"energy": energy})
    stats = result["fc1"]["energy"]
    assert stats["correlations"][1] == pytest.approx(-1.0, abs=1e-12)
    assert stats["max_abs_corr"] == pytest.approx(1.0, abs=1e-12)
    assert stats["best_unit"] == 1
    assert stats["n_constant_units"] == 0


def test_correlation_matches_numpy():
    rng, energy, _ = ising_samples(n=50)
    units = rng.normal(size=(50, 6)) + 0.3 * energy[:, None]
    stats = feature_correlations({"x": units}, {"energy": energy})["x"]["energy"]
    expected = [np.corrcoef(units[:, j], energy)[0, 1] for j in range(6)]
    np.testing.assert_allclose(stats["correlations"], expected, atol=1e-12)
    assert stats["mean_abs_corr"] == pytest.approx(np.mean(np.abs(expected)), abs=1e-12)


def test_correlation_noise_units_small():
    rng, energy, abs_m = ising_samples(n=2000)
    units = rng.normal(size=(2000, 10))
    result = feature_correlations({"fc1": units}, {"energy": energy, "m": abs_m})
    # Four standard errors of 1/sqrt(2000) = 0.022.
    assert result["fc1"]["energy"]["max_abs_corr"] < 0.09
    assert result["fc1"]["m"]["max_abs_corr"] < 0.09


def test_correlation_constant_unit():
    rng, energy, _ = ising_samples(n=30)
    units = np.column_stack([np.full(30, 0.1), energy, np.zeros(30)])
    stats = feature_correlations({"fc1": units}, {"energy": energy})["fc1"]["energy"]
    assert stats["correlations"][0] is None
    assert stats["correlations"][2] is None
    assert stats["n_constant_units"] == 2
    assert stats["mean_abs_corr"] == pytest.approx(1.0, abs=1e-12)
    assert stats["best_unit"] == 1


def test_correlation_all_constant():
    _, energy, _ = ising_samples(n=10)
    stats = feature_correlations({"c": np.ones((10, 3))}, {"e": energy})["c"]["e"]
    assert stats["n_constant_units"] == 3
    assert stats["max_abs_corr"] is None
    assert stats["best_unit"] is None


def test_correlation_shape_mismatch():
    _, energy, _ = ising_samples(n=10)
    with pytest.raises(ValueError):
        feature_correlations({"c": np.ones((9, 3))}, {"e": energy})


def test_probe_affine_unit():
    rng, energy, _ = ising_samples()
    units = np.column_stack([rng.normal(size=energy.size), 2.0 * energy - 0.5])
    assert probe_r2(units, energy) == pytest.approx(1.0, abs=1e-4)


def test_probe_matches_least_squares_without_ridge():
    rng, energy, _ = ising_samples(n=200)
    units = rng.normal(size=(200, 3)) + energy[:, None]
    score = probe_r2(units, energy, ridge=0.0, seed=3)
    # Same split as the probe: a seeded permutation, first half held out.
    order = np.random.default_rng(3).permutation(200)
    test, train = order[:100], order[100:]
    design = np.column_stack([units, np.ones(200)])
    coefficients, *_ = np.linalg.lstsq(design[train], energy[train], rcond=None)
    residual = energy[test] - design[test] @ coefficients
    total = np.sum((energy[test] - energy[test].mean()) ** 2)
    expected = 1 - np.sum(residual**2) / total
    assert score == pytest.approx(expected, abs=1e-10)


def test_probe_noise_units_low():
    rng, energy, _ = ising_samples(n=1000)
    units = rng.normal(size=(1000, 5))
    assert probe_r2(units, energy) <= 0.1


def test_probe_seed_determinism():
    rng, energy, _ = ising_samples(n=100)
    units = rng.normal(size=(100, 4)) + 0.5 * energy[:, None]
    assert probe_r2(units, energy, seed=7) == probe_r2(units, energy, seed=7)
    assert probe_r2(units, energy, seed=7) != probe_r2(units, energy, seed=8)


def test_probe_constant_unit_no_nan():
    rng, energy, _ = ising_samples(n=100)
    units = np.column_stack([np.ones(100), energy])
    assert probe_r2(units, energy) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("n", [0, 3])
def test_probe_too_few_samples(n):
    with pytest.raises(ValueError):
        probe_r2(np.ones((n, 2)), np.arange(n, dtype=float))


def test_ising_features_combined():
    rng, energy, abs_m = ising_samples(n=300)
    activations = {
        "conv1": torch.tensor(np.column_stack([energy, rng.normal(size=300)])),
        "fc1": np.column_stack([abs_m**2, np.zeros(300)]),
    }
    result = ising_features(activations, energy, abs_m)
    assert result["targets"] == ["energy", "abs_magnetisation"]
    layers = result["layers"]
    assert set(layers) == {"conv1", "fc1"}
    assert layers["fc1"]["n_units"] == 2
    assert set(layers["fc1"]["correlations"]) == {"energy", "abs_magnetisation"}
    assert layers["conv1"]["probe_r2"]["energy"] == pytest.approx(1.0, abs=1e-4)
    assert layers["conv1"]["correlations"]["energy"]["best_unit"] == 0
    fc1_m = layers["fc1"]["correlations"]["abs_magnetisation"]
    assert fc1_m["n_constant_units"] == 1
    assert layers["fc1"]["probe_r2"]["abs_magnetisation"] > 0.9
    # The probe with seed 0 matches the one ising_features ran.
    expected = probe_r2(activations["fc1"], abs_m, seed=0)
    assert layers["fc1"]["probe_r2"]["abs_magnetisation"] == expected
    json.dumps(result, allow_nan=False)
