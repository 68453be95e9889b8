"""Learning dynamics in parameter space, measured with and without the Fisher metric.

A trajectory is a sequence of checkpoints: ``thetas`` (n_checkpoints,
n_params) contains the flattened parameters, ``fishers`` of the same shape
contains the diagonal Fisher information at each checkpoint, and ``epochs``
gives the epoch of each checkpoint. Step e is s_e = theta_{e+1} - theta_e, so with
sparse checkpoints one step spans several epochs.

Sloppy parameters are those whose final Fisher information is below a
threshold. The loss barely depends on them, so weight decay is free to shrink
them. Every measure is reported for all parameters and for the sloppy and
stiff subsets separately.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike

def trajectory_measures(
    thetas: ArrayLike,
    fishers: ArrayLike,
    epochs: ArrayLike,
    *,
    sloppy_threshold: float = 0.1,
    final_fisher: ArrayLike | None = None,
) -> dict[str, Any]:
    """Measure step lengths, turning and the pull toward the origin along a run.

    Returns a JSON-friendly dict. ``result[subset]`` for subset in ``all``,
    ``sloppy`` and ``stiff`` maps each measure to a list, with ``None`` where a
    cosine is undefined because a vector or its Fisher norm is zero:

    - ``euclidean_step``, ``fisher_step`` (n-1): |s_e| and sqrt(s_e^T F_e s_e);
    - ``euclidean_cosine``, ``fisher_cosine`` (n-2): cosine of steps e and
      e+1, the Fisher one in the metric F_{e+1} of the checkpoint they share;
    - ``euclidean_decay_cosine``, ``fisher_decay_cosine`` (n-1): cosine of
      s_e with -theta_e, the direction weight decay pulls in, the Fisher one
      in the metric F_e;
    - ``parameter_norm`` (n): |theta_e|.

    Parameter i is sloppy when ``final_fisher[i] < sloppy_threshold``, with
    ``final_fisher`` defaulting to the last row of ``fishers``. The result also
    contains ``n_sloppy``, ``n_stiff``, ``sloppy_threshold``, ``epochs`` (n),
    ``step_epochs`` (n-1, the epoch each step starts at) and ``turn_epochs``
    (n-2, the epoch of the checkpoint between two compared steps).
    """
    theta, fisher, epoch = _validated_trajectory(thetas, fishers, epochs)
    sloppy = _sloppy_mask(fisher, final_fisher, sloppy_threshold)
    # A slice, unlike a boolean mask, does not copy the full trajectory.
    columns = {"all": slice(None), "sloppy": sloppy, "stiff": ~sloppy}
    result: dict[str, Any] = {
        name: _subset_measures(theta[:, index], fisher[:, index])
        for name, index in columns.items()
    }
    result.update(
        n_sloppy=int(sloppy.sum()),
        n_stiff=int((~sloppy).sum()),
        sloppy_threshold=float(sloppy_threshold),
        epochs=epoch.tolist(),
        step_epochs=epoch[:-1].tolist(),
        turn_epochs=epoch[1:-1].tolist(),
    )
    return result


def _validated_trajectory(
    thetas: ArrayLike, fishers: ArrayLike, epochs: ArrayLike
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return the trajectory as float64 arrays after checking their shapes."""
    theta = np.asarray(thetas, dtype=np.float64)
    fisher = np.asarray(fishers, dtype=np.float64)
    epoch = np.asarray(epochs)
    if theta.ndim != 2 or theta.shape[0] < 2:
        raise ValueError(
            f"thetas has shape {theta.shape}: pass (n_checkpoints, n_params) "
            "with at least 2 checkpoints"
        )
    if fisher.shape != theta.shape:
        raise ValueError(
            f"fishers has shape {fisher.shape} but thetas {theta.shape}: "
            "pass one Fisher diagonal per checkpoint"
        )
    if epoch.shape != (theta.shape[0],):
        raise ValueError(
            f"epochs has shape {epoch.shape} but there are {theta.shape[0]} "
            "checkpoints: pass one epoch per checkpoint"
        )
    if np.any(fisher < 0):
        raise ValueError("fishers has negative entries: pass a Fisher diagonal")
    return theta, fisher, epoch


def _sloppy_mask(
    fisher: np.ndarray, final_fisher: ArrayLike | None, threshold: float
) -> np.ndarray:
    """Return a boolean (n_params,) mask of the sloppy parameters."""
    final = fisher[-1] if final_fisher is None else np.asarray(final_fisher, float)
    if final.shape != (fisher.shape[1],):
        raise ValueError(
            f"final_fisher has shape {final.shape}: pass ({fisher.shape[1]},), "
            "one value per parameter"
        )
    return final < threshold


def _subset_measures(theta: np.ndarray, fisher: np.ndarray) -> dict[str, list]:
    """Compute every measure on one subset of parameters."""
    steps = np.diff(theta, axis=0)  # step params
    start_fisher = fisher[:-1]  # step params
    shared_fisher = fisher[1:-1]  # turn params
    measures = {
        "euclidean_step": np.linalg.norm(steps, axis=1),
        "fisher_step": np.sqrt(_inner(steps, steps, start_fisher)),
        "euclidean_cosine": _cosine(steps[:-1], steps[1:], None),
        "fisher_cosine": _cosine(steps[:-1], steps[1:], shared_fisher),
        "euclidean_decay_cosine": _cosine(steps, -theta[:-1], None),
        "fisher_decay_cosine": _cosine(steps, -theta[:-1], start_fisher),
        "parameter_norm": np.linalg.norm(theta, axis=1),
    }
    return {name: _to_list(values) for name, values in measures.items()}


def _inner(u: np.ndarray, v: np.ndarray, metric: np.ndarray | None) -> np.ndarray:
    """Return the row-wise inner products u_r^T diag(metric_r) v_r.

    A ``metric`` of ``None`` stands for the identity, the Euclidean product.
    """
    if metric is None:
        return np.einsum("rp,rp->r", u, v)
    return np.einsum("rp,rp,rp->r", u, metric, v)


def _cosine(u: np.ndarray, v: np.ndarray, metric: np.ndarray | None) -> np.ndarray:
    """Return row-wise cosines in a diagonal metric, NaN where a norm is zero."""
    norms = np.sqrt(_inner(u, u, metric) * _inner(v, v, metric))
    with np.errstate(divide="ignore", invalid="ignore"):
        cosine = _inner(u, v, metric) / norms
    return np.where(norms > 0, cosine, np.nan)


def _to_list(values: np.ndarray) -> list[float | None]:
    return [float(v) if np.isfinite(v) else None for v in values]


def summary_statistics(values: ArrayLike) -> dict[str, float | int | None]:
    """Summarise the finite entries of ``values``, treating ``None`` as NaN.

    Returns ``median``, ``mean``, ``q25``, ``q75`` (``None`` when no entry is
    finite) and ``n_finite``.
    """
    array = np.asarray(values, dtype=np.float64).ravel()
    finite = array[np.isfinite(array)]
    if finite.size == 0:
        return {"median": None, "mean": None, "q25": None, "q75": None, "n_finite": 0}
    q25, median, q75 = np.quantile(finite, [0.25, 0.5, 0.75])
    return {
        "median": float(median),
        "mean": float(finite.mean()),
        "q25": float(q25),
        "q75": float(q75),
        "n_finite": int(finite.size),
    }
