"""Diagonal of the Fisher information of a network's parameters.

Two forms are offered. The regression (Gauss-Newton) form treats the logits as
the outputs of a regression with unit-variance Gaussian noise. The
classification form is the Fisher information of the softmax distribution over
classes, with labels drawn from the model itself rather than the data.

Both are means over the inputs, so they do not grow with the number of inputs.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from typing import TypeVar

import torch
from torch import Tensor, nn
from torch.func import functional_call, jacrev, vmap

from groklab.analysis.budget import activation_numel, budget_bytes
from groklab.models import ModAddMLP

DEFAULT_MEMORY_MB = 1024

EnumT = TypeVar("EnumT", bound=Enum)


class FisherForm(str, Enum):
    """Fisher information whose diagonal is computed."""

    # F_ii = mean_x sum_k (d f_k(x) / d theta_i)^2 with f the logits.
    REGRESSION = "regression"
    # F_ii = mean_x sum_y p(y|x) (d log p(y|x) / d theta_i)^2, p = softmax(f).
    CLASSIFICATION = "classification"


class FisherMethod(str, Enum):
    """Algorithm for the diagonal. All give the same numbers up to roundoff."""

    # CLOSED_FORM for an exact ModAddMLP, JACOBIAN for every other model.
    AUTO = "auto"
    # Per-input Jacobians with torch.func, for any model.
    JACOBIAN = "jacobian"
    # Hand-derived gradients of ModAddMLP. They cost O(inputs x hidden x P)
    # operations instead of O(inputs x P x parameters) for JACOBIAN.
    CLOSED_FORM = "closed_form"


def fisher_diagonal(
    model: nn.Module,
    inputs: Tensor,
    form: FisherForm | str,
    *,
    params: dict[str, Tensor] | None = None,
    chunk_size: int | None = None,
    method: FisherMethod | str = FisherMethod.AUTO,
    memory_mb: int = DEFAULT_MEMORY_MB,
) -> dict[str, Tensor]:
    """Compute the diagonal of the Fisher information, averaged over ``inputs``.

    ``inputs`` contains one model input per row (batch first). ``params``
    replaces some or all of the model's parameters by name without changing the
    module, so one module can be evaluated at many checkpoints. The result has
    one tensor per entry of ``model.named_parameters()``, in that order and with
    the same shapes and dtypes. Inputs are processed ``chunk_size`` at a time,
    or in chunks sized to ``memory_mb`` when it is None (see fisher_diagonals).
    """
    values = _merged_params(model, params)
    stacked = {name: value.unsqueeze(0) for name, value in values.items()}
    diagonals = fisher_diagonals(
        model,
        inputs,
        form,
        stacked,
        chunk_size=chunk_size,
        method=method,
        memory_mb=memory_mb,
    )
    return {name: value[0] for name, value in diagonals.items()}


def fisher_diagonals(
    model: nn.Module,
    inputs: Tensor,
    form: FisherForm | str,
    stacked_params: dict[str, Tensor],
    *,
    chunk_size: int | None = None,
    method: FisherMethod | str = FisherMethod.AUTO,
    memory_mb: int = DEFAULT_MEMORY_MB,
) -> dict[str, Tensor]:
    """Compute K Fisher diagonals at once, one per stacked parameter set.

    ``stacked_params`` maps parameter names to tensors with a leading
    dimension K (checkpoints or ensemble members). Parameters it omits keep
    the module's values. The result maps every parameter name to a (K, *shape)
    tensor. Both methods run under ``vmap`` over the K sets. Chunks of
    checkpoints and inputs are sized so that their estimated temporaries fit
    ``memory_mb``. A given ``chunk_size`` fixes the inputs per chunk instead.
    JACOBIAN keeps outputs x parameters numbers per input and checkpoint.
    """
    form = _parse(FisherForm, form, "form")
    method = _parse(FisherMethod, method, "method")
    if len(inputs) == 0:
        raise ValueError("inputs is empty: pass at least one input row")
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size {chunk_size} is invalid: use a positive integer")
    n_sets = _check_stacked(model, stacked_params)
    chunk_fisher = _chunk_fisher_function(model, method)
    fixed = {
        name: value.detach()
        for name, value in model.named_parameters()
        if name not in stacked_params
    }
    sets_per_chunk, inputs_per_chunk = _chunk_sizes(
        model, inputs, stacked_params, chunk_fisher, form, memory_mb
    )
    inputs_per_chunk = chunk_size or inputs_per_chunk

    def one_set(values: dict[str, Tensor], chunk: Tensor) -> dict[str, Tensor]:
        return chunk_fisher(model, {**fixed, **values}, chunk, form)

    batched = vmap(one_set, in_dims=(0, None))
    names = [name for name, _ in model.named_parameters()]
    totals: dict[str, list[Tensor]] = {name: [] for name in names}
    for start in range(0, n_sets, sets_per_chunk):
        values = {
            name: value.detach()[start : start + sets_per_chunk]
            for name, value in stacked_params.items()
        }
        total = None
        for chunk in torch.split(inputs, inputs_per_chunk):
            with torch.no_grad():
                part = batched(values, chunk)
            total = part if total is None else {n: total[n] + part[n] for n in names}
        for name in names:
            totals[name].append(total[name] / len(inputs))
    return {name: torch.cat(totals[name]) for name in names}


def fisher_diagonal_reference(
    model: nn.Module,
    inputs: Tensor,
    form: FisherForm | str,
    *,
    params: dict[str, Tensor] | None = None,
) -> dict[str, Tensor]:
    """Compute the Fisher diagonal with one autograd call per input and output.

    This is the plain per-sample loop that the vectorised methods are checked
    and timed against. It returns what ``fisher_diagonal`` returns.
    """
    form = _parse(FisherForm, form, "form")
    if len(inputs) == 0:
        raise ValueError("inputs is empty: pass at least one input row")
    values = {
        name: value.detach().clone().requires_grad_(True)
        for name, value in _merged_params(model, params).items()
    }
    total = {name: torch.zeros_like(value) for name, value in values.items()}
    for single in inputs:
        logits = functional_call(model, values, (single.unsqueeze(0),)).squeeze(0)
        log_probs = torch.log_softmax(logits, dim=-1)
        for k in range(len(logits)):
            if form is FisherForm.REGRESSION:
                output, weight = logits[k], 1.0
            else:
                output, weight = log_probs[k], log_probs[k].exp().item()
            grads = torch.autograd.grad(
                output, list(values.values()), retain_graph=True, allow_unused=True
            )
            for name, grad in zip(values, grads):
                if grad is not None:
                    total[name] += weight * grad.square()
    return {name: value / len(inputs) for name, value in total.items()}


def fisher_quadratic_form(
    fisher: dict[str, Tensor], direction: dict[str, Tensor]
) -> float:
    """Return sum_i F_ii d_i^2 over the names of ``fisher``.

    ``direction`` must contain every name of ``fisher`` with the same shape.
    """
    missing = sorted(set(fisher) - set(direction))
    if missing:
        raise ValueError(
            f"direction lacks parameters {missing}: give one per Fisher entry"
        )
    total = sum((fisher[name] * direction[name].square()).sum() for name in fisher)
    return float(total)


def flatten(tensors: dict[str, Tensor]) -> Tensor:
    """Concatenate the tensors, flattened, in the dict's order into one vector."""
    return torch.cat([tensor.reshape(-1) for tensor in tensors.values()])


