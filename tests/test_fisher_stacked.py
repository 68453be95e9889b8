"""Fisher diagonals of stacked parameter sets against the per-sample loop."""

import pytest
import torch

from groklab.analysis.fisher import (
    fisher_diagonal,
    fisher_diagonal_reference,
    fisher_diagonals,
)
from groklab.models import IsingCNN, ModAddMLP


def stacked_sets(model: torch.nn.Module, k: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(9)
    return {
        name: torch.stack([value.detach() * (1 + 0.5 * i) + 0.1 * torch.randn_like(value)
                           for i in range(k)])
        for name, value in model.named_parameters()
    }


def cases() -> list:
    torch.manual_seed(2)
    modadd = ModAddMLP(7, 16).double()
    pairs = torch.randint(0, 7, (12, 2), generator=torch.Generator().manual_seed(3))
    torch.manual_seed(4)
    ising = IsingCNN(8, 10).double()
    generator = torch.Generator().manual_seed(6)
    spins = torch.randint(0, 2, (6, 1, 8, 8), generator=generator).double() * 2 - 1
    return [(modadd, pairs), (ising, spins)]


@pytest.mark.parametrize("form", ["regression", "classification"])
def test_stacked_matches_per_sample_loop(form):
    for model, inputs in cases():
        stacked = stacked_sets(model, 3)
        # 16 MiB with 5 inputs per chunk splits both sets and inputs.
        actual = fisher_diagonals(model, inputs, form, stacked, chunk_size=5, memory_mb=16)
        for index in range(3):
            params = {name: value[index] for name, value in stacked.items()}
            expected = fisher_diagonal_reference(model, inputs, form, params=params)
            for name, value in expected.items():
                error = (actual[name][index] - value).abs().max().item()
                assert error <= 1e-10 * value.abs().max().item(), (name, index)


def test_single_equals_stacked():
    model, pairs = cases()[0]
    stacked = stacked_sets(model, 2)
    both = fisher_diagonals(model, pairs, "classification", stacked)
    one = fisher_diagonal(
        model, pairs, "classification", params={n: v[1] for n, v in stacked.items()}
    )
    for name in one:
        assert torch.allclose(both[name][1], one[name], rtol=1e-12, atol=0), name


def test_stacked_bad_shapes_rejected():
    model, pairs = cases()[0]
    with pytest.raises(ValueError, match="expected \\(K, 16\\)"):
        fisher_diagonals(model, pairs, "regression", {"fc1.bias": torch.zeros(16)})
    with pytest.raises(ValueError, match="leading dimensions \\[1, 2\\]"):
        fisher_diagonals(
            model, pairs, "regression",
            {"fc1.bias": torch.zeros(1, 16), "fc2.bias": torch.zeros(2, 7)},
        )
