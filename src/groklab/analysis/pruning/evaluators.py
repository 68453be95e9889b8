"""Evaluators that return loss and accuracy after pruning given entry counts.

Every evaluator computes the same thing: for a list of pruned counts of one
scope, the mean cross-entropy (nats) and accuracy on fixed inputs. They differ
in cost. The reference evaluator runs one forward pass per count, and the
batched one runs several masked parameter sets at once with
``torch.func.vmap``. The incremental one (ModAddMLP only, see
``incremental``) updates the logits in place as entries are zeroed or
restored. The cached one (IsingCNN only, see ``cnn``) shares conv
activations between counts.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from typing import Protocol

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from groklab.analysis.budget import activation_numel, budget_bytes
from groklab.analysis.pruning.core import ScopeVector


class EvaluationMethod(str, Enum):
    """Algorithm that evaluates a pruning curve. All agree up to roundoff."""

    # INCREMENTAL for a standard ModAddMLP whose state fits the memory
    # budget, CACHED for a standard IsingCNN, REFERENCE for every other model.
    AUTO = "auto"
    # One forward pass per pruned count, in the model's dtype.
    REFERENCE = "reference"
    # Chunks of masked parameter sets evaluated together with vmap.
    BATCHED = "batched"
    # Exact float64 updates of the ModAddMLP logits between counts.
    INCREMENTAL = "incremental"
    # IsingCNN only: one conv pass per distinct conv mask, fc layers batched.
    CACHED = "cached"


class CurveEvaluator(Protocol):
    """Evaluates loss and accuracy of one scope at any pruned counts."""

    method: str

    def evaluate(self, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return (loss, accuracy), one entry per count, in the order given."""
        ...


def check_inputs(inputs: Tensor, targets: Tensor) -> None:
    """Raise ValueError unless there are equal, non-zero numbers of both."""
    if len(inputs) == 0 or len(inputs) != len(targets):
        raise ValueError(
            f"{len(inputs)} inputs and {len(targets)} targets are invalid: "
            "pass equal, non-zero numbers of each"
        )


class ReferenceEvaluator:
    """Evaluates one pruned parameter set at a time with ``functional_call``."""

    method = EvaluationMethod.REFERENCE.value

    def __init__(
        self,
        model: nn.Module,
        vector: ScopeVector,
        inputs: Tensor,
        targets: Tensor,
        batch_size: int,
    ):
        check_inputs(inputs, targets)
        self.model, self.vector = model, vector
        self.inputs, self.targets = inputs, targets
        self.batch_size = batch_size

    def evaluate(self, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        losses, accuracies = [], []
        for count in counts:
            params = self.vector.merged(self.vector.pruned_flat(int(count)))
            loss, accuracy = evaluate_params(
                self.model, params, self.inputs, self.targets, self.batch_size
            )
            losses.append(loss)
            accuracies.append(accuracy)
        return np.array(losses), np.array(accuracies)


def evaluate_params(
    model: nn.Module,
    params: dict[str, Tensor],
    inputs: Tensor,
    targets: Tensor,
    batch_size: int,
) -> tuple[float, float]:
    """Return the mean cross-entropy (nats) and accuracy of ``model`` at ``params``."""
    check_inputs(inputs, targets)
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


class BatchedEvaluator:
    """Evaluates chunks of pruned parameter sets together with ``vmap``.

    A chunk of B counts becomes a (B, n_scope) stack of masked scope entries.
    B and the input batch are chosen so that the stack plus B copies of the
    activations of one input batch fit ``memory_mb``, as estimated by
    ``activation_numel``.
    """

    method = EvaluationMethod.BATCHED.value

    def __init__(
        self,
        model: nn.Module,
        vector: ScopeVector,
        inputs: Tensor,
        targets: Tensor,
        batch_size: int,
        memory_mb: int,
    ):
        check_inputs(inputs, targets)
        self.model, self.vector = model, vector
        self.inputs, self.targets = inputs, targets
        self.rank = vector.ranks()  # position of each entry in the pruning order
        self.fixed = {
            name: value.detach()
            for name, value in vector.params.items()
            if name not in vector.names
        }
        self.input_batch, self.mask_chunk = self._chunk_sizes(batch_size, memory_mb)

    def _chunk_sizes(self, batch_size: int, memory_mb: int) -> tuple[int, int]:
        """Return (inputs per batch, masks per chunk) that fit the budget."""
        budget = budget_bytes(memory_mb)
        itemsize = self.vector.values.element_size()
        activations, _ = activation_numel(
            self.model, self.vector.params, self.inputs[:1]
        )
        # Twice the activations: each layer's output and the next one coexist.
        per_input = 2 * itemsize * max(activations, 1)
        per_mask_params = itemsize * self.vector.size
        input_batch = min(len(self.inputs), batch_size)
        input_batch = max(1, min(input_batch, (budget - per_mask_params) // per_input))
        per_mask = per_mask_params + input_batch * per_input
        return int(input_batch), int(max(1, budget // per_mask))

    def evaluate(self, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        losses, accuracies = [], []
        for start in range(0, len(counts), self.mask_chunk):
            chunk = torch.as_tensor(counts[start : start + self.mask_chunk])
            loss, accuracy = self._evaluate_chunk(chunk)
            losses.append(loss)
            accuracies.append(accuracy)
        return np.concatenate(losses), np.concatenate(accuracies)

    def _evaluate_chunk(self, counts: Tensor) -> tuple[np.ndarray, np.ndarray]:
        keep = self.rank.unsqueeze(0) >= counts.unsqueeze(1)  # chunk n_scope
        stacked = torch.where(keep, self.vector.values, 0)
        sizes = [self.vector.params[name].numel() for name in self.vector.names]
        batched = {
            name: piece.reshape(len(counts), *self.vector.params[name].shape)
            for name, piece in zip(self.vector.names, torch.split(stacked, sizes, 1))
        }

        def logits_at(scope_params: dict[str, Tensor], batch: Tensor) -> Tensor:
            params = {**self.fixed, **scope_params}
            return functional_call(self.model, params, (batch,))

        batched_logits = vmap(logits_at, in_dims=(0, None))
        loss, accuracy = mask_scores(
            lambda batch: batched_logits(batched, batch),  # chunk batch classes
            self.inputs,
            self.targets,
            self.input_batch,
            len(counts),
        )
        return loss.numpy(), accuracy.numpy()


def mask_scores(
    logits_of: Callable[[Tensor], Tensor],
    inputs: Tensor,
    targets: Tensor,
    input_batch: int,
    n_masks: int,
) -> tuple[Tensor, Tensor]:
    """Return each mask's mean cross-entropy and accuracy as float64 tensors.

    ``logits_of`` maps a batch of inputs to logits of shape (masks, batch,
    classes). Inputs are processed ``input_batch`` at a time without gradients.
    """
    total_loss = torch.zeros(n_masks, dtype=torch.float64)
    correct = torch.zeros(n_masks, dtype=torch.int64)
    with torch.no_grad():
        for batch, labels in zip(
            torch.split(inputs, input_batch), torch.split(targets, input_batch)
        ):
            logits = logits_of(batch)
            loss = nn.functional.cross_entropy(
                logits.flatten(0, 1), labels.repeat(n_masks), reduction="none"
            )
            total_loss += loss.view(n_masks, -1).sum(1).double()
            correct += (logits.argmax(-1) == labels).sum(1)
    return total_loss / len(inputs), correct.double() / len(inputs)
