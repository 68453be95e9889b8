"""Trajectory measures on hand-built trajectories with known geometry."""

import json
import warnings

import numpy as np
import pytest

from groklab.analysis.geometry import summary_statistics, trajectory_measures

COSINE_KEYS = ("euclidean_cosine", "fisher_cosine")


def random_fishers(n_checkpoints, n_params, seed=0):
    """Return positive diagonal Fishers that change from checkpoint to checkpoint."""
    return np.random.default_rng(seed).uniform(0.2, 5.0, size=(n_checkpoints, n_params))


def test_straight_line_cosines_one():
    rng = np.random.default_rng(1)
    theta0, v = rng.normal(size=6), rng.normal(size=6)
    thetas = theta0 + np.arange(5)[:, None] * v
    result = trajectory_measures(thetas, random_fishers(5, 6), [0, 10, 20, 30, 40])
    measures = result["all"]
    for key in COSINE_KEYS:
        assert len(measures[key]) == 3
        np.testing.assert_allclose(measures[key], 1.0, atol=1e-12)
    step = np.linalg.norm(v)
    np.testing.assert_allclose(measures["euclidean_step"], step, rtol=1e-12)
    assert result["step_epochs"] == [0, 10, 20, 30]
    assert result["turn_epochs"] == [10, 20, 30]


def test_straight_line_constant_fisher_step():
    v = np.array([1.0, -2.0, 0.5])
    thetas = np.arange(4)[:, None] * v
    fisher_row = np.array([2.0, 0.5, 4.0])
    fishers = np.tile(fisher_row, (4, 1))
    measures = trajectory_measures(thetas, fishers, np.arange(4))["all"]
    # sqrt(2 * 1 + 0.5 * 4 + 4 * 0.25) = sqrt(5) for every step.
    np.testing.assert_allclose(measures["fisher_step"], np.sqrt(5.0), rtol=1e-12)


def test_zigzag_cosines_minus_one():
    rng = np.random.default_rng(2)
    theta0, v = rng.normal(size=5), rng.normal(size=5)
    thetas = theta0 + np.array([0, 1, 0, 1, 0, 1])[:, None] * v
    measures = trajectory_measures(thetas, random_fishers(6, 5), np.arange(6))["all"]
    for key in COSINE_KEYS:
        np.testing.assert_allclose(measures[key], -1.0, atol=1e-12)


def test_steps_toward_origin_decay_cosine_one():
    theta0 = np.array([3.0, -1.0, 2.0, 0.5])
    thetas = np.array([1.0, 0.8, 0.5, 0.1])[:, None] * theta0
    result = trajectory_measures(thetas, random_fishers(4, 4), [0, 1, 2, 3])
    measures = result["all"]
    np.testing.assert_allclose(measures["euclidean_decay_cosine"], 1.0, atol=1e-12)
    np.testing.assert_allclose(measures["fisher_decay_cosine"], 1.0, atol=1e-12)
    expected_norms = np.array([1.0, 0.8, 0.5, 0.1]) * np.linalg.norm(theta0)
    np.testing.assert_allclose(measures["parameter_norm"], expected_norms, rtol=1e-12)


def test_fisher_measures_hand_example():
    thetas = np.array([[0.0, 0.0], [1.0, 1.0], [1.0, 3.0]])
    fishers = np.array([[4.0, 1.0], [9.0, 1.0], [1.0, 1.0]])
    measures = trajectory_measures(thetas, fishers, [0, 5, 7])["all"]
    # s_0 = (1, 1) with F_0 = diag(4, 1): sqrt(4 + 1).
    # s_1 = (0, 2) with F_1 = diag(9, 1): sqrt(0 + 4) = 2.
    np.testing.assert_allclose(measures["fisher_step"], [np.sqrt(5.0), 2.0], rtol=1e-12)
    np.testing.assert_allclose(
        measures["euclidean_step"], [np.sqrt(2.0), 2.0], rtol=1e-12
    )
    # Turn in F_1 = diag(9, 1): s0.F.s1 = 2, |s0|_F = sqrt(10), |s1|_F = 2.
    assert measures["fisher_cosine"][0] == pytest.approx(1 / np.sqrt(10), rel=1e-12)
    assert measures["euclidean_cosine"][0] == pytest.approx(1 / np.sqrt(2), rel=1e-12)
    # Step 1 against -theta_1 = (-1, -1) in F_1: -(0 + 2) / (2 * sqrt(10)).
    assert measures["fisher_decay_cosine"][1] == pytest.approx(
        -1 / np.sqrt(10), rel=1e-12
    )
    assert measures["euclidean_decay_cosine"][1] == pytest.approx(
        -1 / np.sqrt(2), rel=1e-12
    )


