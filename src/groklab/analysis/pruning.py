"""Saliency-ordered pruning: pruning curves, compression factors, linear fits.

A pruning order ranks parameter entries by a saliency, and the least salient
entries are set to zero first. Pruning acts on one scope, either every
parameter ("global") or the parameters of one layer ("fc1" covers "fc1.weight"
and "fc1.bias"). An entry that is already zero counts as a pruned entry like
any other, so pruning n entries zeroes at most n previously non-zero ones.
Ties in saliency are broken by flat position, with parameters concatenated in
the dict's order, so every result is deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call

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
    up. ``loss`` is the mean cross-entropy in nats and ``accuracy`` the
    fraction of correct argmax predictions, both on the evaluation inputs.
    """

    order: str
    scope: str
    fractions: np.ndarray
    n_pruned: np.ndarray
    n_total: int
    loss: np.ndarray
    accuracy: np.ndarray

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
    vector = _ScopeVector(params, saliency, scope)
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


def pruning_curve(
    model: nn.Module,
    params: dict[str, Tensor],
    saliency: dict[str, Tensor],
    inputs: Tensor,
    targets: Tensor,
    fractions: np.ndarray | list[float],
    *,
    scope: str | None = None,
    batch_size: int = 4096,
    order: PruningOrder | str = CUSTOM_ORDER,
) -> PruningCurve:
    """Evaluate loss and accuracy while pruning ``fractions`` of the scope.

    ``fractions`` must be non-decreasing within [0, 1], because entries are
    sorted once and pruned incrementally. ``targets`` contains class indices.
    ``order`` only labels the curve, while ``saliency`` decides what is pruned.
    """
    vector = _ScopeVector(params, saliency, scope)
    fractions = _check_fractions(fractions)
    counts = np.floor(fractions * vector.size + 0.5).astype(np.int64)
    flat = vector.values.clone()  # n_total
    losses, accuracies = [], []
    done = 0
    for count in counts:
        flat[vector.order[done:count]] = 0
        done = count
        loss, accuracy = _evaluate(
            model, vector.merged(flat), inputs, targets, batch_size
        )
        losses.append(loss)
        accuracies.append(accuracy)
    return PruningCurve(
        order=_order_label(order),
        scope=vector.scope,
        fractions=fractions,
        n_pruned=counts,
        n_total=vector.size,
        loss=np.array(losses),
        accuracy=np.array(accuracies),
    )


def default_fractions(n: int = 101, *, smallest_kept: float = 1e-4) -> np.ndarray:
    """Return up to ``n`` sorted pruned fractions from 0 to 1, dense near 1.

    Half the points form a linear grid on [0, 1]. The others are 1 - k for a
    geometric grid of kept fractions k from 0.5 down to ``smallest_kept``,
    because the loss changes fastest when few entries remain. Points closer
    than 1e-12 are merged, which can make the result shorter than ``n``.
    """
    if n < 4:
        raise ValueError(f"n {n} is invalid: use at least 4 fractions")
    if not 0 < smallest_kept < 0.5:
        raise ValueError(
            f"smallest_kept {smallest_kept} is invalid: use a value in (0, 0.5)"
        )
    n_linear = (n + 1) // 2
    linear = np.linspace(0.0, 1.0, n_linear)
    near_one = 1.0 - np.geomspace(0.5, smallest_kept, n - n_linear)
    return np.unique(np.round(np.concatenate([linear, near_one]), 12))


def compression_factor(
    model: nn.Module,
    params: dict[str, Tensor],
    saliency: dict[str, Tensor],
    inputs: Tensor,
    targets: Tensor,
    *,
    tolerance: float = 0.01,
    scope: str | None = None,
    curve: PruningCurve | None = None,
    order: PruningOrder | str | None = None,
    batch_size: int = 4096,
) -> CompressionResult:
    """Find the fewest kept entries whose accuracy stays within ``tolerance``.

    An entry count passes when accuracy >= (1 - tolerance) x unpruned
    accuracy. The largest pruned count whose grid points on ``curve`` all pass
    is refined by bisection up to the next failing grid point. ``curve`` must
    come from the same model, params, saliency, inputs and scope; without it
    one is computed on ``default_fractions()``. ``order`` labels the result
    and defaults to the curve's label.
    """
    if not 0 <= tolerance < 1:
        raise ValueError(f"tolerance {tolerance} is invalid: use a value in [0, 1)")
    vector = _ScopeVector(params, saliency, scope)
    label = _resolve_order_label(order, curve)
    if curve is None:
        curve = pruning_curve(
            model,
            params,
            saliency,
            inputs,
            targets,
            default_fractions(),
            scope=scope,
            batch_size=batch_size,
            order=label,
        )
    _check_curve(curve, vector)
    _, base_accuracy = _evaluate(model, params, inputs, targets, batch_size)
    threshold = (1 - tolerance) * base_accuracy

    def passes(count: int) -> bool:
        pruned = vector.merged(vector.pruned_flat(count))
        _, accuracy = _evaluate(model, pruned, inputs, targets, batch_size)
        return accuracy >= threshold

    n_pruned = _bisect(passes, *_bracket(curve, threshold))
    n_kept = vector.size - n_pruned
    return CompressionResult(
        factor=vector.size / n_kept if n_kept else math.inf,
        n_kept=n_kept,
        n_total=vector.size,
        tolerance=tolerance,
        base_accuracy=base_accuracy,
        threshold_accuracy=threshold,
        order=label,
        scope=vector.scope,
        definition=_definition(vector.scope, label, tolerance),
    )


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


