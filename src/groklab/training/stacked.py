"""Models of one architecture with their parameters stacked along a leading member dimension.

A stacked model runs the forward pass of every member at once. Each member's
output depends only on its own slice of the parameters, so summing the
members' losses and calling backward gives every member its own gradient.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.func import functional_call, vmap

from groklab.models import ModAddMLP

# Samples per chunk when evaluating. The chunk size does not depend on the
# number of members, so a member's metrics do not either. Small chunks keep
# the hidden activations (2 MiB per member for the MLP at hidden width 512)
# in memory that the allocator reuses instead of fresh pages.
EVAL_CHUNK_SAMPLES = 1024


class StackedModel:
    """Stacked parameters of ``models`` (same architecture) and a batched forward pass.

    ``params`` maps each parameter name of the models to a leaf tensor of shape
    (members, *shape). Subclasses may keep a parameter in another layout
    internally; :meth:`canonical` turns it back into the module's layout.
    """

    def __init__(self, models: list[nn.Module]):
        self.template = models[0]
        names = [name for name, _ in self.template.named_parameters()]
        self.params = {}
        for name in names:
            stacked = torch.stack([dict(m.named_parameters())[name].detach() for m in models])
            self.params[name] = self.to_internal(name, stacked).requires_grad_(True)

    @property
    def members(self) -> int:
        return next(iter(self.params.values())).shape[0]

    def to_internal(self, name: str, stacked: torch.Tensor) -> torch.Tensor:
        """Return ``stacked`` (members, *module shape) in the internal layout."""
        return stacked.contiguous()

    def canonical(self, name: str, tensor: torch.Tensor) -> torch.Tensor:
        """Return an internal-layout tensor of one member or all in the module's layout."""
        return tensor

    def forward(self, inputs: torch.Tensor, shared: bool) -> torch.Tensor:
        """Return logits of shape (members, batch, classes).

        ``inputs`` has a leading member dimension unless ``shared``, in which
        case every member gets the same batch.
        """
        raise NotImplementedError

    def select(self, keep: list[int]) -> None:
        """Keep only the members at the indices ``keep``, in that order."""
        index = torch.tensor(keep, dtype=torch.long)
        self.params = {
            name: p.detach().index_select(0, index).requires_grad_(True)
            for name, p in self.params.items()
        }

    def member_tensors(self, member: int) -> dict[str, torch.Tensor]:
        """Return one member's ``model/<name>`` tensors in the module's layout."""
        return {
            f"model/{name}": self.canonical(name, p.detach()[member]).contiguous()
            for name, p in self.params.items()
        }

    @torch.no_grad()
    def parameter_norms(self) -> list[float]:
        """Return each member's L2 norm of all parameters together."""
        total = torch.zeros(self.members, dtype=torch.float64)
        for p in self.params.values():
            total += p.pow(2).flatten(1).sum(1).double()
        return [math.sqrt(v) for v in total.tolist()]

    @torch.no_grad()
    def evaluate(
        self, inputs: torch.Tensor, targets: torch.Tensor
    ) -> tuple[list[float], list[float]]:
        """Return each member's mean cross-entropy and accuracy on the shared inputs."""
        members = self.members
        chunk = EVAL_CHUNK_SAMPLES
        loss_sum = torch.zeros(members, dtype=torch.float64)
        correct = torch.zeros(members, dtype=torch.long)
        for start in range(0, len(inputs), chunk):
            logits = self.forward(inputs[start : start + chunk], shared=True)
            batch_targets = targets[start : start + chunk]
            classes = logits.shape[-1]
            losses = nn.functional.cross_entropy(
                logits.reshape(-1, classes),
                batch_targets.repeat(members),
                reduction="none",
            )
            loss_sum += losses.view(members, -1).sum(1).double()
            correct += (logits.argmax(-1) == batch_targets).sum(1)
        n = len(inputs)
        return (loss_sum / n).tolist(), (correct.double() / n).tolist()