def test_zero_step_gives_none_without_warning():
    thetas = np.array([[1.0, 2.0], [1.0, 2.0], [2.0, 2.0], [2.0, 2.0]])
    fishers = np.ones((4, 2))
    fishers[1] = 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = trajectory_measures(thetas, fishers, [0, 1, 2, 3])
    measures = result["all"]
    assert measures["euclidean_cosine"] == [None, None]
    assert measures["fisher_cosine"] == [None, None]
    assert measures["euclidean_decay_cosine"][0] is None
    assert measures["euclidean_decay_cosine"][1] == pytest.approx(-1 / np.sqrt(5))
    # Step 1 in metric F_1 = 0 has zero Fisher norm.
    assert measures["fisher_decay_cosine"][1] is None
    assert measures["fisher_step"] == [0.0, 0.0, 0.0]
    json.dumps(result, allow_nan=False)


def test_sloppy_stiff_partition():
    rng = np.random.default_rng(3)
    thetas = rng.normal(size=(5, 20))
    fishers = rng.uniform(0.0, 0.3, size=(5, 20))
    result = trajectory_measures(thetas, fishers, np.arange(5), sloppy_threshold=0.1)
    assert result["n_sloppy"] == int(np.sum(fishers[-1] < 0.1))
    assert result["n_sloppy"] + result["n_stiff"] == 20
    assert result["sloppy_threshold"] == 0.1
    # Squared norms and step lengths add over a partition of the parameters.
    for key in ("parameter_norm", "euclidean_step", "fisher_step"):
        total = np.square(result["all"][key])
        parts = np.square(result["sloppy"][key]) + np.square(result["stiff"][key])
        np.testing.assert_allclose(parts, total, rtol=1e-12)


def test_sloppy_split_hand_case():
    # Parameter 0 (sloppy) moves by +1 then -1, parameter 1 (stiff) by +1, +1.
    thetas = np.array([[0.0, 0.0], [1.0, 1.0], [0.0, 2.0]])
    fishers = np.array([[1.0, 1.0], [1.0, 1.0], [0.05, 2.0]])
    result = trajectory_measures(thetas, fishers, [0, 1, 2])
    assert result["n_sloppy"] == 1
    assert result["n_stiff"] == 1
    assert result["sloppy"]["euclidean_cosine"] == [-1.0]
    assert result["stiff"]["euclidean_cosine"] == [1.0]
    assert result["all"]["euclidean_cosine"] == [pytest.approx(0.0, abs=1e-15)]
    assert result["sloppy"]["parameter_norm"] == [0.0, 1.0, 0.0]


def test_final_fisher_overrides_last_row():
    thetas = np.zeros((3, 3))
    fishers = np.ones((3, 3))
    final = np.array([0.0, 0.5, 2.0])
    result = trajectory_measures(
        thetas, fishers, [0, 1, 2], sloppy_threshold=1.0, final_fisher=final
    )
    assert result["n_sloppy"] == 2
    assert result["n_stiff"] == 1


def test_empty_subset_has_none_cosines():
    thetas = np.arange(6, dtype=float).reshape(3, 2)
    result = trajectory_measures(thetas, np.ones((3, 2)), [0, 1, 2])
    assert result["n_sloppy"] == 0
    assert result["sloppy"]["euclidean_cosine"] == [None]
    assert result["sloppy"]["parameter_norm"] == [0.0, 0.0, 0.0]


@pytest.mark.parametrize(
    "thetas_shape, fishers_shape, n_epochs",
    [
        ((3, 4), (3, 5), 3),
        ((3, 4), (3, 4), 2),
        ((1, 4), (1, 4), 1),
        ((4,), (4,), 4),
    ],
)
def test_shape_mismatch_raises(thetas_shape, fishers_shape, n_epochs):
    with pytest.raises(ValueError):
        trajectory_measures(
            np.zeros(thetas_shape), np.ones(fishers_shape), np.arange(n_epochs)
        )


def test_bad_final_fisher_raises():
    with pytest.raises(ValueError):
        trajectory_measures(
            np.zeros((3, 4)), np.ones((3, 4)), [0, 1, 2], final_fisher=np.ones(3)
        )


def test_negative_fisher_raises():
    with pytest.raises(ValueError):
        trajectory_measures(np.zeros((2, 2)), -np.ones((2, 2)), [0, 1])


def test_summary_statistics_values():
    stats = summary_statistics([4.0, None, 1.0, np.nan, 3.0, 2.0, np.inf])
    assert stats["n_finite"] == 4
    assert stats["median"] == pytest.approx(2.5)
    assert stats["mean"] == pytest.approx(2.5)
    # numpy's default linear quantiles of 1, 2, 3, 4: 1.75 and 3.25.
    assert stats["q25"] == pytest.approx(1.75)
    assert stats["q75"] == pytest.approx(3.25)


def test_summary_statistics_no_finite():
    stats = summary_statistics([None, np.nan])
    assert stats["n_finite"] == 0
    for key in ("median", "mean", "q25", "q75"):
        assert stats[key] is None
