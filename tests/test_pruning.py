"""Pruning orders, curves, compression factors and linear fits on hand-made cases."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from groklab.analysis.pruning import (
    CompressionResult,
    PruningOrder,
    compression_factor,
    default_fractions,
    linear_fit,
    prune,
    pruning_curve,
    saliency,
)


def tiny_params() -> dict[str, torch.Tensor]:
    return {
        "fc1.weight": torch.tensor([[0.5, -3.0], [0.0, 2.0]]),
        "fc1.bias": torch.tensor([-1.0, 0.25]),
        "fc2.weight": torch.tensor([[4.0, -0.1]]),
    }


def tiny_fisher() -> dict[str, torch.Tensor]:
    return {
        "fc1.weight": torch.tensor([[2.0, 0.5], [7.0, 1.0]]),
        "fc1.bias": torch.tensor([3.0, 0.0]),
        "fc2.weight": torch.tensor([[0.125, 9.0]]),
    }


def flat(tensors: dict[str, torch.Tensor]) -> list[float]:
    return torch.cat([value.reshape(-1) for value in tensors.values()]).tolist()


def test_saliency_by_hand():
    params, fisher = tiny_params(), tiny_fisher()
    # Flat order: fc1.weight (0.5, -3, 0, 2), fc1.bias (-1, 0.25), fc2.weight (4, -0.1).
    magnitude = flat(saliency(params, None, "magnitude"))
    assert magnitude == pytest.approx([0.5, 3, 0, 2, 1, 0.25, 4, 0.1], rel=1e-6)
    assert flat(saliency(params, fisher, PruningOrder.FISHER)) == [
        2, 0.5, 7, 1, 3, 0, 0.125, 9
    ]
    theta2 = saliency(params, fisher, "fisher_theta2")
    assert flat(theta2) == pytest.approx([0.5, 4.5, 0, 4, 3, 0, 2, 0.09], rel=1e-6)
    assert list(theta2) == list(params)


def test_saliency_bad_inputs():
    params = tiny_params()
    with pytest.raises(ValueError, match="order 'random' is invalid.*'magnitude'"):
        saliency(params, None, "random")
    with pytest.raises(ValueError, match="needs the Fisher diagonal"):
        saliency(params, None, "fisher")
    with pytest.raises(ValueError, match="fisher\\['fc1.bias'\\] is missing"):
        saliency(params, {"fc1.weight": params["fc1.weight"]}, "fisher")


def test_prune_global_follows_sorted_saliency():
    params = tiny_params()
    scores = saliency(params, None, "magnitude")
    # Magnitudes by flat index: 0:.5 1:3 2:0 3:2 4:1 5:.25 6:4 7:.1,
    # so the ascending order is 2, 7, 5, 0, 4, 3, 1, 6.
    ascending = [2, 7, 5, 0, 4, 3, 1, 6]
    original = flat(params)
    for n_prune in range(9):
        expected = [
            0.0 if index in ascending[:n_prune] else value
            for index, value in enumerate(original)
        ]
        pruned = prune(params, scores, n_prune)
        assert flat(pruned) == pytest.approx(expected), n_prune
        assert list(pruned) == list(params)
    assert flat(params) == original


def test_prune_layer_scope():
    params = tiny_params()
    scores = saliency(params, tiny_fisher(), "fisher")
    # fc1 saliency by flat index: 2, .5, 7, 1, 3, 0 -> ascending 5, 1, 3, 0, 4, 2.
    pruned = prune(params, scores, 3, scope="fc1")
    assert pruned["fc1.weight"].tolist() == [[0.5, 0.0], [0.0, 0.0]]
    assert pruned["fc1.bias"].tolist() == [-1.0, 0.0]
    assert torch.equal(pruned["fc2.weight"], params["fc2.weight"])
    assert pruned["fc2.weight"] is not params["fc2.weight"]
    only_fc2 = prune(params, scores, 1, scope="fc2")
    assert only_fc2["fc2.weight"].tolist() == [[0.0, pytest.approx(-0.1)]]
    assert torch.equal(only_fc2["fc1.weight"], params["fc1.weight"])


def test_prune_ties_by_flat_position():
    params = {"a.weight": torch.arange(1.0, 5.0), "b.weight": torch.arange(5.0, 8.0)}
    scores = {"a.weight": torch.ones(4), "b.weight": torch.ones(3)}
    for n_prune in range(8):
        expected = [0.0] * n_prune + list(range(n_prune + 1, 8))
        assert flat(prune(params, scores, n_prune)) == expected


def test_prune_counts_zeros_as_pruned():
    params = {"a.weight": torch.tensor([0.0, 0.0, 1.0, 2.0])}
    scores = saliency(params, None, "magnitude")
    assert flat(prune(params, scores, 2)) == [0.0, 0.0, 1.0, 2.0]
    assert flat(prune(params, scores, 3)) == [0.0, 0.0, 0.0, 2.0]


def test_prune_bad_inputs():
    params = tiny_params()
    scores = saliency(params, None, "magnitude")
    with pytest.raises(ValueError, match="n_prune 9 is invalid: use 0 to 8"):
        prune(params, scores, 9)
    with pytest.raises(ValueError, match="n_prune -1 is invalid: use 0 to 6"):
        prune(params, scores, -1, scope="fc1")
    with pytest.raises(ValueError, match=r"scope 'fc3'.*\['fc1', 'fc2'\]"):
        prune(params, scores, 1, scope="fc3")
    with pytest.raises(ValueError, match="saliency lacks 'fc2.weight'"):
        prune(params, {"fc1.weight": scores["fc1.weight"]}, 1, scope="fc2")
    scores["fc1.bias"] = torch.tensor([float("nan"), 1.0])
    with pytest.raises(ValueError, match="contains NaN"):
        prune(params, scores, 1)


def classifier_case() -> tuple[nn.Module, dict, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 6), nn.ReLU(), nn.Linear(6, 4)).double()
    params = {name: value.detach().clone() for name, value in model.named_parameters()}
    inputs = torch.randn(50, 3, dtype=torch.float64)
    targets = model(inputs).argmax(-1).detach()  # the unpruned model is always right
    targets[:5] = (targets[:5] + 1) % 4  # except on five inputs
    return model, params, inputs, targets


def test_curve_end_points():
    model, params, inputs, targets = classifier_case()
    scores = saliency(params, None, "magnitude")
    curve = pruning_curve(
        model, params, scores, inputs, targets, [0.0, 0.5, 1.0], batch_size=16
    )
    with torch.no_grad():
        logits = model(inputs)
    assert curve.loss[0] == pytest.approx(
        nn.functional.cross_entropy(logits, targets).item(), rel=1e-12
    )
    assert curve.accuracy[0] == 0.9
    # Everything zero gives zero logits: loss log(4), argmax class 0.
    assert curve.loss[2] == pytest.approx(math.log(4), rel=1e-12)
    assert curve.accuracy[2] == (targets == 0).double().mean().item()
    assert curve.n_total == 3 * 6 + 6 + 6 * 4 + 4
    assert curve.n_pruned.tolist() == [0, 26, 52]
    assert curve.scope == "global"
    assert curve.order == "custom"


def test_curve_matches_prune():
    model, params, inputs, targets = classifier_case()
    scores = saliency(params, None, "magnitude")
    fractions = [0.0, 0.1, 0.1, 0.3, 0.75, 1.0]
    curve = pruning_curve(
        model, params, scores, inputs, targets, fractions, scope="0", order="magnitude"
    )
    assert curve.n_total == 24
    assert curve.order == "magnitude"
    assert curve.scope == "0"
    for fraction, count, loss, accuracy in zip(
        fractions, curve.n_pruned, curve.loss, curve.accuracy
    ):
        assert count == math.floor(fraction * 24 + 0.5)
        pruned = prune(params, scores, int(count), scope="0")
        with torch.no_grad():
            logits = torch.func.functional_call(model, pruned, (inputs,))
        expected = nn.functional.cross_entropy(logits, targets).item()
        assert loss == pytest.approx(expected, rel=1e-12)
        assert accuracy == (logits.argmax(-1) == targets).double().mean().item()
    as_dict = curve.to_dict()
    assert as_dict["n_pruned"] == curve.n_pruned.tolist()
    assert isinstance(as_dict["loss"][0], float)


def test_curve_bad_fractions():
    model, params, inputs, targets = classifier_case()
    scores = saliency(params, None, "magnitude")
    args = (model, params, scores, inputs, targets)
    with pytest.raises(ValueError, match="not sorted"):
        pruning_curve(*args, [0.5, 0.2])
    with pytest.raises(ValueError, match="values in \\[0, 1\\]"):
        pruning_curve(*args, [0.0, 1.5])
    with pytest.raises(ValueError, match="2 targets are invalid"):
        pruning_curve(model, params, scores, inputs, targets[:2], [0.0])


def test_default_fractions():
    fractions = default_fractions()
    assert fractions[0] == 0.0
    assert fractions[-1] == 1.0
    assert np.all(np.diff(fractions) > 0)
    assert 90 <= len(fractions) <= 101
    assert fractions[-2] == pytest.approx(1 - 1e-4)
    # Denser near 1: more points in (0.9, 1] than in [0, 0.1].
    assert np.sum(fractions > 0.9) > 2 * np.sum(fractions < 0.1)
    with pytest.raises(ValueError, match="n 3 is invalid"):
        default_fractions(3)


def diagonal_case() -> tuple[nn.Module, dict, torch.Tensor, torch.Tensor]:
    """Return a 10-class linear model whose class i is right iff W[i, i] > 0.

    Off-diagonal weights are negative and smaller in magnitude than every
    diagonal weight, so magnitude pruning removes all 90 of them first without
    changing a prediction. Diagonal weights then go in increasing size, from
    class 9 to class 1, and each costs one class. Class 0 has the largest one
    and stays right even with zero logits, because argmax picks index 0.
    """
    model = nn.Linear(10, 10, bias=False).double()
    off_diagonal = -0.01 * torch.arange(1, 101, dtype=torch.float64).view(10, 10)
    weight = torch.where(torch.eye(10, dtype=torch.bool), 0.0, off_diagonal)
    weight += torch.diag(torch.linspace(20.0, 11.0, 10, dtype=torch.float64))
    params = {"weight": weight}
    inputs = torch.eye(10, dtype=torch.float64)
    return model, params, inputs, torch.arange(10)


@pytest.mark.parametrize(
    "tolerance, n_kept",
    [(0.0, 10), (0.1, 9), (0.25, 8), (0.65, 4), (0.85, 2)],
)
def test_compression_factor_known_answer(tolerance, n_kept):
    # Base accuracy 1. After the first 90 pruned entries, each pruned diagonal
    # weight costs 0.1 accuracy, so floor(10 x tolerance) of them may go.
    # Tolerance 0.1 checks equality: accuracy 0.9 meets threshold 0.9.
    model, params, inputs, targets = diagonal_case()
    scores = saliency(params, None, "magnitude")
    result = compression_factor(
        model, params, scores, inputs, targets, tolerance=tolerance, order="magnitude"
    )
    assert isinstance(result, CompressionResult)
    assert result.n_kept == n_kept
    assert result.factor == 100 / n_kept
    assert result.n_total == 100
    assert result.base_accuracy == 1.0
    assert result.threshold_accuracy == pytest.approx(1 - tolerance)
    assert "magnitude order" in result.definition
    assert result.to_dict()["n_kept"] == n_kept


def test_compression_factor_all_pruned_is_inf():
    # Tolerance 0.9 allows accuracy 0.1, which all-zero weights still reach.
    model, params, inputs, targets = diagonal_case()
    scores = saliency(params, None, "magnitude")
    result = compression_factor(model, params, scores, inputs, targets, tolerance=0.9)
    assert result.n_kept == 0
    assert result.factor == math.inf


def passing_counts(model, params, scores, inputs, targets, tolerance, scope):
    """Return, for every pruned count 0..n_total, whether its accuracy passes."""
    names = [name for name in params if scope is None or name.startswith(scope + ".")]
    n_total = sum(params[name].numel() for name in names)
    accuracies = []
    for count in range(n_total + 1):
        pruned = prune(params, scores, count, scope=scope)
        with torch.no_grad():
            logits = torch.func.functional_call(model, pruned, (inputs,))
        accuracies.append((logits.argmax(-1) == targets).double().mean().item())
    return np.array(accuracies) >= (1 - tolerance) * accuracies[0]


@pytest.mark.parametrize("order", ["magnitude", "fisher_theta2"])
@pytest.mark.parametrize("scope", [None, "0", "2"])
def test_compression_factor_brute_force(order, scope):
    model, params, inputs, targets = classifier_case()
    fisher = {name: torch.rand_like(value) for name, value in params.items()}
    scores = saliency(params, fisher, order)
    args = (model, params, scores, inputs, targets)
    for tolerance in (0.0, 0.05, 0.3):
        passing = passing_counts(*args, tolerance, scope)
        n_total = len(passing) - 1
        # The largest count whose every smaller count passes.
        prefix = n_total if passing.all() else int(np.argmin(passing)) - 1
        every_count = pruning_curve(
            *args, np.arange(n_total + 1) / n_total, scope=scope
        )
        assert every_count.n_pruned.tolist() == list(range(n_total + 1))
        scanned = compression_factor(
            *args, tolerance=tolerance, scope=scope, curve=every_count
        )
        assert scanned.n_kept == n_total - prefix, tolerance
        assert scanned.scope == (scope or "global")
        # On a coarse grid, bisection ends on a pass/fail boundary, which equals
        # the prefix result whenever accuracy is monotone in the count.
        coarse = pruning_curve(*args, [0.0, 0.5, 1.0], scope=scope)
        bisected = compression_factor(
            *args, tolerance=tolerance, scope=scope, curve=coarse
        )
        pruned = n_total - bisected.n_kept
        assert passing[pruned], tolerance
        assert pruned == n_total or not passing[pruned + 1], tolerance
        if passing.all() or not passing[prefix + 1 :].any():
            assert bisected.n_kept == n_total - prefix, tolerance


def test_compression_factor_bad_inputs():
    model, params, inputs, targets = diagonal_case()
    scores = saliency(params, None, "magnitude")
    args = (model, params, scores, inputs, targets)
    for tolerance in (-0.1, 1.0):
        with pytest.raises(ValueError, match=f"tolerance {tolerance} is invalid"):
            compression_factor(*args, tolerance=tolerance)
    curve = pruning_curve(*args, [0.0, 1.0], order="fisher")
    with pytest.raises(ValueError, match="differs from the curve's order 'fisher'"):
        compression_factor(*args, curve=curve, order="magnitude")
    model2, params2, inputs2, targets2 = classifier_case()
    scores2 = saliency(params2, None, "magnitude")
    with pytest.raises(ValueError, match="recompute the curve"):
        compression_factor(model2, params2, scores2, inputs2, targets2, curve=curve)


def test_linear_fit_exact_line():
    fractions = np.linspace(0, 1, 11)
    fit = linear_fit(fractions, 2.5 * fractions + 0.75)
    assert fit.slope == pytest.approx(2.5, rel=1e-12)
    assert fit.intercept == pytest.approx(0.75, rel=1e-12)
    assert fit.r2 == pytest.approx(1.0, abs=1e-12)
    assert fit.n_points == 11
    assert fit.max_fraction is None


def test_linear_fit_max_fraction_and_noise():
    rng = np.random.default_rng(0)
    fractions = np.linspace(0, 1, 201)
    noise = rng.normal(0, 0.1, size=fractions.shape)
    losses = np.where(fractions <= 0.5, 1.0 + 2.0 * fractions + noise, 50.0)
    fit = linear_fit(fractions, losses, max_fraction=0.5)
    assert fit.n_points == 101
    assert fit.max_fraction == 0.5
    # Independent check with numpy's polynomial least squares.
    keep = fractions <= 0.5
    slope, intercept = np.polyfit(fractions[keep], losses[keep], 1)
    assert fit.slope == pytest.approx(slope, rel=1e-10)
    assert fit.intercept == pytest.approx(intercept, rel=1e-10)
    residual = losses[keep] - (slope * fractions[keep] + intercept)
    centred = losses[keep] - losses[keep].mean()
    r2 = 1 - np.sum(residual**2) / np.sum(centred**2)
    assert fit.r2 == pytest.approx(r2, rel=1e-10)
    assert 0.5 < fit.r2 < 1.0


def test_linear_fit_constant_loss():
    fit = linear_fit([0.0, 0.1, 0.2, 0.3], [0.1, 0.1, 0.1, 0.1])
    assert fit.slope == 0.0
    assert fit.intercept == 0.1
    assert fit.r2 == 1.0


def test_linear_fit_bad_inputs():
    with pytest.raises(ValueError, match="2 points remain"):
        linear_fit([0.0, 0.1, 0.9], [1.0, 2.0, 3.0], max_fraction=0.5)
    with pytest.raises(ValueError, match="equal length"):
        linear_fit([0.0, 0.1, 0.2], [1.0, 2.0])
    with pytest.raises(ValueError, match="NaN or inf"):
        linear_fit([0.0, 0.1, 0.2], [1.0, float("nan"), 3.0])
    with pytest.raises(ValueError, match="all fractions equal"):
        linear_fit([0.5, 0.5, 0.5], [1.0, 2.0, 3.0])
