"""Incremental and batched pruning evaluators against the one-mask reference."""

import numpy as np
import pytest
import torch

from groklab.analysis.pruning import (
    compression_factor,
    pruning_curve,
    pruning_curve_reference,
    saliency,
)
from groklab.models import IsingCNN, ModAddMLP

P = 23


def modadd_case(dtype: torch.dtype) -> tuple:
    torch.manual_seed(0)
    model = ModAddMLP(P, 64).to(dtype)
    with torch.no_grad():
        for value in model.parameters():
            value.mul_(3.0)
        model.fc1.bias.normal_()
        model.fc2.bias.normal_()
    a, b = torch.meshgrid(torch.arange(P), torch.arange(P), indexing="ij")
    pairs = torch.stack([a.reshape(-1), b.reshape(-1)], 1)
    params = {name: value.detach().clone() for name, value in model.named_parameters()}
    fisher = {name: torch.rand_like(value) for name, value in params.items()}
    return model, params, fisher, pairs, pairs.sum(1) % P


@pytest.mark.parametrize("order", ["magnitude", "fisher"])
@pytest.mark.parametrize("scope", [None, "fc1", "fc2"])
def test_incremental_matches_reference_float64(order, scope):
    model, params, fisher, pairs, targets = modadd_case(torch.float64)
    scores = saliency(params, fisher, order)
    args = (model, params, scores, pairs, targets)
    fast = pruning_curve(*args, scope=scope, n_points=61, memory_mb=16)
    assert fast.method == "incremental"
    assert len(fast.fractions) == 61
    reference = pruning_curve_reference(*args, fast.fractions, scope=scope)
    assert np.array_equal(fast.n_pruned, reference.n_pruned)
    # float64 on both sides: only summation order differs. Near full pruning
    # the reference has exact logit ties (sums of exact zeros) that the
    # incremental logits miss by roundoff, so a few samples may differ there.
    np.testing.assert_allclose(fast.loss, reference.loss, rtol=1e-9, atol=1e-12)
    differences = np.abs(fast.accuracy - reference.accuracy) * len(pairs)
    assert np.max(differences) <= 3 + 1e-9
    assert np.sum(differences > 0.5) <= 6


def test_incremental_matches_reference_float32():
    # The reference runs in float32 and the incremental path in float64, so
    # loss agrees to 1e-5 relative and accuracy to one sample (argmax near-ties).
    model, params, fisher, pairs, targets = modadd_case(torch.float32)
    scores = saliency(params, fisher, "fisher_theta2")
    args = (model, params, scores, pairs, targets)
    fast = pruning_curve(*args, n_points=41)
    reference = pruning_curve_reference(*args, fast.fractions)
    np.testing.assert_allclose(fast.loss, reference.loss, rtol=1e-5)
    assert np.max(np.abs(fast.accuracy - reference.accuracy)) <= 1 / len(pairs) + 1e-12


def test_incremental_any_count_order():
    model, params, fisher, pairs, targets = modadd_case(torch.float64)
    scores = saliency(params, fisher, "magnitude")
    args = (model, params, scores, pairs, targets)
    fractions = np.array([0.9, 0.1, 1.0, 0.0, 0.5, 0.5])
    fast = pruning_curve(*args, np.sort(fractions))
    again = pruning_curve(*args, np.sort(fractions))
    assert np.array_equal(fast.accuracy, again.accuracy)
    reference = pruning_curve_reference(*args, np.sort(fractions))
    np.testing.assert_allclose(fast.loss, reference.loss, rtol=1e-9)
    # Everything pruned: all logits are exactly zero, so argmax is class 0.
    assert fast.accuracy[-1] == float((targets == 0).double().mean())


def ising_case() -> tuple:
    torch.manual_seed(4)
    model = IsingCNN(8, 10).double()
    generator = torch.Generator().manual_seed(5)
    spins = torch.randint(0, 2, (40, 1, 8, 8), generator=generator).double() * 2 - 1
    targets = torch.randint(0, 2, (40,), generator=generator)
    params = {name: value.detach().clone() for name, value in model.named_parameters()}
    return model, params, spins, targets


@pytest.mark.parametrize("scope", [None, "conv1", "fc1"])
def test_batched_matches_reference(scope):
    model, params, spins, targets = ising_case()
    scores = saliency(params, None, "magnitude")
    args = (model, params, scores, spins, targets)
    batched = pruning_curve(
        *args, scope=scope, n_points=31, memory_mb=16, batch_size=16, method="batched"
    )
    assert batched.method == "batched"
    reference = pruning_curve_reference(*args, batched.fractions, scope=scope)
    np.testing.assert_allclose(batched.loss, reference.loss, rtol=1e-10)
    assert np.array_equal(batched.accuracy, reference.accuracy)


def test_refined_curve_shape():
    model, params, spins, targets = ising_case()
    scores = saliency(params, None, "magnitude")
    args = (model, params, scores, spins, targets)
    curve = pruning_curve(*args, n_points=201)
    assert len(curve.fractions) == 201
    assert np.all(np.diff(curve.n_pruned) >= 0)
    assert np.all(np.diff(curve.fractions) >= 0)
    assert curve.fractions[0] == 0.0
    assert curve.fractions[-1] == 1.0
    assert curve.to_dict()["n_points"] == 201
    # conv1 has 20 entries, so every count 0..20 is evaluated.
    small = pruning_curve(*args, scope="conv1", n_points=201)
    assert small.n_pruned.tolist() == list(range(21))


def test_compression_same_for_all_methods():
    model, params, fisher, pairs, targets = modadd_case(torch.float64)
    scores = saliency(params, fisher, "magnitude")
    args = (model, params, scores, pairs, targets)
    results = [
        compression_factor(*args, tolerance=0.05, method=method)
        for method in ("incremental", "batched", "reference")
    ]
    assert len({result.n_kept for result in results}) == 1
    assert results[0].n_kept < results[0].n_total


def test_bad_method_and_memory():
    model, params, spins, targets = ising_case()
    scores = saliency(params, None, "magnitude")
    args = (model, params, scores, spins, targets)
    with pytest.raises(ValueError, match="method 'fast' is invalid"):
        pruning_curve(*args, method="fast")
    with pytest.raises(ValueError, match="memory_mb 8 is invalid"):
        pruning_curve(*args, method="batched", memory_mb=8)
    with pytest.raises(ValueError, match="'incremental' is invalid"):
        pruning_curve(*args, method="incremental")
