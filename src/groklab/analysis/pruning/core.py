"""Pruning orders, scopes and result types shared by the curve evaluators.

A pruning order ranks parameter entries by a saliency, and the least salient
entries are set to zero first. Pruning acts on one scope, either every
parameter ("global") or the parameters of one layer ("fc1" covers "fc1.weight"
and "fc1.bias"). An entry that is already zero counts as a pruned entry like
any other, so pruning n entries zeroes at most n previously non-zero ones.
Ties in saliency are broken by flat position, with parameters concatenated in
the dict's order, so every result is deterministic.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any

import numpy as np
import torch
from torch import Tensor

GLOBAL_SCOPE = "global"
CUSTOM_ORDER = "custom"


class PruningOrder(str, Enum):
    """Saliency that ranks entries for pruning, smallest first."""

    FISHER = "fisher"  # F_ii, the Fisher information diagonal
    MAGNITUDE = "magnitude"  # |theta_i|
    # F_ii theta_i^2, twice the second-order loss rise when theta_i is zeroed
    # (with F standing in for the Hessian).
    FISHER_THETA2 = "fisher_theta2"


@dataclass(frozen=True)
class PruningCurve:
    """Loss and accuracy after pruning each fraction of one scope.

    ``n_pruned[i]`` is round(fractions[i] x n_total) entries, halves rounded
    up, except for points added by refinement, whose fraction is exactly
    n_pruned / n_total. ``loss`` is the mean cross-entropy in nats and
    ``accuracy`` the fraction of correct argmax predictions, both on the
    evaluation inputs. ``method`` names the evaluator (see EvaluationMethod).
    """

    order: str
    scope: str
    fractions: np.ndarray
    n_pruned: np.ndarray
    n_total: int
    loss: np.ndarray
    accuracy: np.ndarray
    method: str = "reference"

    def to_dict(self) -> dict[str, Any]:
        """Return the curve as JSON-ready built-in types."""
        return {
            "order": self.order,
            "scope": self.scope,
            "fractions": self.fractions.tolist(),
            "n_pruned": self.n_pruned.tolist(),
            "n_total": self.n_total,
            "loss": self.loss.tolist(),
            "accuracy": self.accuracy.tolist(),
            "n_points": len(self.fractions),
            "evaluation_method": self.method,
        }


@dataclass(frozen=True)
class CompressionResult:
    """Compression factor of one scope under one pruning order.

    ``factor`` is n_total / n_kept, and inf when every entry can be pruned.
    ``threshold_accuracy`` is the accuracy that must be kept,
    (1 - tolerance) x ``base_accuracy``.
    """

    factor: float
    n_kept: int
    n_total: int
    tolerance: float
    base_accuracy: float
    threshold_accuracy: float
    order: str
    scope: str
    definition: str

    def to_dict(self) -> dict[str, Any]:
        """Return the fields as built-in types. An infinite factor stays math.inf."""
        return asdict(self)


@dataclass(frozen=True)
class LinearFit:
    """Ordinary least-squares line of loss against pruned fraction.

    ``max_fraction`` is the cut-off that selected the points (None for all).
    """

    slope: float
    intercept: float
    r2: float
    n_points: int
    max_fraction: float | None

    def to_dict(self) -> dict[str, Any]:
        """Return the fields as built-in types."""
        return asdict(self)


def saliency(
    params: dict[str, Tensor],
    fisher: dict[str, Tensor] | None,
    order: PruningOrder | str,
) -> dict[str, Tensor]:
    """Compute the saliency of every entry of ``params`` for ``order``.

    ``fisher`` is the Fisher diagonal with the names and shapes of ``params``.
    It is needed by the Fisher orders and ignored by MAGNITUDE.
    """
    order = _parse_order(order)
    if order is PruningOrder.MAGNITUDE:
        return {name: value.detach().abs() for name, value in params.items()}
    _check_fisher(params, fisher, order)
    if order is PruningOrder.FISHER:
        return {name: fisher[name].detach().clone() for name in params}
    if order is PruningOrder.FISHER_THETA2:
        return {
            name: fisher[name].detach() * value.detach().square()
            for name, value in params.items()
        }
    raise ValueError(f"order {order!r} is invalid: use one of {_allowed_orders()}")


def prune(
    params: dict[str, Tensor],
    saliency: dict[str, Tensor],
    n_prune: int,
    scope: str | None = None,
) -> dict[str, Tensor]:
    """Return copies of ``params`` with the ``n_prune`` least salient entries zeroed.

    Only entries in ``scope`` (None or "global" for all, else a layer name)
    are candidates. The input tensors are not modified.
    """
    vector = ScopeVector(params, saliency, scope)
    if not 0 <= n_prune <= vector.size:
        raise ValueError(
            f"n_prune {n_prune} is invalid: use 0 to {vector.size}, the number of "
            f"entries in scope {vector.scope!r}"
        )
    merged = vector.merged(vector.pruned_flat(n_prune))
    return {
        name: value if name in vector.names else value.detach().clone()
        for name, value in merged.items()
    }


def linear_fit(
    fractions: np.ndarray | list[float],
    losses: np.ndarray | list[float],
    *,
    max_fraction: float | None = None,
) -> LinearFit:
    """Fit loss = slope x fraction + intercept by least squares.

    Only points with fraction <= ``max_fraction`` are used (all when None).
    A linear rise marks the compressive regime of a pruning curve. r2 is
    1 - SS_res / SS_tot. A constant loss is fitted exactly with slope 0, so
    its r2 is 1.0; SS_tot = 0 with non-zero residuals would give 0.0.
    """
    x = np.asarray(fractions, dtype=np.float64)
    y = np.asarray(losses, dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(
            f"fractions {x.shape} and losses {y.shape} are invalid: "
            "pass two 1-D sequences of equal length"
        )
    if max_fraction is not None:
        keep = x <= max_fraction
        x, y = x[keep], y[keep]
    if len(x) < 3:
        raise ValueError(
            f"{len(x)} points remain at max_fraction {max_fraction}: "
            "a linear fit needs at least 3, so raise max_fraction"
        )
    if not np.all(np.isfinite(x)) or not np.all(np.isfinite(y)):
        raise ValueError("fractions or losses contain NaN or inf: pass finite values")
    slope, intercept, r2 = _least_squares(x, y)
    return LinearFit(slope, intercept, r2, len(x), max_fraction)


def _least_squares(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """Return slope, intercept and r2 of the least-squares line through (x, y)."""
    if np.all(y == y[0]):
        return 0.0, float(y[0]), 1.0
    x_centred = x - x.mean()
    sxx = float(np.sum(x_centred**2))
    if sxx == 0:
        raise ValueError(
            f"all fractions equal {x[0]}: a slope needs at least two distinct fractions"
        )
    slope = float(np.sum(x_centred * (y - y.mean())) / sxx)
    intercept = float(y.mean() - slope * x.mean())
    ss_res = float(np.sum((y - (slope * x + intercept)) ** 2))
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    if ss_tot == 0:
        return slope, intercept, 1.0 if ss_res == 0 else 0.0
    return slope, intercept, 1.0 - ss_res / ss_tot


class ScopeVector:
    """Entries of one scope flattened in named order, with their pruning order."""

    def __init__(
        self, params: dict[str, Tensor], saliency: dict[str, Tensor], scope: str | None
    ):
        self.params = params
        self.scope = GLOBAL_SCOPE if scope is None else scope
        self.names = _scope_names(params, self.scope)
        _check_saliency(params, saliency, self.names)
        self.values = torch.cat(
            [params[name].detach().reshape(-1) for name in self.names]
        )
        scores = torch.cat([saliency[name].detach().reshape(-1) for name in self.names])
        self.order = torch.argsort(scores, stable=True)  # n_total, least salient first
        self.size = len(self.values)

    def counts(self, fractions: np.ndarray) -> np.ndarray:
        """Convert pruned fractions to entry counts, round(f x size), halves up."""
        return np.floor(fractions * self.size + 0.5).astype(np.int64)

    def ranks(self) -> Tensor:
        """Return each entry's position in the pruning order (0 is pruned first)."""
        ranks = torch.empty_like(self.order)
        ranks[self.order] = torch.arange(self.size)
        return ranks

    def pruned_flat(self, count: int) -> Tensor:
        """Return a copy of the scope entries, ``count`` least salient zeroed."""
        flat = self.values.clone()
        flat[self.order[:count]] = 0
        return flat

    def merged(self, flat: Tensor) -> dict[str, Tensor]:
        """Return ``params`` with the scope parameters replaced by views of ``flat``."""
        merged = dict(self.params)
        pieces = torch.split(flat, [self.params[name].numel() for name in self.names])
        for name, piece in zip(self.names, pieces):
            merged[name] = piece.view(self.params[name].shape)
        return merged