class _ScopeVector:
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


def _check_fractions(fractions: np.ndarray | list[float]) -> np.ndarray:
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


def _check_curve(curve: PruningCurve, vector: _ScopeVector) -> None:
    if curve.scope != vector.scope or curve.n_total != vector.size:
        raise ValueError(
            f"curve covers scope {curve.scope!r} with {curve.n_total} entries, "
            f"expected {vector.scope!r} with {vector.size}: recompute the curve"
        )


def _bracket(curve: PruningCurve, threshold: float) -> tuple[int, int]:
    """Return the pruned counts that bracket the end of the curve's passing prefix.

    The first count is the last one whose grid points all pass, the second the
    first failing one, or n_total + 1 when every grid point passes.
    """
    failing = np.flatnonzero(curve.accuracy < threshold)
    first_fail = int(failing[0]) if len(failing) else len(curve.accuracy)
    low = int(curve.n_pruned[first_fail - 1]) if first_fail > 0 else 0
    if first_fail < len(curve.accuracy):
        return low, int(curve.n_pruned[first_fail])
    return low, curve.n_total + 1


def _bisect(passes: Callable[[int], bool], low: int, high: int) -> int:
    """Return a count in [low, high) that passes while the next one fails.

    ``low`` must pass and ``high`` fail (or lie beyond the scope).
    """
    # NOTE: bisection assumes that accuracy passes for every count up to some
    # n* in [low, high) and fails above it. Where accuracy is not monotone
    # between the two grid points, it returns some pass/fail boundary in the
    # bracket, which need not be the largest passing count.
    while high - low > 1:
        middle = (low + high) // 2
        if passes(middle):
            low = middle
        else:
            high = middle
    return low


def _evaluate(
    model: nn.Module,
    params: dict[str, Tensor],
    inputs: Tensor,
    targets: Tensor,
    batch_size: int,
) -> tuple[float, float]:
    """Return the mean cross-entropy (nats) and accuracy of ``model`` at ``params``."""
    if len(inputs) == 0 or len(inputs) != len(targets):
        raise ValueError(
            f"{len(inputs)} inputs and {len(targets)} targets are invalid: "
            "pass equal, non-zero numbers of each"
        )
    total_loss, correct = 0.0, 0
    with torch.no_grad():
        for batch, labels in zip(
            torch.split(inputs, batch_size), torch.split(targets, batch_size)
        ):
            logits = functional_call(model, params, (batch,))  # batch classes
            loss = nn.functional.cross_entropy(logits, labels, reduction="sum")
            total_loss += float(loss)
            correct += int((logits.argmax(-1) == labels).sum())
    return total_loss / len(inputs), correct / len(inputs)


def _definition(scope: str, order: str, tolerance: float) -> str:
    counted = "total parameters" if scope == GLOBAL_SCOPE else f"parameters of {scope}"
    return (
        f"{counted} / fewest kept {counted} whose accuracy stays >= "
        f"(1 - tolerance) x unpruned accuracy, pruning in {order} order; "
        f"tolerance {tolerance:g}"
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


def _order_label(order: PruningOrder | str) -> str:
    return order.value if isinstance(order, PruningOrder) else str(order)


def _resolve_order_label(
    order: PruningOrder | str | None, curve: PruningCurve | None
) -> str:
    if order is None:
        return curve.order if curve is not None else CUSTOM_ORDER
    label = _order_label(order)
    if curve is not None and curve.order != label:
        raise ValueError(
            f"order {label!r} differs from the curve's order {curve.order!r}: "
            "omit order or recompute the curve"
        )
    return label
