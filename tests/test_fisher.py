"""Fisher diagonals against a plain per-input, per-output autograd loop."""

import math

import pytest
import torch
from torch import nn

from groklab.analysis.fisher import (
    FisherForm,
    FisherMethod,
    fisher_diagonal,
    fisher_quadratic_form,
    flatten,
)
from groklab.models import IsingCNN, ModAddMLP

RELATIVE_TOLERANCE = 1e-10  # float64 throughout, so roundoff is far below this


def loop_fisher(model: nn.Module, inputs: torch.Tensor, form: str) -> dict:
    """Return the Fisher diagonal from one autograd.grad call per input and output."""
    params = dict(model.named_parameters())
    total = {name: torch.zeros_like(value) for name, value in params.items()}
    for single in inputs:
        logits = model(single.unsqueeze(0)).squeeze(0)
        log_probs = torch.log_softmax(logits, dim=-1)
        for k in range(len(logits)):
            if form == "regression":
                target, weight = logits[k], 1.0
            else:
                target, weight = log_probs[k], log_probs[k].exp().item()
            grads = torch.autograd.grad(
                target, list(params.values()), retain_graph=True
            )
            for name, grad in zip(params, grads):
                total[name] += weight * grad.square()
    return {name: value / len(inputs) for name, value in total.items()}


def assert_close(actual: dict, expected: dict) -> None:
    assert list(actual) == list(expected)
    for name in expected:
        assert actual[name].shape == expected[name].shape, name
        scale = expected[name].abs().max().item()
        error = (actual[name] - expected[name]).abs().max().item()
        assert error <= RELATIVE_TOLERANCE * scale, (name, error, scale)


def small_mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 4)).double()


def small_convnet() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(
        nn.Conv2d(1, 2, kernel_size=3),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(2 * 3 * 3, 3),
    ).double()