def _scope_names(params: dict[str, Tensor], scope: str) -> list[str]:
    """Return the parameter names in ``scope``, in the dict's order."""
    if scope == GLOBAL_SCOPE:
        return list(params)
    names = [name for name in params if name.startswith(scope + ".")]
    if not names:
        layers = list(dict.fromkeys(name.rpartition(".")[0] for name in params))
        raise ValueError(
            f"scope {scope!r} matches no parameter: use {GLOBAL_SCOPE!r} or a "
            f"layer, one of {layers}"
        )
    return names


def _check_saliency(
    params: dict[str, Tensor], saliency: dict[str, Tensor], names: list[str]
) -> None:
    for name in names:
        if name not in saliency:
            raise ValueError(f"saliency lacks {name!r}: give one tensor per parameter")
        if saliency[name].shape != params[name].shape:
            raise ValueError(
                f"saliency[{name!r}] has shape {tuple(saliency[name].shape)}, "
                f"expected {tuple(params[name].shape)}"
            )
        if torch.isnan(saliency[name]).any():
            raise ValueError(f"saliency[{name!r}] contains NaN: pass a finite saliency")


def _check_fisher(
    params: dict[str, Tensor], fisher: dict[str, Tensor] | None, order: PruningOrder
) -> None:
    if fisher is None:
        raise ValueError(
            f"order {order.value!r} needs the Fisher diagonal: pass "
            "fisher=fisher_diagonal(...)"
        )
    for name, value in params.items():
        if name not in fisher or fisher[name].shape != value.shape:
            raise ValueError(
                f"fisher[{name!r}] is missing or not of shape {tuple(value.shape)}: "
                "compute it for the same parameters"
            )


