"""Intensive principal component analysis (InPCA) of models along a training run.

The method is from Quinn, Clement, De Bernardis, Niemack and Sethna,
"Visualizing probabilistic models and data with Intensive Principal Component
Analysis", PNAS 116(28):13762 (2019). Each model is a probability distribution
over outputs, and the models are embedded so that a signed squared Euclidean
distance reproduces their pairwise distinguishability.

Definitions used here:

- A model's outputs on N fixed inputs form the distribution
  P(y_1, ..., y_N) = prod_n p_n(y_n), with p_n the softmax over C classes at
  input n. The Bhattacharyya coefficient of two such products factorises:
  BC(P, Q) = prod_n sum_c sqrt(p_nc q_nc).
- The Bhattacharyya distance is D(P, Q) = -log BC(P, Q) = sum_n d_n with
  d_n = -log sum_c sqrt(p_nc q_nc). The zero-replica limit of the Hellinger
  distance in Quinn et al. gives a squared distance proportional to it.
  groklab reports the mean over inputs (``reduction="mean"``, the default),
  which does not grow with N and so is comparable across input sets, or the
  sum (``reduction="sum"``). The two differ by the factor N, which scales the
  embedding without changing its shape.
- InPCA treats D as a matrix of squared distances, forms
  W = -1/2 J D J with J = I - 11^T / M, and diagonalises the symmetric W.
  Eigenvalues are sorted by absolute value. Component k has coordinates
  v_k sqrt(|lambda_k|) and sign s_k = sign(lambda_k), with +1 for a zero
  eigenvalue. Negative eigenvalues are expected, because D is not a
  Euclidean squared distance, and they give time-like directions. With all M
  components kept, D_ij = sum_k s_k (x_ik - x_jk)^2 up to rounding, for any
  symmetric D with a zero diagonal.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from numpy.typing import ArrayLike
from torch import nn
from torch.func import functional_call

# Row sums of a probability array may differ from 1 by this much. float32
# softmax rows of torch 2.13 (CPU, random logits) were within 4e-7 of 1 for 2
# to 1000 classes.
NORMALISATION_ATOL = 1e-6

# The Bhattacharyya coefficient is clipped to [TINY, 1], so one input
# contributes at most -log(TINY), about 708.4, even for disjoint supports.
TINY = np.finfo(np.float64).tiny

# Relative tolerance for the symmetry and zero-diagonal checks on distances.
SYMMETRY_RTOL = 1e-9


def bhattacharyya_distances(
    probs: ArrayLike, *, reduction: Literal["mean", "sum"] = "mean"
) -> np.ndarray:
    """Compute the (M, M) Bhattacharyya distances between M models' outputs.

    ``probs`` has shape (M models, N inputs, C classes), each row a
    probability distribution. Entry (a, b) is the mean (or sum) over inputs of
    -log sum_c sqrt(p_anc p_bnc). Rows are renormalised after validation, the
    diagonal is exactly 0 and the result is exactly symmetric.
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction {reduction!r} is invalid: use 'mean' or 'sum'")
    roots = np.sqrt(_validated_probabilities(probs))
    n_models = roots.shape[0]
    distances = np.zeros((n_models, n_models))
    for a in range(n_models - 1):
        # Row a against models a+1..M-1 only: O(M N) memory per step, not O(M^2 N).
        coefficients = np.einsum("nc,bnc->bn", roots[a], roots[a + 1 :])
        per_input = -np.log(np.clip(coefficients, TINY, 1.0))
        row = per_input.mean(axis=1) if reduction == "mean" else per_input.sum(axis=1)
        distances[a, a + 1 :] = row
        distances[a + 1 :, a] = row
    return distances


