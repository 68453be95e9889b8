"""Pruning curves of IsingCNN with shared conv activations and batched fc layers.

A curve prunes mostly fc1, so consecutive counts often share the same conv
masks. Counts are grouped by the number of conv entries they prune (the
order fixes which ones), and the conv stack runs once per group. All groups
of a chunk share one ``conv2d`` call per conv layer: conv1 gets the weights
of G groups as G x 2 output channels of the shared input, and conv2 runs
with ``groups=G``. The fc layers of every count then run as batched matrix
products over stacked masked weights. The operations are those of
``IsingCNN.forward`` in the model's dtype, so results agree with the
reference up to summation order.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from groklab.analysis.budget import budget_bytes
from groklab.analysis.pruning.core import ScopeVector
from groklab.analysis.pruning.evaluators import (
    EvaluationMethod,
    check_inputs,
    mask_scores,
)
from groklab.models import IsingCNN

STANDARD_NAMES = (
    "conv1.weight",
    "conv1.bias",
    "conv2.weight",
    "conv2.bias",
    "fc1.weight",
    "fc1.bias",
    "fc2.weight",
    "fc2.bias",
)
CONV_NAMES = STANDARD_NAMES[:4]


def applies(model: nn.Module, params: dict[str, Tensor], inputs: Tensor) -> bool:
    """Return whether the cached evaluator can take this model and data.

    It needs an IsingCNN with the module's conv settings, exactly the eight
    standard parameters with the module's shapes, and floating-point inputs of
    shape (N, 1, L, L) with the lattice size L that fc1 expects.
    """
    if type(model) is not IsingCNN or tuple(params) != STANDARD_NAMES:
        return False
    shapes = {name: tuple(value.shape) for name, value in model.named_parameters()}
    if any(tuple(params[name].shape) != shapes[name] for name in STANDARD_NAMES):
        return False
    for conv in (model.conv1, model.conv2):
        settings = (conv.stride, conv.padding, conv.dilation, conv.groups)
        if settings != ((1, 1), (1, 1), (1, 1), 1) or conv.padding_mode != "zeros":
            return False
    if inputs.ndim != 4 or inputs.shape[1] != 1 or not inputs.is_floating_point():
        return False
    lattice = inputs.shape[-1]
    return (
        inputs.shape[-2] == lattice
        and lattice % 4 == 0
        and 4 * (lattice // 4) ** 2 == model.fc1.in_features
    )


class CachedCNNEvaluator:
    """Evaluates IsingCNN pruning curves, one conv pass per distinct conv mask."""

    method = EvaluationMethod.CACHED.value

    def __init__(
        self,
        model: IsingCNN,
        vector: ScopeVector,
        inputs: Tensor,
        targets: Tensor,
        batch_size: int,
        memory_mb: int,
    ):
        check_inputs(inputs, targets)
        if not applies(model, vector.params, inputs):
            raise ValueError(
                "method 'cached' is invalid for this model or input: it needs an "
                "IsingCNN with its eight standard parameters and (N, 1, L, L) float "
                "lattices, so use 'reference' or 'auto'"
            )
        self.vector = vector
        self.inputs, self.targets = inputs, targets
        self.rank = vector.ranks()  # position of each entry in the pruning order
        self.conv_pruned = self._conv_prefix()
        self.input_batch, self.mask_chunk = self._chunk_sizes(batch_size, memory_mb)

    def _conv_prefix(self) -> Tensor:
        """Return, for each count 0..n_total, how many conv entries it prunes."""
        is_conv = torch.zeros(self.vector.size, dtype=torch.int64)
        start = 0
        for name in self.vector.names:
            end = start + self.vector.params[name].numel()
            if name in CONV_NAMES:
                is_conv[start:end] = 1
            start = end
        prefix = torch.zeros(self.vector.size + 1, dtype=torch.int64)
        prefix[1:] = torch.cumsum(is_conv[self.vector.order], 0)
        return prefix

    def _chunk_sizes(self, batch_size: int, memory_mb: int) -> tuple[int, int]:
        """Return (inputs per batch, counts per chunk) that fit the budget.

        Each count in a chunk stores its masked parameters. For each of its
        inputs it also stores the fc activations (64 + 100 + 2 for 16 x 16
        lattices, twice for temporaries). A count alone in its conv group adds
        that group's conv activations (2 L^2 + 2 L^2/4 + 4 L^2/4 + 4 L^2/16).
        """
        budget = budget_bytes(memory_mb)
        itemsize = self.vector.values.element_size()
        lattice = self.inputs.shape[-1]
        model_params = self.vector.params
        fc1_out, fc1_in = model_params["fc1.weight"].shape
        fc_numel = fc1_in + fc1_out + model_params["fc2.weight"].shape[0]
        conv_numel = 2 * lattice**2 + 2 * lattice**2 // 4 + 4 * lattice**2 // 4
        conv_numel += 4 * lattice**2 // 16
        per_input = itemsize * (2 * fc_numel + conv_numel)
        n_params = sum(value.numel() for value in model_params.values())
        per_mask_params = itemsize * n_params
        input_batch = min(len(self.inputs), batch_size)
        input_batch = max(1, min(input_batch, (budget - per_mask_params) // per_input))
        per_mask = per_mask_params + input_batch * per_input
        return int(input_batch), int(max(1, budget // per_mask))

    def evaluate(self, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        counts = torch.as_tensor(np.asarray(counts, dtype=np.int64))
        # Sorting by count keeps each conv group in at most two chunks.
        visit = torch.argsort(counts, stable=True)
        losses = torch.empty(len(counts), dtype=torch.float64)
        accuracies = torch.empty(len(counts), dtype=torch.float64)
        for chunk in torch.split(visit, self.mask_chunk):
            loss, accuracy = self._evaluate_chunk(counts[chunk])
            losses[chunk] = loss
            accuracies[chunk] = accuracy
        return losses.numpy(), accuracies.numpy()

    def _evaluate_chunk(self, counts: Tensor) -> tuple[Tensor, Tensor]:
        """Return (loss, accuracy) of ``counts`` as float64 tensors."""
        keys, group = torch.unique(self.conv_pruned[counts], return_inverse=True)
        representative = torch.zeros(len(keys), dtype=torch.int64)
        representative[group] = counts  # any count of a group has its conv masks
        conv = self._stacked(representative, CONV_NAMES)
        fc = self._stacked(counts, STANDARD_NAMES[4:])

        def logits_of(batch: Tensor) -> Tensor:
            features = _conv_features(batch, conv)  # groups batch features
            return _fc_logits(features[group], fc)

        return mask_scores(
            logits_of, self.inputs, self.targets, self.input_batch, len(counts)
        )

    def _stacked(self, counts: Tensor, names: tuple[str, ...]) -> dict[str, Tensor]:
        """Return ``names`` pruned at each of ``counts``, stacked along dim 0."""
        stacked = {}
        start = 0
        for name in self.vector.names:
            value = self.vector.params[name].detach()
            end = start + value.numel()
            if name in names:
                keep = self.rank[start:end].unsqueeze(0) >= counts.unsqueeze(1)
                masked = torch.where(keep, value.reshape(-1), 0)
                stacked[name] = masked.view(len(counts), *value.shape)
            start = end
        for name in names:
            if name not in stacked:
                value = self.vector.params[name].detach()
                stacked[name] = value.expand(len(counts), *value.shape)
        return stacked


def _conv_features(spins: Tensor, conv: dict[str, Tensor]) -> Tensor:
    """Run both conv blocks for G weight sets; return (G, batch, features).

    Groups differ in few conv entries, so most of their channels are equal.
    Each distinct conv1 channel (weights and bias) is computed once, and each
    distinct conv2 channel (weights, bias and the two conv1 channels it
    reads) once, as one grouped ``conv2d`` call per layer.
    """
    n_groups, out1 = conv["conv1.bias"].shape
    out2 = conv["conv2.bias"].shape[1]
    rows1 = torch.cat(
        [conv["conv1.weight"].flatten(2), conv["conv1.bias"].unsqueeze(2)], 2
    ).flatten(0, 1)  # G x out1 rows of (weights, bias)
    unique1, index1 = torch.unique(rows1, dim=0, return_inverse=True)
    x1 = nn.functional.conv2d(
        spins, unique1[:, :-1].reshape(-1, 1, 3, 3), unique1[:, -1], padding=1
    )
    # max_pool2d(relu(x)) equals relu(max_pool2d(x)) exactly because ReLU is
    # monotone, and pooling first applies ReLU to a quarter of the numbers.
    x1 = torch.relu(nn.functional.max_pool2d(x1, 2))  # batch U1 L/2 L/2

    sources = index1.view(n_groups, 1, out1).expand(n_groups, out2, out1)
    rows2 = torch.cat(
        [
            sources.to(rows1.dtype),
            conv["conv2.weight"].flatten(2),
            conv["conv2.bias"].unsqueeze(2),
        ],
        2,
    ).flatten(0, 1)  # G x out2 rows of (conv1 channels read, weights, bias)
    unique2, index2 = torch.unique(rows2, dim=0, return_inverse=True)
    reads = unique2[:, :out1].long().reshape(-1)
    weights = unique2[:, out1:-1].reshape(-1, out1, 3, 3)
    x2 = nn.functional.conv2d(
        x1[:, reads], weights, unique2[:, -1], padding=1, groups=len(unique2)
    )
    x2 = torch.relu(nn.functional.max_pool2d(x2, 2))  # batch U2 L/4 L/4
    x2 = x2.transpose(0, 1)[index2]  # G x out2, batch, L/4, L/4
    return x2.view(n_groups, out2, len(spins), -1).transpose(1, 2).flatten(2)


def _fc_logits(features: Tensor, fc: dict[str, Tensor]) -> Tensor:
    """Apply fc1, ReLU and fc2 per weight set: (B, batch, in) to (B, batch, classes)."""
    hidden = torch.baddbmm(
        fc["fc1.bias"].unsqueeze(1), features, fc["fc1.weight"].transpose(1, 2)
    )
    hidden = torch.relu(hidden)
    return torch.baddbmm(
        fc["fc2.bias"].unsqueeze(1), hidden, fc["fc2.weight"].transpose(1, 2)
    )