def check_fractions(fractions: np.ndarray | list[float]) -> np.ndarray:
    values = np.asarray(fractions, dtype=np.float64)
    if values.ndim != 1 or len(values) == 0:
        raise ValueError(
            f"fractions of shape {values.shape} is invalid: pass a 1-D list"
        )
    if not np.all((values >= 0) & (values <= 1)):
        raise ValueError(f"fractions {values} is invalid: use values in [0, 1]")
    if np.any(np.diff(values) < 0):
        raise ValueError("fractions is not sorted: pass non-decreasing fractions")
    return values


def check_curve(curve: PruningCurve, vector: ScopeVector) -> None:
    if curve.scope != vector.scope or curve.n_total != vector.size:
        raise ValueError(
            f"curve covers scope {curve.scope!r} with {curve.n_total} entries, "
            f"expected {vector.scope!r} with {vector.size}: recompute the curve"
        )


def _parse_order(order: PruningOrder | str) -> PruningOrder:
    try:
        return PruningOrder(order)
    except ValueError:
        raise ValueError(
            f"order {order!r} is invalid: use one of {_allowed_orders()}"
        ) from None


def _allowed_orders() -> str:
    return ", ".join(repr(member.value) for member in PruningOrder)


def order_label(order: PruningOrder | str) -> str:
    return order.value if isinstance(order, PruningOrder) else str(order)


def resolve_order_label(
    order: PruningOrder | str | None, curve: PruningCurve | None
) -> str:
    if order is None:
        return curve.order if curve is not None else CUSTOM_ORDER
    label = order_label(order)
    if curve is not None and curve.order != label:
        raise ValueError(
            f"order {label!r} differs from the curve's order {curve.order!r}: "
            "omit order or recompute the curve"
        )
    return label