def _validated_probabilities(probs: ArrayLike) -> np.ndarray:
    """Return ``probs`` as float64 with every row rescaled to sum to exactly 1."""
    array = np.asarray(probs, dtype=np.float64)
    if array.ndim != 3 or 0 in array.shape:
        raise ValueError(
            f"probs has shape {array.shape}: pass a non-empty "
            "(n_models, n_inputs, n_classes) array"
        )
    if not np.all(np.isfinite(array)):
        raise ValueError("probs contains NaN or inf: pass finite probabilities")
    if np.any(array < 0):
        raise ValueError(
            f"probs has negative entries (min {array.min():.3g}): pass probabilities, "
            "for example the softmax of the logits"
        )
    sums = array.sum(axis=-1, keepdims=True)
    worst = float(np.max(np.abs(sums - 1.0)))
    if worst > NORMALISATION_ATOL:
        raise ValueError(
            f"probs rows are not normalised (max |row sum - 1| = {worst:.3g} > "
            f"{NORMALISATION_ATOL:g}): divide each row by its sum over classes"
        )
    return array / sums


@dataclass(frozen=True)
class InPCAResult:
    """Embedding of M models by intensive PCA.

    ``coordinates`` has shape (M, k). ``eigenvalues`` is the full spectrum of
    W (length M), sorted by decreasing absolute value, so its first k entries
    belong to the k components. ``signs`` (length k) is +1 for a real
    (space-like) component and -1 for an imaginary (time-like) one.
    ``explained_fraction`` (length k) is |lambda_k| / sum |lambda|.
    """

    coordinates: np.ndarray
    eigenvalues: np.ndarray
    signs: np.ndarray
    explained_fraction: np.ndarray

    def squared_distances(self) -> np.ndarray:
        """Compute sum_k s_k (x_ik - x_jk)^2, the distances this embedding reproduces.

        Equals the input distances exactly when k = M, and approximately when
        the dropped eigenvalues are small.
        """
        differences = self.coordinates[:, None, :] - self.coordinates[None, :, :]
        return np.einsum("ijk,k->ij", differences**2, self.signs.astype(np.float64))

    def to_dict(self) -> dict[str, Any]:
        """Return the result as plain lists and numbers for JSON."""
        return {
            "n_models": int(self.coordinates.shape[0]),
            "n_components": int(self.coordinates.shape[1]),
            "coordinates": self.coordinates.tolist(),
            "eigenvalues": self.eigenvalues.tolist(),
            "signs": [int(s) for s in self.signs],
            "explained_fraction": self.explained_fraction.tolist(),
        }


def inpca(distances: ArrayLike, n_components: int = 3) -> InPCAResult:
    """Embed M models from their (M, M) matrix of squared distances by InPCA.

    ``distances`` must be symmetric with a zero diagonal, up to a relative
    tolerance of 1e-9. Negative entries are allowed, because a time-like
    separation has a negative squared distance. Each eigenvector's sign is
    fixed so that its entry of largest magnitude is positive.
    """
    matrix = _validated_distances(distances)
    n_models = matrix.shape[0]
    integral = isinstance(n_components, (int, np.integer))
    if isinstance(n_components, bool) or not integral:
        raise ValueError(
            f"n_components {n_components!r} is invalid: pass an integer from 1 to "
            f"{n_models}"
        )
    if not 1 <= n_components <= n_models:
        raise ValueError(
            f"n_components {n_components} is out of range: pass 1 to {n_models}, "
            "the number of models"
        )
    centring = np.eye(n_models) - np.full((n_models, n_models), 1.0 / n_models)
    w = -0.5 * centring @ matrix @ centring
    eigenvalues, eigenvectors = np.linalg.eigh((w + w.T) / 2)
    order = np.argsort(-np.abs(eigenvalues), kind="stable")
    eigenvalues = eigenvalues[order]
    eigenvectors = _fixed_signs(eigenvectors[:, order])
    leading = eigenvalues[:n_components]
    total = float(np.abs(eigenvalues).sum())
    fraction = np.abs(leading) / total if total > 0 else np.zeros_like(leading)
    return InPCAResult(
        coordinates=eigenvectors[:, :n_components] * np.sqrt(np.abs(leading)),
        eigenvalues=eigenvalues,
        signs=np.where(leading < 0, -1, 1),
        explained_fraction=fraction,
    )


