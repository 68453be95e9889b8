"""Cached IsingCNN evaluator against the one-mask reference."""

import numpy as np
import pytest
import torch

from groklab.analysis.pruning import pruning_curve, pruning_curve_reference, saliency
from groklab.analysis.pruning.cnn import CachedCNNEvaluator, applies
from groklab.analysis.pruning.core import ScopeVector
from groklab.models import IsingCNN

N_INPUTS = 300


def cnn_case(dtype: torch.dtype) -> tuple:
    torch.manual_seed(7)
    model = IsingCNN(8, 24).to(dtype)
    generator = torch.Generator().manual_seed(8)
    spins = torch.randint(0, 2, (N_INPUTS, 1, 8, 8), generator=generator)
    spins = spins.to(dtype) * 2 - 1
    targets = torch.randint(0, 2, (N_INPUTS,), generator=generator)
    params = {name: value.detach().clone() for name, value in model.named_parameters()}
    # Random saliency spreads the conv entries over the whole order, so many
    # curve points change the conv masks.
    scores = {name: torch.rand(value.shape, generator=generator)
              for name, value in params.items()}
    return model, params, scores, spins, targets


def conv_mask_changes(curve, scores, params) -> int:
    """Count curve points whose pruned conv entries differ from the previous point."""
    flat = torch.cat([scores[name].reshape(-1) for name in params])
    is_conv = torch.cat([
        torch.full((value.numel(),), name.startswith("conv"))
        for name, value in params.items()
    ])
    pruned_conv = torch.cumsum(is_conv[torch.argsort(flat, stable=True)].long(), 0)
    counts = [0 if n == 0 else int(pruned_conv[n - 1]) for n in curve.n_pruned]
    return int(np.count_nonzero(np.diff(counts)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("scope", [None, "conv1", "conv2", "fc1"])
def test_cached_matches_reference(dtype, scope):
    model, params, scores, spins, targets = cnn_case(dtype)
    args = (model, params, scores, spins, targets)
    fast = pruning_curve(*args, scope=scope, n_points=41)
    assert fast.method == "cached"
    reference = pruning_curve_reference(*args, fast.fractions, scope=scope)
    assert np.array_equal(fast.n_pruned, reference.n_pruned)
    rtol = 1e-5 if dtype == torch.float32 else 1e-12
    np.testing.assert_allclose(fast.loss, reference.loss, rtol=rtol)
    gap = np.max(np.abs(fast.accuracy - reference.accuracy)) * N_INPUTS
    assert gap <= (1 if dtype == torch.float32 else 0)


def test_cached_covers_conv_mask_changes():
    model, params, scores, spins, targets = cnn_case(torch.float64)
    fast = pruning_curve(model, params, scores, spins, targets, n_points=61)
    assert conv_mask_changes(fast, scores, params) >= 10


def test_cached_small_budget_and_batches():
    # 16 MiB and 64-input batches force several chunks of counts and inputs.
    model, params, scores, spins, targets = cnn_case(torch.float64)
    args = (model, params, scores, spins, targets)
    fractions = np.linspace(0, 1, 37)
    fast = pruning_curve(*args, fractions, method="cached", memory_mb=16, batch_size=64)
    reference = pruning_curve_reference(*args, fractions)
    np.testing.assert_allclose(fast.loss, reference.loss, rtol=1e-12)
    assert np.array_equal(fast.accuracy, reference.accuracy)


def test_cached_any_count_order():
    model, params, scores, spins, targets = cnn_case(torch.float64)
    vector = ScopeVector(params, scores, None)
    evaluator = CachedCNNEvaluator(model, vector, spins, targets, 4096, 64)
    counts = np.array([500, 3, vector.size, 0, 250, 3])
    loss, accuracy = evaluator.evaluate(counts)
    visit = np.argsort(counts, kind="stable")
    reference = pruning_curve_reference(
        model, params, scores, spins, targets, counts[visit] / vector.size
    )
    assert np.array_equal(reference.n_pruned, counts[visit])
    np.testing.assert_allclose(loss[visit], reference.loss, rtol=1e-12)
    assert np.array_equal(accuracy[visit], reference.accuracy)


def test_cached_applies_only_to_standard_cnn():
    model, params, _, spins, _ = cnn_case(torch.float32)
    assert applies(model, params, spins)
    assert not applies(model, params, spins[:, :, :4, :4])
    assert not applies(model, params, spins.long())
    assert not applies(model, {"conv1.weight": params["conv1.weight"]}, spins)
    with pytest.raises(ValueError, match="'cached' is invalid"):
        pruning_curve(model, params, params, spins.long(), torch.zeros(N_INPUTS).long(),
                      method="cached")
