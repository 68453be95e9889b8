"""InPCA and Bhattacharyya distances, checked against closed-form results."""

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from groklab.analysis.inpca import (
    InPCAResult,
    bhattacharyya_distances,
    inpca,
    trajectory_probabilities,
)


def random_probabilities(n_models, n_inputs, n_classes, seed=0):
    """Return random (n_models, n_inputs, n_classes) softmax rows."""
    logits = np.random.default_rng(seed).normal(size=(n_models, n_inputs, n_classes))
    exp = np.exp(logits)
    return exp / exp.sum(axis=-1, keepdims=True)


def pairwise_squared(points):
    """Return the matrix of squared Euclidean distances between rows of points."""
    differences = points[:, None, :] - points[None, :, :]
    return (differences**2).sum(axis=-1)


def angle_distributions(thetas):
    """Return two-class rows (cos^2 theta, sin^2 theta) for (M, N) angles."""
    thetas = np.asarray(thetas)
    return np.stack([np.cos(thetas) ** 2, np.sin(thetas) ** 2], axis=-1)


# Bhattacharyya distances


def test_bhattacharyya_self_distance_zero():
    probs = random_probabilities(3, 5, 4)
    duplicated = np.concatenate([probs, probs[:1]])
    distances = bhattacharyya_distances(duplicated)
    np.testing.assert_array_equal(np.diag(distances), 0.0)
    assert abs(distances[0, 3]) < 1e-12
    assert abs(distances[3, 0]) < 1e-12


def test_bhattacharyya_symmetric_and_positive():
    distances = bhattacharyya_distances(random_probabilities(6, 7, 5, seed=1))
    np.testing.assert_array_equal(distances, distances.T)
    off_diagonal = distances[~np.eye(6, dtype=bool)]
    assert np.all(off_diagonal > 0)


def test_bhattacharyya_hand_computed_value():
    # BC = sqrt(0.45) + sqrt(0.05) = 2 / sqrt(5), so D = log(5 / 4) / 2.
    probs = np.array([[[0.5, 0.5]], [[0.9, 0.1]]])
    distances = bhattacharyya_distances(probs)
    assert distances[0, 1] == pytest.approx(0.5 * math.log(1.25), rel=1e-14)


def test_bhattacharyya_cosine_closed_form():
    thetas = np.linspace(0.0, 1.2, 9)
    distances = bhattacharyya_distances(angle_distributions(thetas[:, None]))
    # For theta in [0, pi/2], BC = cos(theta_a - theta_b).
    expected = -np.log(np.cos(thetas[:, None] - thetas[None, :]))
    np.testing.assert_allclose(distances, expected, rtol=1e-12, atol=1e-14)


def test_bhattacharyya_sum_and_mean_over_inputs():
    # Two inputs with angle gaps 0.3 and 0.7 between the two models.
    probs = angle_distributions([[0.0, 0.2], [0.3, 0.9]])
    total = -math.log(math.cos(0.3)) - math.log(math.cos(0.7))
    summed = bhattacharyya_distances(probs, reduction="sum")
    averaged = bhattacharyya_distances(probs)
    assert summed[0, 1] == pytest.approx(total, rel=1e-12)
    assert averaged[0, 1] == pytest.approx(total / 2, rel=1e-12)


def test_bhattacharyya_disjoint_support_capped():
    probs = np.array([[[1.0, 0.0]], [[0.0, 1.0]]])
    distances = bhattacharyya_distances(probs)
    cap = -math.log(np.finfo(np.float64).tiny)
    assert np.isfinite(distances).all()
    assert distances[0, 1] == pytest.approx(cap, rel=1e-12)


def test_bhattacharyya_renormalises_within_tolerance():
    probs = np.array([[[0.5, 0.5]], [[0.9, 0.1]]])
    nudged = probs * (1 + 5e-7)
    distances = bhattacharyya_distances(nudged)
    assert distances[0, 1] == pytest.approx(0.5 * math.log(1.25), rel=1e-12)


@pytest.mark.parametrize(
    "probs, match",
    [
        (np.full((2, 3), 0.5), r"shape \(2, 3\)"),
        (np.zeros((0, 2, 2)), r"shape \(0, 2, 2\)"),
        (np.array([[[1.2, -0.2]]]), r"negative entries \(min -0\.2\)"),
        (np.array([[[0.5, 0.6]]]), r"not normalised \(max \|row sum - 1\| = 0\.1"),
        (np.array([[[np.nan, 1.0]]]), "NaN or inf"),
    ],
)
def test_bhattacharyya_rejects_bad_probs(probs, match):
    with pytest.raises(ValueError, match=match):
        bhattacharyya_distances(probs)


def test_bhattacharyya_rejects_bad_reduction():
    with pytest.raises(ValueError, match="reduction 'median' is invalid"):
        bhattacharyya_distances(random_probabilities(2, 2, 2), reduction="median")


# InPCA