def _validated_distances(distances: ArrayLike) -> np.ndarray:
    """Return ``distances`` as a float64 matrix, exactly symmetrised."""
    matrix = np.asarray(distances, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] < 1:
        raise ValueError(
            f"distances has shape {matrix.shape}: pass a square (n_models, n_models) "
            "matrix"
        )
    if not np.all(np.isfinite(matrix)):
        raise ValueError("distances contains NaN or inf: pass finite distances")
    tolerance = SYMMETRY_RTOL * max(float(np.abs(matrix).max()), 1.0)
    asymmetry = float(np.abs(matrix - matrix.T).max())
    if asymmetry > tolerance:
        raise ValueError(
            f"distances is not symmetric (max |D - D^T| = {asymmetry:.3g}): pass a "
            "symmetric matrix, for example (D + D.T) / 2"
        )
    diagonal = float(np.abs(np.diag(matrix)).max())
    if diagonal > tolerance:
        raise ValueError(
            f"distances has a non-zero diagonal (max |D_ii| = {diagonal:.3g}): a "
            "model's distance to itself must be 0"
        )
    return (matrix + matrix.T) / 2


def _fixed_signs(eigenvectors: np.ndarray) -> np.ndarray:
    """Flip each column so that its entry of largest magnitude is positive."""
    rows = np.argmax(np.abs(eigenvectors), axis=0)
    signs = np.sign(eigenvectors[rows, np.arange(eigenvectors.shape[1])])
    return eigenvectors * np.where(signs == 0, 1.0, signs)


@torch.no_grad()
def trajectory_probabilities(
    model: nn.Module,
    params_list: Iterable[Mapping[str, torch.Tensor]],
    inputs: torch.Tensor,
    batch_size: int = 1024,
) -> np.ndarray:
    """Evaluate the softmax outputs of ``model`` at each parameter dict.

    Returns float64 probabilities of shape (M checkpoints, N inputs, C
    classes). The logits are cast to float64 before the softmax, so rows sum
    to 1 within float64 rounding. ``model``'s own parameters are not changed;
    names missing from a dict fall back to them. The output takes
    8 M N C bytes, for example 350 MB for 100 checkpoints of the modular
    addition test set (3831 inputs, 113 classes).
    """
    checkpoints = list(params_list)
    if not checkpoints:
        raise ValueError("params_list is empty: pass at least one parameter dict")
    integral = isinstance(batch_size, int) and not isinstance(batch_size, bool)
    if not integral or batch_size < 1:
        raise ValueError(
            f"batch_size {batch_size!r} is invalid: pass a positive integer"
        )
    if len(inputs) == 0:
        raise ValueError("inputs is empty: pass at least one input")
    known = {name for name, _ in model.named_parameters()}
    known |= {name for name, _ in model.named_buffers()}
    rows = []
    for index, params in enumerate(checkpoints):
        unknown = sorted(set(params) - known)
        if unknown:
            raise ValueError(
                f"parameter dict {index} has names {unknown} that the model lacks: "
                "pass the model the checkpoints were trained with"
            )
        rows.append(_probabilities(model, params, inputs, batch_size))
    return np.stack(rows)


def _probabilities(
    model: nn.Module,
    params: Mapping[str, torch.Tensor],
    inputs: torch.Tensor,
    batch_size: int,
) -> np.ndarray:
    """Return the float64 softmax outputs at one parameter dict, shape (N, C)."""
    chunks = []
    for start in range(0, len(inputs), batch_size):
        batch = inputs[start : start + batch_size]
        logits = functional_call(model, dict(params), (batch,))
        if logits.ndim != 2:
            raise ValueError(
                f"model output has shape {tuple(logits.shape)}: InPCA needs "
                "(batch, n_classes) logits"
            )
        chunks.append(torch.softmax(logits.double(), dim=-1))
    return torch.cat(chunks).numpy()
