"""Exact incremental evaluation of pruning curves for ModAddMLP.

Consecutive counts on a curve are nested: going from n to m > n zeroes the
entries ranked n..m-1 and leaves the others alone. The evaluator keeps the
pre-activations, hidden activations and logits of every evaluation input in
float64 and applies only what those entries change:

- fc2 entry (o, j) changing by dw adds h[:, j] dw to logits[:, o];
- fc2 bias entry o changing by db adds db to logits[:, o];
- fc1 entry (j, c) changes pre[i, j] only for inputs i whose pair (a, b) has
  a = c or P + b = c, and fc1 bias entry j changes pre[:, j]. Those
  pre-activations are recomputed from the current weights, so pre and h
  equal a from-scratch float64 forward pass exactly, and the logits of each
  changed (i, j) get (h_new - h_old) W2[:, j].

A step is a small fraction of a forward pass when it touches few entries.
Moving to a smaller count restores entries with the same updates. Only the
logits accumulate roundoff, so they are recomputed from h and W2 every few
steps. Logits whose value is fixed by structure (rows with no active hidden
unit, classes with no fc2 weight) are reset to the fc2 bias, so that ties
that are exact in a plain forward pass stay exact.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from groklab.analysis.budget import budget_bytes
from groklab.analysis.pruning.core import ScopeVector
from groklab.analysis.pruning.evaluators import EvaluationMethod, check_inputs
from groklab.models import ModAddMLP

STANDARD_NAMES = ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias")
# Steps between recomputations of the logits from h and W2. Each step adds
# roundoff of about 1e-16 times the largest changed term, so the drift stays
# far below the 1e-5 loss tolerance of the tests for any curve length.
REFRESH_EVERY = 32


def state_bytes(n_inputs: int, hidden: int, p: int) -> int:
    """Estimate the bytes of the evaluator's float64 state for ``n_inputs`` pairs."""
    return 8 * n_inputs * (2 * hidden + p) + 8 * (hidden * 3 * p + hidden + p)


def applies(model: nn.Module, params: dict[str, Tensor], inputs: Tensor) -> bool:
    """Return whether the incremental evaluator can take this model and data.

    It needs a ModAddMLP whose parameters are exactly the four standard
    tensors with the module's shapes, and integer pairs of shape (N, 2).
    """
    if type(model) is not ModAddMLP or tuple(params) != STANDARD_NAMES:
        return False
    shapes = {name: tuple(value.shape) for name, value in model.named_parameters()}
    if any(tuple(params[name].shape) != shapes[name] for name in STANDARD_NAMES):
        return False
    return inputs.ndim == 2 and inputs.shape[1] == 2 and not inputs.is_floating_point()