def spins(n: int, lattice: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    bits = torch.randint(0, 2, (n, 1, lattice, lattice), generator=generator)
    return bits.double() * 2 - 1


def modadd_case() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(2)
    model = ModAddMLP(7, 16).double()
    pairs = torch.randint(0, 7, (12, 2), generator=torch.Generator().manual_seed(3))
    return model, pairs


def cases() -> list[tuple[str, nn.Module, torch.Tensor]]:
    torch.manual_seed(4)
    ising = IsingCNN(8).double()
    return [
        ("mlp", small_mlp(), torch.randn(6, 3, dtype=torch.float64)),
        ("convnet", small_convnet(), spins(5, 5, seed=5)),
        ("modadd", *modadd_case()),
        ("ising", ising, spins(6, 8, seed=6)),
    ]


@pytest.mark.parametrize("form", ["regression", "classification"])
def test_fisher_matches_loop(form):
    for label, model, inputs in cases():
        expected = loop_fisher(model, inputs, form)
        actual = fisher_diagonal(model, inputs, form, method="jacobian", chunk_size=4)
        assert_close(actual, expected)
        assert actual["0.weight" if label in ("mlp", "convnet") else "fc1.weight"].any()


@pytest.mark.parametrize("form", list(FisherForm))
def test_closed_form_matches_loop(form):
    model, pairs = modadd_case()
    expected = loop_fisher(model, pairs, form.value)
    actual = fisher_diagonal(model, pairs, form, method=FisherMethod.CLOSED_FORM)
    assert_close(actual, expected)
    auto = fisher_diagonal(model, pairs, form, chunk_size=5)
    assert_close(auto, expected)


def test_closed_form_at_relu_kink():
    # A zeroed hidden unit has pre-activation exactly 0, where autograd takes
    # the ReLU derivative as 0; the closed form must agree.
    model, pairs = modadd_case()
    with torch.no_grad():
        model.fc1.weight[0] = 0.0
        model.fc1.bias[0] = 0.0
    for form in ("regression", "classification"):
        expected = loop_fisher(model, pairs, form)
        assert_close(fisher_diagonal(model, pairs, form), expected)
        assert not expected["fc1.bias"][0]


@pytest.mark.parametrize("method", ["jacobian", "closed_form"])
def test_chunking_invariance(method):
    model, pairs = modadd_case()
    one = fisher_diagonal(model, pairs, "classification", chunk_size=1, method=method)
    whole = fisher_diagonal(
        model, pairs, "classification", chunk_size=100, method=method
    )
    assert_close(one, whole)


def test_regression_output_bias_is_one():
    # d f_k / d b2_k = 1 and no other output depends on b2_k: F(b2) = 1 exactly.
    model, pairs = modadd_case()
    for method in ("jacobian", "closed_form"):
        fisher = fisher_diagonal(model, pairs, "regression", method=method)
        assert torch.equal(fisher["fc2.bias"], torch.ones(7, dtype=torch.float64))


def test_params_override():
    model, pairs = modadd_case()
    torch.manual_seed(7)
    other = ModAddMLP(7, 16).double()
    override = {name: value.detach() for name, value in other.named_parameters()}
    before = {name: value.detach().clone() for name, value in model.named_parameters()}
    for method in ("jacobian", "closed_form"):
        actual = fisher_diagonal(
            model, pairs, "classification", params=override, method=method
        )
        assert_close(actual, loop_fisher(other, pairs, "classification"))
    for name, value in model.named_parameters():
        assert torch.equal(value, before[name]), name


def test_partial_params_override():
    model = small_mlp()
    inputs = torch.randn(4, 3, dtype=torch.float64)
    new_bias = torch.full((4,), 0.5, dtype=torch.float64)
    override = {"2.bias": new_bias}
    actual = fisher_diagonal(model, inputs, "classification", params=override)
    with torch.no_grad():
        model[2].bias.copy_(new_bias)
    assert_close(actual, loop_fisher(model, inputs, "classification"))


def kl_divergence(model, params, inputs) -> float:
    """Return the mean over inputs of KL(p_model || p_params)."""
    with torch.no_grad():
        log_p = torch.log_softmax(model(inputs), dim=-1)
        shifted_logits = torch.func.functional_call(model, params, (inputs,))
        log_q = torch.log_softmax(shifted_logits, dim=-1)
        return (log_p.exp() * (log_p - log_q)).sum(-1).mean().item()


def test_quadratic_form_matches_kl():
    # With d = e_i, 2 KL(p_theta || p_{theta + eps d}) = eps^2 F_ii + O(eps^3).
    # Summing the +eps and -eps shifts cancels the eps^3 term. What remains is
    # O(eps^2) truncation plus ~1e-16 / eps^2 roundoff, about 1e-8 relative at
    # eps = 1e-3 here, so the tolerance is 1e-6 relative.
    model, pairs = modadd_case()
    fisher = fisher_diagonal(model, pairs, "classification")
    base = {name: value.detach() for name, value in model.named_parameters()}
    eps = 1e-3
    for name, value in fisher.items():
        index = int(value.argmax())  # the largest entry of each tensor, never zero
        direction = {key: torch.zeros_like(tensor) for key, tensor in base.items()}
        direction[name].view(-1)[index] = 1.0
        two_kl = 0.0
        for sign in (1.0, -1.0):
            shifted = {key: base[key] + sign * eps * direction[key] for key in base}
            two_kl += kl_divergence(model, shifted, pairs)  # mean of two, times 2
        expected = eps**2 * fisher_quadratic_form(fisher, direction)
        assert expected > 0, name
        assert math.isclose(two_kl, expected, rel_tol=1e-6), (name, two_kl, expected)


def test_quadratic_form_and_flatten_by_hand():
    fisher = {"a": torch.tensor([1.0, 2.0]), "b": torch.tensor([[3.0]])}
    direction = {"b": torch.tensor([[2.0]]), "a": torch.tensor([1.0, -1.0])}
    assert fisher_quadratic_form(fisher, direction) == 1.0 + 2.0 + 12.0
    assert torch.equal(flatten(fisher), torch.tensor([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="lacks parameters"):
        fisher_quadratic_form(fisher, {"a": direction["a"]})


def test_bad_form_rejected():
    model = small_mlp()
    with pytest.raises(ValueError, match="form 'hessian' is invalid.*'regression'"):
        fisher_diagonal(model, torch.randn(2, 3, dtype=torch.float64), "hessian")


def test_bad_method_rejected():
    model = small_mlp()
    inputs = torch.randn(2, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="method 'fast' is invalid"):
        fisher_diagonal(model, inputs, "regression", method="fast")
    with pytest.raises(ValueError, match="ModAddMLP only"):
        fisher_diagonal(model, inputs, "regression", method="closed_form")


def test_empty_inputs_rejected():
    model = small_mlp()
    with pytest.raises(ValueError, match="inputs is empty"):
        fisher_diagonal(model, torch.zeros(0, 3, dtype=torch.float64), "regression")


def test_bad_chunk_and_params_rejected():
    model = small_mlp()
    inputs = torch.randn(2, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="chunk_size 0 is invalid"):
        fisher_diagonal(model, inputs, "regression", chunk_size=0)
    with pytest.raises(ValueError, match="'9.bias'"):
        fisher_diagonal(model, inputs, "regression", params={"9.bias": torch.zeros(4)})
    with pytest.raises(ValueError, match=r"shape \(3,\), expected \(4,\)"):
        fisher_diagonal(model, inputs, "regression", params={"2.bias": torch.zeros(3)})