def _parse(enum: type[EnumT], value: EnumT | str, what: str) -> EnumT:
    try:
        return enum(value)
    except ValueError:
        allowed = ", ".join(repr(member.value) for member in enum)
        raise ValueError(f"{what} {value!r} is invalid: use one of {allowed}") from None


def _merged_params(
    model: nn.Module, params: dict[str, Tensor] | None
) -> dict[str, Tensor]:
    """Return the model's parameters, detached, with ``params`` substituted."""
    values = {name: value.detach() for name, value in model.named_parameters()}
    for name, value in (params or {}).items():
        if name not in values:
            raise ValueError(
                f"params has {name!r}, which is not a parameter of "
                f"{type(model).__name__}: use names from model.named_parameters()"
            )
        if value.shape != values[name].shape:
            raise ValueError(
                f"params[{name!r}] has shape {tuple(value.shape)}, expected "
                f"{tuple(values[name].shape)}"
            )
        values[name] = value.detach()
    return values


def _check_stacked(model: nn.Module, stacked: dict[str, Tensor]) -> int:
    """Return K, the shared leading dimension of ``stacked``, after checking shapes."""
    shapes = {name: tuple(value.shape) for name, value in model.named_parameters()}
    if not stacked:
        raise ValueError("stacked_params is empty: pass at least one stacked parameter")
    sizes = set()
    for name, value in stacked.items():
        if name not in shapes:
            raise ValueError(
                f"stacked_params has {name!r}, which is not a parameter of "
                f"{type(model).__name__}: use names from model.named_parameters()"
            )
        if value.ndim < 1 or tuple(value.shape[1:]) != shapes[name]:
            raise ValueError(
                f"stacked_params[{name!r}] has shape {tuple(value.shape)}, expected "
                f"(K, {', '.join(map(str, shapes[name]))})"
            )
        sizes.add(value.shape[0])
    if len(sizes) != 1 or 0 in sizes:
        raise ValueError(
            f"stacked_params have leading dimensions {sorted(sizes)}: stack the "
            "same K >= 1 parameter sets for every name"
        )
    return sizes.pop()


