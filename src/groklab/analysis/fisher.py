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

from groklab.models import ModAddMLP

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
    chunk_size: int = 32,
    method: FisherMethod | str = FisherMethod.AUTO,
) -> dict[str, Tensor]:
    """Compute the diagonal of the Fisher information, averaged over ``inputs``.

    ``inputs`` contains one model input per row (batch first). ``params``
    replaces some or all of the model's parameters by name without changing the
    module, so one module can be evaluated at many checkpoints. The result has
    one tensor per entry of ``model.named_parameters()``, in that order and with
    the same shapes and dtypes. Inputs are processed ``chunk_size`` at a time,
    and the JACOBIAN method keeps chunk_size x outputs x parameters numbers at
    once (2.5 GB in float32 for ModAddMLP(113, 512) at the default 32).
    """
    form = _parse(FisherForm, form, "form")
    method = _parse(FisherMethod, method, "method")
    if len(inputs) == 0:
        raise ValueError("inputs is empty: pass at least one input row")
    if chunk_size < 1:
        raise ValueError(f"chunk_size {chunk_size} is invalid: use a positive integer")
    values = _merged_params(model, params)
    chunk_fisher = _chunk_fisher_function(model, method)
    total = {name: torch.zeros_like(value) for name, value in values.items()}
    for chunk in torch.split(inputs, chunk_size):
        with torch.no_grad():
            for name, value in chunk_fisher(model, values, chunk, form).items():
                total[name] += value
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
        name: torch.tensordot(weights, jacobian.square_(), dims=2)
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