class StackedVmapModel(StackedModel):
    """Any module, run for every member with torch.func.vmap over functional_call."""

    def forward(self, inputs: torch.Tensor, shared: bool) -> torch.Tensor:
        def call(params, batch):
            return functional_call(self.template, params, (batch,))

        return vmap(call, in_dims=(0, None if shared else 0))(self.params, inputs)


class StackedModAddMLP(StackedModel):
    """ModAddMLP for every member with gathers and batched matrix products.

    ``fc1.weight`` is kept transposed, (members, 2P, hidden), so the forward
    pass gathers contiguous rows without copying the weight first. The sums
    are formed in the order of :meth:`ModAddMLP.hidden`.
    """

    def __init__(self, models: list[nn.Module]):
        if not all(isinstance(m, ModAddMLP) for m in models):
            raise TypeError("StackedModAddMLP needs ModAddMLP members")
        self.p = models[0].p
        super().__init__(models)

    def to_internal(self, name: str, stacked: torch.Tensor) -> torch.Tensor:
        if name == "fc1.weight":
            return stacked.transpose(-1, -2).contiguous()
        return stacked.contiguous()

    def canonical(self, name: str, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.transpose(-1, -2) if name == "fc1.weight" else tensor

    def forward(self, inputs: torch.Tensor, shared: bool) -> torch.Tensor:
        table = self.params["fc1.weight"]  # members 2P hidden
        members, rows, hidden = table.shape
        if shared:
            pre = table[:, inputs[:, 0]] + table[:, self.p + inputs[:, 1]]
        else:
            # Offsets turn per-member row indices into rows of the flat table.
            offset = (torch.arange(members) * rows).view(members, 1)
            first = (inputs[..., 0] + offset).reshape(-1)
            second = (self.p + inputs[..., 1] + offset).reshape(-1)
            pre = _GatherPairs.apply(table, first, second, self._table_grad(table))
            pre = pre.view(members, -1, hidden)
        bias = self.params["fc1.bias"].unsqueeze(1)
        if torch.is_grad_enabled():
            activations = torch.relu(pre + bias)
        else:
            # In place when evaluating: saves two allocations of the largest tensor.
            activations = pre.add_(bias).relu_()
        weight = self.params["fc2.weight"].transpose(-1, -2)
        return torch.baddbmm(self.params["fc2.bias"].unsqueeze(1), activations, weight)


    def _table_grad(self, table: torch.Tensor) -> torch.Tensor:
        buffer = getattr(self, "_grad_buffer", None)
        if buffer is None or buffer.shape != table.shape:
            buffer = self._grad_buffer = torch.empty_like(table, requires_grad=False)
        return buffer


class _GatherPairs(torch.autograd.Function):
    """Sum two gathered rows of a flattened stacked table, with a reused gradient buffer.

    Autograd's own backward of row indexing allocates a zero tensor the size
    of the whole table at every step, and those fresh blocks made the
    ensemble step several times slower. This backward zeroes and fills one
    buffer instead, so the returned gradient is valid only until the next
    backward pass: the optimizer must consume it first.
    """

    @staticmethod
    def forward(ctx, table, first, second, grad_buffer):
        ctx.save_for_backward(first, second)
        ctx.grad_buffer = grad_buffer
        flat = table.view(-1, table.shape[-1])
        return flat[first] + flat[second]

    @staticmethod
    def backward(ctx, grad):
        first, second = ctx.saved_tensors
        buffer = ctx.grad_buffer
        flat = buffer.view(-1, buffer.shape[-1])
        flat.zero_()
        flat.index_add_(0, first, grad)
        flat.index_add_(0, second, grad)
        return buffer, None, None, None


def stack_models(models: list[nn.Module]) -> StackedModel:
    """Return the fastest stacked form available for the models' architecture."""
    if isinstance(models[0], ModAddMLP):
        return StackedModAddMLP(models)
    return StackedVmapModel(models)