class IncrementalModAddEvaluator:
    """Evaluates a ModAddMLP pruning curve by exact float64 updates."""

    # NOTE: on 2 threads (P 113, hidden 512, 3831 pairs, 200 Fisher-ordered
    # points, benchmarks/pruning.py) this path took 0.9 s against 1.2 s for
    # one forward pass per point. Each step runs some 50 small indexing and
    # sparse ops. The float64 loss and argmax over all logits alone took
    # 0.12 s per curve, so no update scheme can beat about 10x here.

    method = EvaluationMethod.INCREMENTAL.value

    def __init__(
        self,
        model: ModAddMLP,
        vector: ScopeVector,
        pairs: Tensor,
        targets: Tensor,
        memory_mb: int,
    ):
        check_inputs(pairs, targets)
        if not applies(model, vector.params, pairs):
            raise ValueError(
                "method 'incremental' is invalid for this model or input: it needs a "
                "ModAddMLP with its four standard parameters and (N, 2) integer "
                "pairs, so use 'batched' or 'auto'"
            )
        self.vector = vector
        self.p = model.p
        self.targets = targets
        # Pairs per chunk of hidden updates: about 6 numbers of 8 bytes each.
        self.chunk_numel = max(1, budget_bytes(memory_mb) // (8 * 6))
        self.original = vector.values.double()
        self.params = {
            name: vector.params[name].detach().double().clone()
            for name in STANDARD_NAMES
        }
        self.hidden_size = self.params["fc1.bias"].numel()
        self.segments = self._segments()
        self.columns = torch.stack([pairs[:, 0], self.p + pairs[:, 1]], 1)  # N 2
        self.inputs_by_column, self.column_start = self._column_index()
        self.count = 0
        self.steps_since_refresh = 0
        self._recompute()

    def _segments(self) -> list[tuple[str, int, int]]:
        """Return (name, start, end) of each scope parameter in the flat vector."""
        segments, start = [], 0
        for name in self.vector.names:
            end = start + self.vector.params[name].numel()
            segments.append((name, start, end))
            start = end
        return segments

    def _column_index(self) -> tuple[Tensor, Tensor]:
        """Group input indices by the fc1 columns their pairs use (CSR layout)."""
        flat_columns = self.columns.reshape(-1)  # N * 2, input i at 2i and 2i + 1
        order = torch.argsort(flat_columns, stable=True)
        per_column = torch.bincount(flat_columns, minlength=2 * self.p)
        start = torch.zeros(2 * self.p + 1, dtype=torch.int64)
        start[1:] = torch.cumsum(per_column, 0)
        return order // 2, start

    def evaluate(self, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        counts = np.asarray(counts, dtype=np.int64)
        # Visit the counts from the end nearer the current state, so a sorted
        # request costs one sweep whichever way the previous one ended.
        visit = np.argsort(counts, kind="stable")
        if len(counts) and abs(self.count - counts.max()) < abs(self.count - counts.min()):
            visit = visit[::-1]
        losses = np.empty(len(counts))
        accuracies = np.empty(len(counts))
        for index in visit:
            self.move_to(int(counts[index]))
            losses[index], accuracies[index] = self.loss_and_accuracy()
        return losses, accuracies

    def move_to(self, count: int) -> None:
        """Zero or restore entries so that exactly ``count`` are pruned."""
        if not 0 <= count <= self.vector.size:
            raise ValueError(
                f"count {count} is invalid: use 0 to {self.vector.size}, the number of "
                f"entries in scope {self.vector.scope!r}"
            )
        low, high = sorted((self.count, count))
        if low == high:
            return
        flat = self.vector.order[low:high]
        new = torch.zeros(len(flat), dtype=torch.float64)
        if count < self.count:
            new = self.original[flat]
        self._apply(flat, new)
        self.count = count

    def loss_and_accuracy(self) -> tuple[float, float]:
        """Return the mean cross-entropy (nats) and accuracy at the current count."""
        loss = nn.functional.cross_entropy(self.logits, self.targets, reduction="sum")
        correct = int((self.logits.argmax(1) == self.targets).sum())
        return float(loss) / len(self.targets), correct / len(self.targets)

    def _apply(self, flat: Tensor, new: Tensor) -> None:
        """Set the scope entries ``flat`` to ``new`` and update the state."""
        changes = {}
        for name, start, end in self.segments:
            inside = (flat >= start) & (flat < end)
            if inside.any():
                changes[name] = (flat[inside] - start, new[inside])
        # fc2 first, with the old h, then fc1 with the new W2: together they
        # give h_new W2_new^T + b2_new.
        if "fc2.weight" in changes:
            self._set_output_weights(*changes["fc2.weight"])
        if "fc2.bias" in changes:
            self._set_output_bias(*changes["fc2.bias"])
        pairs = self._set_hidden_params(changes)
        if pairs is not None and len(pairs) * 2 > self.pre.numel():
            self._recompute()  # cheaper than updating most (input, unit) pairs
        elif pairs is not None:
            self._update_hidden(pairs)
        self.steps_since_refresh += 1
        self._fix_exact_logits()

    def _set_output_weights(self, local: Tensor, new: Tensor) -> None:
        w2 = self.params["fc2.weight"].view(-1)
        delta = new - w2[local]
        w2[local] = new
        classes, units = local // self.hidden_size, local % self.hidden_size
        change = _sparse((classes, units), delta, tuple(self.params["fc2.weight"].shape))
        self.logits += torch.sparse.mm(change, self.h).T  # N P
        self.class_weights = (self.params["fc2.weight"] != 0).sum(1)
        self.unit_weights = (self.params["fc2.weight"] != 0).sum(0)

    def _set_output_bias(self, local: Tensor, new: Tensor) -> None:
        b2 = self.params["fc2.bias"]
        delta = torch.zeros_like(b2)
        delta[local] = new - b2[local]
        b2[local] = new
        self.logits += delta

    def _set_hidden_params(self, changes: dict) -> Tensor | None:
        """Write fc1 changes and return the flat (input, unit) pairs they touch."""
        touched = []
        if "fc1.weight" in changes:
            local, new = changes["fc1.weight"]
            self.params["fc1.weight"].view(-1)[local] = new
            units, columns = local // (2 * self.p), local % (2 * self.p)
            starts = self.column_start[columns]
            lengths = self.column_start[columns + 1] - starts
            offsets = torch.arange(int(lengths.sum())) - torch.repeat_interleave(
                torch.cumsum(lengths, 0) - lengths, lengths
            )
            inputs = self.inputs_by_column[torch.repeat_interleave(starts, lengths) + offsets]
            units = units.repeat_interleave(lengths)
            touched.append(units * len(self.targets) + inputs)
        if "fc1.bias" in changes:
            local, new = changes["fc1.bias"]
            self.params["fc1.bias"][local] = new
            inputs = torch.arange(len(self.targets))
            touched.append((local.unsqueeze(1) * len(self.targets) + inputs).view(-1))
        if not touched:
            return None
        # Deduplicate with a mask, which is faster than sorting at these sizes.
        marked = torch.zeros(self.pre.numel(), dtype=torch.bool)
        for keys in touched:
            marked[keys] = True
        return torch.nonzero(marked)[:, 0]

    def _update_hidden(self, pairs: Tensor) -> None:
        """Recompute pre and h at ``pairs`` exactly and add their effect on logits.

        ``pairs`` contains flat indices unit x N + input into the (hidden, N) state.
        """
        n_inputs = self.h.shape[1]
        w2_columns = self.params["fc2.weight"].T.contiguous()  # hidden P
        for part in torch.split(pairs, self.chunk_numel):
            units, inputs = part // n_inputs, part % n_inputs
            pre = self._pre_activation(inputs, units)
            hidden = torch.relu(pre)
            old = self.h.view(-1)[part]
            self.pre.view(-1)[part] = pre
            self.h.view(-1)[part] = hidden
            self._count_active(inputs, units, (hidden != 0).long() - (old != 0).long())
            changed = torch.nonzero(hidden != old)[:, 0]
            dh = _sparse(
                (inputs[changed], units[changed]),
                (hidden - old)[changed],
                (n_inputs, self.hidden_size),
            )
            self.logits += torch.sparse.mm(dh, w2_columns)

    def _pre_activation(self, inputs: Tensor, units: Tensor) -> Tensor:
        """Return pre[units, inputs] summed in the order of ``_recompute``."""
        w1, b1 = self.params["fc1.weight"], self.params["fc1.bias"]
        columns = self.columns[inputs]
        return w1[units, columns[:, 0]] + w1[units, columns[:, 1]] + b1[units]

    def _count_active(self, inputs: Tensor, units: Tensor, change: Tensor) -> None:
        self.row_active.index_add_(0, inputs, change)
        self.unit_active.index_add_(0, units, change)

    def _recompute(self) -> None:
        """Recompute the whole state from the current parameters."""
        w1, b1 = self.params["fc1.weight"], self.params["fc1.bias"]
        w1_rows = w1.T  # 2P hidden
        pre = w1_rows[self.columns[:, 0]] + w1_rows[self.columns[:, 1]] + b1
        # Unit-major (hidden, N) layout: fc2 updates read whole units.
        self.pre = pre.T.contiguous()
        self.h = torch.relu(self.pre)
        active = self.h != 0
        self.row_active = active.sum(0)  # N
        self.unit_active = active.sum(1)  # hidden
        self.class_weights = (self.params["fc2.weight"] != 0).sum(1)
        self.unit_weights = (self.params["fc2.weight"] != 0).sum(0)
        self._refresh_logits()

    def _refresh_logits(self) -> None:
        """Recompute the logits from h and W2, skipping units that add nothing."""
        w2, b2 = self.params["fc2.weight"], self.params["fc2.bias"]
        alive = torch.nonzero((self.unit_active > 0) & (self.unit_weights > 0))[:, 0]
        self.logits = self.h[alive].T @ w2[:, alive].T + b2  # N P
        self.steps_since_refresh = 0

    def _fix_exact_logits(self) -> None:
        """Refresh the logits when due or cheap, else reset exactly known ones."""
        # NOTE: a logit that a plain forward pass gets as an exact sum of zeros
        # for only some inputs (units inactive on that input) keeps roundoff
        # here, so argmax ties near full pruning can differ by a few samples.
        alive = int(((self.unit_active > 0) & (self.unit_weights > 0)).sum())
        if self.steps_since_refresh >= REFRESH_EVERY or alive * 32 <= self.hidden_size:
            self._refresh_logits()
            return
        b2 = self.params["fc2.bias"]
        dead_rows = torch.nonzero(self.row_active == 0)[:, 0]
        self.logits[dead_rows] = b2
        empty_classes = torch.nonzero(self.class_weights == 0)[:, 0]
        self.logits[:, empty_classes] = b2[empty_classes]



def _sparse(indices: tuple[Tensor, Tensor], values: Tensor, shape: tuple) -> Tensor:
    """Build a COO matrix whose indices are valid by construction."""
    return torch.sparse_coo_tensor(
        torch.stack(indices), values, shape, check_invariants=False
    )