def test_inpca_recovers_euclidean_points():
    points = np.random.default_rng(2).normal(size=(10, 2))
    result = inpca(pairwise_squared(points), n_components=2)
    np.testing.assert_allclose(
        pairwise_squared(result.coordinates),
        pairwise_squared(points),
        rtol=0,
        atol=1e-10,
    )
    np.testing.assert_array_equal(result.signs, [1, 1])
    scale = abs(result.eigenvalues[0])
    tolerance = 1e-12 * scale
    np.testing.assert_allclose(result.eigenvalues[2:], 0.0, rtol=0, atol=tolerance)
    np.testing.assert_allclose(result.explained_fraction.sum(), 1.0, rtol=1e-10)


def test_inpca_minkowski_one_time_like():
    rng = np.random.default_rng(3)
    space = rng.normal(size=(12, 2))
    time = rng.normal(size=(12, 1))
    distances = pairwise_squared(space) - pairwise_squared(time)
    result = inpca(distances, n_components=3)
    assert list(result.signs).count(-1) == 1
    negative = int(np.flatnonzero(result.signs == -1)[0])
    assert result.eigenvalues[negative] < 0
    signed = np.zeros_like(distances)
    for k in range(3):
        column = result.coordinates[:, k]
        signed += result.signs[k] * (column[:, None] - column[None, :]) ** 2
    np.testing.assert_allclose(signed, distances, rtol=0, atol=1e-10)
    reproduced = result.squared_distances()
    np.testing.assert_allclose(reproduced, distances, rtol=0, atol=1e-10)
    scale = abs(result.eigenvalues[0])
    tolerance = 1e-12 * scale
    np.testing.assert_allclose(result.eigenvalues[3:], 0.0, rtol=0, atol=tolerance)


def test_inpca_time_like_recovers_time_gaps():
    # A Lorentz boost leaves signed distances unchanged, so the time axis is
    # unique only when the centred space and time coordinates are orthogonal.
    rng = np.random.default_rng(4)
    space = rng.normal(size=8)
    space -= space.mean()
    time = 3.0 * rng.normal(size=8)
    time -= time.mean()
    time -= (time @ space) / (space @ space) * space
    distances = pairwise_squared(space[:, None]) - pairwise_squared(time[:, None])
    result = inpca(distances, n_components=2)
    negative = int(np.flatnonzero(result.signs == -1)[0])
    embedded = pairwise_squared(result.coordinates[:, [negative]])
    expected = pairwise_squared(time[:, None])
    np.testing.assert_allclose(embedded, expected, rtol=0, atol=1e-9)


def test_inpca_all_components_reproduce_bhattacharyya():
    # D_ij = W_ii + W_jj - 2 W_ij inverts the double centring for any
    # symmetric zero-diagonal D, so all M components reproduce D exactly.
    distances = bhattacharyya_distances(random_probabilities(7, 20, 3, seed=5))
    result = inpca(distances, n_components=7)
    reproduced = result.squared_distances()
    np.testing.assert_allclose(reproduced, distances, rtol=0, atol=1e-12)
    np.testing.assert_allclose(result.explained_fraction.sum(), 1.0, rtol=1e-12)


def test_inpca_angle_family_is_non_euclidean():
    # -log cos(dtheta) is not a Euclidean squared distance on a wide grid,
    # so the spectrum must contain a negative eigenvalue.
    thetas = np.linspace(0.0, 1.4, 15)
    distances = bhattacharyya_distances(angle_distributions(thetas[:, None]))
    result = inpca(distances, n_components=15)
    assert result.eigenvalues.min() < 0
    assert result.eigenvalues[0] > 0
    np.testing.assert_allclose(
        result.squared_distances(),
        -np.log(np.cos(thetas[:, None] - thetas[None, :])),
        rtol=0,
        atol=1e-10,
    )


def test_inpca_sorted_by_absolute_value():
    distances = bhattacharyya_distances(random_probabilities(9, 6, 4, seed=6))
    result = inpca(distances, n_components=4)
    magnitudes = np.abs(result.eigenvalues)
    assert np.all(np.diff(magnitudes) <= 1e-15)
    assert result.coordinates.shape == (9, 4)
    assert result.signs.shape == (4,)
    assert result.eigenvalues.shape == (9,)
    np.testing.assert_allclose(
        result.explained_fraction, magnitudes[:4] / magnitudes.sum(), rtol=1e-12
    )


def test_inpca_to_dict_is_json():
    points = np.random.default_rng(7).normal(size=(5, 2))
    record = inpca(pairwise_squared(points), n_components=2).to_dict()
    decoded = json.loads(json.dumps(record))
    assert decoded["n_models"] == 5
    assert decoded["n_components"] == 2
    assert decoded["signs"] == [1, 1]
    assert len(decoded["coordinates"]) == 5
    assert len(decoded["eigenvalues"]) == 5


