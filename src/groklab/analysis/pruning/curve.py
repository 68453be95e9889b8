"""Pruning curves with adaptive refinement, and compression factors by search."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from torch import Tensor, nn

from groklab.analysis.pruning.core import (
    GLOBAL_SCOPE,
    CUSTOM_ORDER,
    CompressionResult,
    PruningCurve,
    PruningOrder,
    ScopeVector,
    check_curve,
    check_fractions,
    order_label,
    resolve_order_label,
)
from groklab.analysis.pruning.evaluators import (
    BatchedEvaluator,
    CurveEvaluator,
    EvaluationMethod,
    ReferenceEvaluator,
)
from groklab.analysis.pruning import cnn, incremental

DEFAULT_POINTS = 201
DEFAULT_MEMORY_MB = 1024
# Smallest coarse grid: its 6 linear points put 3 at fractions <= 0.5 for
# the linear fit of the loss.
MIN_COARSE = 11
# Probes per round of the compression-factor search: one round shrinks the
# bracket by this factor, and the fast evaluators cost little per extra probe.
SEARCH_ARITY = 16


def pruning_curve(
    model: nn.Module,
    params: dict[str, Tensor],
    saliency: dict[str, Tensor],
    inputs: Tensor,
    targets: Tensor,
    fractions: np.ndarray | list[float] | None = None,
    *,
    n_points: int = DEFAULT_POINTS,
    scope: str | None = None,
    batch_size: int = 4096,
    order: PruningOrder | str = CUSTOM_ORDER,
    method: EvaluationMethod | str = EvaluationMethod.AUTO,
    memory_mb: int = DEFAULT_MEMORY_MB,
) -> PruningCurve:
    """Evaluate loss and accuracy while pruning growing fractions of the scope.

    With ``fractions`` (non-decreasing, within [0, 1]) exactly those are
    evaluated. Without, a curve of ``n_points`` is built by ``refine_counts``:
    a coarse grid, then points where loss or accuracy change most.
    ``targets`` contains class indices. ``order`` only labels the curve, while
    ``saliency`` decides what is pruned. ``method`` picks the evaluator, and
    ``memory_mb`` bounds its chunks (see EvaluationMethod).
    """
    vector = ScopeVector(params, saliency, scope)
    evaluator = make_evaluator(
        model, vector, inputs, targets, method, batch_size, memory_mb
    )
    if fractions is None:
        fractions, counts, loss, accuracy = refine_counts(evaluator, vector, n_points)
    else:
        fractions = check_fractions(fractions)
        counts = vector.counts(fractions)
        loss, accuracy = evaluator.evaluate(counts)
    return PruningCurve(
        order=order_label(order),
        scope=vector.scope,
        fractions=fractions,
        n_pruned=counts,
        n_total=vector.size,
        loss=loss,
        accuracy=accuracy,
        method=evaluator.method,
    )


def pruning_curve_reference(
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
    """Evaluate ``fractions`` with one forward pass per pruned parameter set.

    This is the plain algorithm that the fast evaluators of ``pruning_curve``
    are checked and timed against.
    """
    return pruning_curve(
        model,
        params,
        saliency,
        inputs,
        targets,
        fractions,
        scope=scope,
        batch_size=batch_size,
        order=order,
        method=EvaluationMethod.REFERENCE,
    )


def make_evaluator(
    model: nn.Module,
    vector: ScopeVector,
    inputs: Tensor,
    targets: Tensor,
    method: EvaluationMethod | str,
    batch_size: int,
    memory_mb: int,
) -> CurveEvaluator:
    """Build the evaluator that ``method`` names, resolving AUTO."""
    method = _parse_method(method)
    if batch_size < 1:
        raise ValueError(f"batch_size {batch_size} is invalid: use an integer >= 1")
    if method is EvaluationMethod.AUTO:
        # NOTE: BATCHED was 2.8x slower than REFERENCE for IsingCNN on one CPU
        # thread (torch 2.13 CPU), because vmap over conv weights runs slowly
        # there, so AUTO leaves it out.
        method = EvaluationMethod.REFERENCE
        if cnn.applies(model, vector.params, inputs):
            method = EvaluationMethod.CACHED
        elif incremental.applies(model, vector.params, inputs):
            state = incremental.state_bytes(len(inputs), *_modadd_sizes(vector))
            if state <= memory_mb * 2**20:
                method = EvaluationMethod.INCREMENTAL
    if method is EvaluationMethod.REFERENCE:
        return ReferenceEvaluator(model, vector, inputs, targets, batch_size)
    if method is EvaluationMethod.BATCHED:
        return BatchedEvaluator(model, vector, inputs, targets, batch_size, memory_mb)
    if method is EvaluationMethod.CACHED:
        return cnn.CachedCNNEvaluator(
            model, vector, inputs, targets, batch_size, memory_mb
        )
    return incremental.IncrementalModAddEvaluator(
        model, vector, inputs, targets, memory_mb
    )


def _modadd_sizes(vector: ScopeVector) -> tuple[int, int]:
    hidden, p = vector.params["fc1.bias"].numel(), vector.params["fc2.bias"].numel()
    return hidden, p


def _parse_method(method: EvaluationMethod | str) -> EvaluationMethod:
    try:
        return EvaluationMethod(method)
    except ValueError:
        allowed = ", ".join(repr(member.value) for member in EvaluationMethod)
        raise ValueError(f"method {method!r} is invalid: use one of {allowed}") from None


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


def refine_counts(
    evaluator: CurveEvaluator, vector: ScopeVector, n_points: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Build a curve of ``n_points`` points, dense where it changes most.

    Returns sorted (fractions, counts, loss, accuracy). A scope with at most
    n_points - 1 entries gets every count 0..n_total. Otherwise a coarse grid
    of about n_points / 2 fractions, but at least MIN_COARSE, is evaluated, and
    the remaining points are shared among its intervals in proportion to
    their change (``_interval_scores``), evenly spaced in entry counts inside
    each interval. Few rounds keep the incremental evaluator to few sweeps.
    A round repeats only when intervals were too narrow for their share, and
    refinement stops early when no interval spans more than one entry.
    """
    if n_points < 4:
        raise ValueError(f"n_points {n_points} is invalid: use an integer >= 4")
    if vector.size + 1 <= n_points:
        counts = np.arange(vector.size + 1)
        loss, accuracy = evaluator.evaluate(counts)
        return counts / max(vector.size, 1), counts, loss, accuracy
    fractions = default_fractions(min(n_points, max(MIN_COARSE, (n_points + 1) // 2)))
    counts = vector.counts(fractions)
    loss, accuracy = evaluator.evaluate(counts)
    while len(counts) < n_points:
        shares = _allocate(n_points - len(counts), np.diff(counts), loss, accuracy)
        if shares.sum() == 0:
            break
        new_counts = np.concatenate([
            counts[i] + np.arange(1, k + 1) * (counts[i + 1] - counts[i]) // (k + 1)
            for i, k in enumerate(shares)
            if k
        ])
        new_loss, new_accuracy = evaluator.evaluate(new_counts)
        fractions, counts, loss, accuracy = _merge(
            (fractions, counts, loss, accuracy),
            (new_counts / vector.size, new_counts, new_loss, new_accuracy),
        )
    return fractions, counts, loss, accuracy


def _allocate(
    needed: int, gaps: np.ndarray, loss: np.ndarray, accuracy: np.ndarray
) -> np.ndarray:
    """Share ``needed`` new points among intervals by score, at most gap - 1 each.

    A hundredth of each interval's relative width is added to its score, so
    that flat stretches still get points once the changing ones are full.
    """
    capacity = np.maximum(gaps - 1, 0)
    weights = _interval_scores(loss, accuracy) + 0.01 * gaps / max(gaps.sum(), 1)
    weights = np.where(capacity > 0, weights, 0.0)
    if weights.sum() == 0:
        return np.zeros(len(gaps), dtype=np.int64)
    ideal = min(needed, int(capacity.sum())) * weights / weights.sum()
    shares = np.minimum(np.floor(ideal).astype(np.int64), capacity)
    leftover = min(needed, int(capacity.sum())) - int(shares.sum())
    for index in np.argsort(-(ideal - shares), kind="stable"):
        if leftover <= 0:
            break
        if shares[index] < capacity[index]:
            shares[index] += 1
            leftover -= 1
    return shares


def _interval_scores(loss: np.ndarray, accuracy: np.ndarray) -> np.ndarray:
    """Score each interval by its change in accuracy and in log loss.

    Each change is divided by that quantity's range over the curve, so both
    count equally. Log loss keeps the steep rise near full pruning from
    hiding the changes at small fractions, as on the log-scale figures.
    """
    log_loss = np.log(np.maximum(loss, np.finfo(np.float64).tiny))
    scores = np.zeros(len(loss) - 1)
    for values in (accuracy, log_loss):
        finite = np.isfinite(values)
        span = np.ptp(values[finite]) if finite.any() else 0.0
        if span > 0:
            change = np.abs(np.diff(values))
            scores += np.where(np.isfinite(change), change / span, 1.0)
    return scores


def _merge(old: tuple, new: tuple) -> tuple:
    """Merge two sets of curve arrays, sorted by count then fraction."""
    merged = [np.concatenate([a, b]) for a, b in zip(old, new)]
    position = np.lexsort((merged[0], merged[1]))
    return tuple(array[position] for array in merged)


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
    method: EvaluationMethod | str = EvaluationMethod.AUTO,
    memory_mb: int = DEFAULT_MEMORY_MB,
) -> CompressionResult:
    """Find the fewest kept entries whose accuracy stays within ``tolerance``.

    An entry count passes when accuracy >= (1 - tolerance) x unpruned
    accuracy. The largest pruned count whose grid points on ``curve`` all pass
    is refined up to the next failing grid point by a search that probes
    SEARCH_ARITY - 1 counts per round. ``curve`` must come from the same
    model, params, saliency, inputs and scope. Without it, one of
    DEFAULT_POINTS points is computed. ``order`` labels the result and
    defaults to the curve's label. Unpruned accuracy and probes use the
    evaluator that ``method`` names.
    """
    if not 0 <= tolerance < 1:
        raise ValueError(f"tolerance {tolerance} is invalid: use a value in [0, 1)")
    vector = ScopeVector(params, saliency, scope)
    label = resolve_order_label(order, curve)
    evaluator = make_evaluator(
        model, vector, inputs, targets, method, batch_size, memory_mb
    )
    if curve is None:
        fractions, counts, loss, accuracy = refine_counts(
            evaluator, vector, DEFAULT_POINTS
        )
        curve = PruningCurve(
            label, vector.scope, fractions, counts, vector.size, loss, accuracy,
            evaluator.method,
        )
    check_curve(curve, vector)
    base_accuracy = float(evaluator.evaluate(np.array([0]))[1][0])
    threshold = (1 - tolerance) * base_accuracy

    def passing(counts: np.ndarray) -> np.ndarray:
        return evaluator.evaluate(counts)[1] >= threshold

    n_pruned = _search(passing, *_bracket(curve, threshold))
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


def _search(
    passing: Callable[[np.ndarray], np.ndarray], low: int, high: int
) -> int:
    """Return a count in [low, high) that passes while the next one fails.

    ``low`` must pass and ``high`` fail (or lie beyond the scope). Each round
    evaluates up to SEARCH_ARITY - 1 evenly spaced counts strictly inside the
    bracket, then keeps the part between the last pass before the first
    failure and that failure.
    """
    # NOTE: the search assumes that accuracy passes for every count up to some
    # n* in [low, high) and fails above it. Where accuracy is not monotone
    # between the two grid points, it returns some pass/fail boundary in the
    # bracket, which need not be the largest passing count.
    while high - low > 1:
        steps = np.arange(1, SEARCH_ARITY) * (high - low) // SEARCH_ARITY
        probes = np.unique(low + steps)
        probes = probes[(probes > low) & (probes < high)]
        results = passing(probes)
        failing = np.flatnonzero(~results)
        if len(failing) == 0:
            low = int(probes[-1])
            continue
        first = int(failing[0])
        high = int(probes[first])
        low = int(probes[first - 1]) if first > 0 else low
    return low


def _definition(scope: str, order: str, tolerance: float) -> str:
    counted = "total parameters" if scope == GLOBAL_SCOPE else f"parameters of {scope}"
    return (
        f"{counted} / fewest kept {counted} whose accuracy stays >= "
        f"(1 - tolerance) x unpruned accuracy, pruning in {order} order; "
        f"tolerance {tolerance:g}"
    )