def _chunk_sizes(
    model: nn.Module,
    inputs: Tensor,
    stacked: dict[str, Tensor],
    chunk_fisher: Callable,
    form: FisherForm,
    memory_mb: int,
) -> tuple[int, int]:
    """Return (parameter sets, inputs) per chunk whose temporaries fit the budget.

    The estimate per (set, input) pair is three copies of what the method
    keeps per input: outputs x (parameters + activations) numbers for
    JACOBIAN, and hidden x (P + 4) for the ModAddMLP closed form. Each set
    also needs two copies of the parameters.
    """
    budget = budget_bytes(memory_mb)
    first = {name: value[0] for name, value in stacked.items()}
    values = {**dict(model.named_parameters()), **first}
    itemsize = next(iter(stacked.values())).element_size()
    n_params = sum(value.numel() for value in values.values())
    if chunk_fisher is _closed_form_chunk:
        hidden, p = values["fc1.bias"].numel(), model.p
        per_pair = 3 * itemsize * hidden * ((p if form is FisherForm.CLASSIFICATION else 0) + 4)
    else:
        activations, outputs = activation_numel(model, values, inputs[:1])
        per_pair = 3 * itemsize * outputs * (n_params + activations)
    per_set = 2 * itemsize * n_params
    n_inputs = int(max(1, min(len(inputs), (budget - per_set) // per_pair)))
    n_sets = int(max(1, budget // (per_set + n_inputs * per_pair)))
    return n_sets, n_inputs


ChunkFisher = Callable[
    [nn.Module, dict[str, Tensor], Tensor, FisherForm], dict[str, Tensor]
]


def _chunk_fisher_function(model: nn.Module, method: FisherMethod) -> ChunkFisher:
    """Dispatch ``method`` to a function that sums the Fisher over one chunk."""
    closed_form_applies = type(model) is ModAddMLP
    if method is FisherMethod.AUTO:
        return _closed_form_chunk if closed_form_applies else _jacobian_chunk
    if method is FisherMethod.JACOBIAN:
        return _jacobian_chunk
    if method is FisherMethod.CLOSED_FORM:
        if not closed_form_applies:
            raise ValueError(
                f"method 'closed_form' is invalid for {type(model).__name__}: it is "
                "derived for ModAddMLP only, so use 'jacobian' or 'auto'"
            )
        return _closed_form_chunk
    allowed = ", ".join(repr(member.value) for member in FisherMethod)
    raise ValueError(f"method {method!r} is invalid: use one of {allowed}")


def _jacobian_chunk(
    model: nn.Module, params: dict[str, Tensor], inputs: Tensor, form: FisherForm
) -> dict[str, Tensor]:
    """Sum the Fisher diagonal over ``inputs`` from per-input Jacobians.

    Both forms are sum_k w_k (d g_k / d theta_i)^2 summed over the inputs: the
    regression form has g = logits and w = 1, the classification form has
    g = log-softmax and w = softmax (treated as a constant weight).
    """

    def outputs(values: dict[str, Tensor], single: Tensor) -> tuple[Tensor, Tensor]:
        logits = functional_call(model, values, (single.unsqueeze(0),)).squeeze(0)
        if form is FisherForm.REGRESSION:
            return logits, torch.ones_like(logits)
        log_probs = torch.log_softmax(logits, dim=-1)
        return log_probs, log_probs.exp()

    jacobians, weights = vmap(jacrev(outputs, has_aux=True), in_dims=(None, 0))(
        params, inputs
    )  # jacobians[name]: chunk outputs *param_shape; weights: chunk outputs
    return {
        name: torch.tensordot(weights, jacobian.square(), dims=2)
        for name, jacobian in jacobians.items()
    }


def _closed_form_chunk(
    model: nn.Module, params: dict[str, Tensor], pairs: Tensor, form: FisherForm
) -> dict[str, Tensor]:
    """Sum the Fisher diagonal of ModAddMLP over ``pairs`` from exact gradients.

    With h = relu(z) the hidden layer and f = W2 h + b2 the logits, the Fisher
    of either form is J^T M J with M = I (regression) or diag(p) - p p^T
    (classification). Hence F(b2)_k = M_kk, F(W2)_kj = M_kk h_j^2 and, for the
    hidden unit j, s_j = [z_j > 0] (W2^T M W2)_jj. The input pair (a, b) uses
    columns a and P + b of W1, so s is added to those two columns and to b1.
    """
    w1, b1 = params["fc1.weight"], params["fc1.bias"]
    w2, b2 = params["fc2.weight"], params["fc2.bias"]  # P hidden, P
    p = model.p
    pre = w1[:, pairs[:, 0]].T + w1[:, p + pairs[:, 1]].T + b1  # chunk hidden
    hidden = torch.relu(pre)
    if form is FisherForm.REGRESSION:
        m_diag = torch.ones(len(pairs), len(b2), dtype=b2.dtype)  # chunk P
        hidden_norm = w2.square().sum(0).expand(len(pairs), -1)  # chunk hidden
    else:
        probs = torch.softmax(hidden @ w2.T + b2, dim=-1)  # chunk P
        m_diag = probs * (1 - probs)
        # (W2^T M W2)_jj is the variance of W2[:, j] under probs. The centred
        # form avoids the cancellation in E[w^2] - E[w]^2.
        centred = w2 - (probs @ w2).unsqueeze(1)  # chunk P hidden
        hidden_norm = torch.einsum("nk,nkj->nj", probs, centred.square())
    unit = (pre > 0).to(hidden.dtype) * hidden_norm  # chunk hidden
    fc1_weight = torch.zeros_like(w1)
    fc1_weight.index_add_(1, pairs[:, 0], unit.T)
    fc1_weight.index_add_(1, p + pairs[:, 1], unit.T)
    return {
        "fc1.weight": fc1_weight,
        "fc1.bias": unit.sum(0),
        "fc2.weight": m_diag.T @ hidden.square(),
        "fc2.bias": m_diag.sum(0),
    }