def test_inpca_deterministic_eigenvector_signs():
    points = np.random.default_rng(8).normal(size=(6, 2))
    first = inpca(pairwise_squared(points), n_components=2)
    second = inpca(pairwise_squared(points)[::-1, ::-1], n_components=2)
    reversed_back = first.coordinates[::-1]
    np.testing.assert_allclose(reversed_back, second.coordinates, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "distances, n_components, match",
    [
        (np.zeros((2, 3)), 1, r"shape \(2, 3\)"),
        (
            np.array([[0.0, 1.0], [2.0, 0.0]]),
            1,
            r"not symmetric \(max \|D - D\^T\| = 1",
        ),
        (
            np.array([[0.5, 1.0], [1.0, 0.0]]),
            1,
            r"non-zero diagonal \(max \|D_ii\| = 0\.5",
        ),
        (np.array([[0.0, np.inf], [np.inf, 0.0]]), 1, "NaN or inf"),
        (np.zeros((3, 3)), 0, "n_components 0 is out of range: pass 1 to 3"),
        (np.zeros((3, 3)), 4, "n_components 4 is out of range"),
        (np.zeros((3, 3)), 1.5, "n_components 1.5 is invalid"),
        (np.zeros((3, 3)), True, "n_components True is invalid"),
    ],
)
def test_inpca_rejects_bad_input(distances, n_components, match):
    with pytest.raises(ValueError, match=match):
        inpca(distances, n_components=n_components)


def test_inpca_result_is_dataclass_with_arrays():
    result = inpca(np.zeros((3, 3)), n_components=2)
    assert isinstance(result, InPCAResult)
    np.testing.assert_array_equal(result.coordinates, 0.0)
    np.testing.assert_array_equal(result.explained_fraction, 0.0)


# Probabilities along a trajectory


def linear_checkpoints(model, n_checkpoints, seed=0):
    """Return parameter dicts for ``model`` drawn from a seeded normal."""
    generator = torch.Generator().manual_seed(seed)
    return [
        {
            name: torch.randn(p.shape, generator=generator)
            for name, p in model.named_parameters()
        }
        for _ in range(n_checkpoints)
    ]


def test_trajectory_probabilities_match_manual_softmax():
    torch.manual_seed(0)
    model = nn.Linear(3, 4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    checkpoints = linear_checkpoints(model, 3)
    inputs = torch.randn(10, 3)
    probs = trajectory_probabilities(model, checkpoints, inputs, batch_size=4)
    assert probs.shape == (3, 10, 4)
    assert probs.dtype == np.float64
    np.testing.assert_allclose(probs.sum(axis=-1), 1.0, rtol=0, atol=1e-14)
    for index, params in enumerate(checkpoints):
        logits = inputs.double() @ params["weight"].double().T + params["bias"].double()
        expected = torch.softmax(logits, dim=-1).numpy()
        np.testing.assert_allclose(probs[index], expected, rtol=1e-6, atol=1e-7)
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name])


def test_trajectory_probabilities_feed_inpca():
    torch.manual_seed(1)
    model = nn.Linear(5, 3)
    start, end = linear_checkpoints(model, 2, seed=1)
    path = [
        {name: (1 - t) * start[name] + t * end[name] for name in start}
        for t in np.linspace(0.0, 1.0, 6)
    ]
    probs = trajectory_probabilities(model, path, torch.randn(40, 5))
    distances = bhattacharyya_distances(probs)
    result = inpca(distances, n_components=6)
    reproduced = result.squared_distances()
    np.testing.assert_allclose(reproduced, distances, rtol=0, atol=1e-12)
    # The logits move on a line, and log-sum-exp is convex, so the distance
    # to the start grows strictly along the path.
    assert np.all(np.diff(distances[0]) > 0)


@pytest.mark.parametrize(
    "params_list, batch_size, match",
    [
        ([], 4, "params_list is empty"),
        ([{"weight": torch.zeros(4, 3)}], 0, "batch_size 0 is invalid"),
        (
            [{"weights": torch.zeros(4, 3)}],
            4,
            r"parameter dict 0 has names \['weights'\]",
        ),
    ],
)
def test_trajectory_probabilities_rejects_bad_input(params_list, batch_size, match):
    model = nn.Linear(3, 4)
    with pytest.raises(ValueError, match=match):
        trajectory_probabilities(model, params_list, torch.randn(5, 3), batch_size)


def test_trajectory_probabilities_rejects_empty_inputs():
    model = nn.Linear(3, 4)
    params = {name: p.detach() for name, p in model.named_parameters()}
    with pytest.raises(ValueError, match="inputs is empty"):
        trajectory_probabilities(model, [params], torch.zeros(0, 3))


def test_trajectory_probabilities_partial_dict_uses_model():
    torch.manual_seed(2)
    model = nn.Linear(3, 2)
    inputs = torch.randn(4, 3)
    probs = trajectory_probabilities(model, [{"weight": torch.zeros(2, 3)}], inputs)
    bias_only = torch.softmax(model.bias.detach().double(), dim=-1).numpy()
    np.testing.assert_allclose(probs[0], np.tile(bias_only, (4, 1)), rtol=1e-7)
