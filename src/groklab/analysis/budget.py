"""Memory estimates that size the vectorised chunks of the analyses.

The estimates count the tensors that a chunk creates, not the allocator's
overhead, so a budget is a target rather than a hard limit.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.func import functional_call

MIN_MEMORY_MB = 16


def budget_bytes(memory_mb: int) -> int:
    """Convert a memory budget in MiB to bytes, rejecting budgets below 16 MiB."""
    if memory_mb < MIN_MEMORY_MB:
        raise ValueError(
            f"memory_mb {memory_mb} is invalid: use an integer >= {MIN_MEMORY_MB}"
        )
    return int(memory_mb) * 2**20


def activation_numel(
    model: nn.Module, params: dict[str, Tensor], single_input: Tensor
) -> tuple[int, int]:
    """Count the numbers that one input creates in a forward pass, and its outputs.

    Returns (activations, outputs): the summed sizes of the outputs of every
    leaf module, and the size of the model's output, for ``single_input`` of
    batch size 1. Functional code between modules (views, flattening) is not
    counted.
    """
    sizes: list[int] = []

    def record(_module: nn.Module, _inputs: object, output: object) -> None:
        if isinstance(output, Tensor):
            sizes.append(output.numel())

    leaves = [module for module in model.modules() if not list(module.children())]
    handles = [leaf.register_forward_hook(record) for leaf in leaves]
    try:
        with torch.no_grad():
            output = functional_call(model, params, (single_input,))
    finally:
        for handle in handles:
            handle.remove()
    return sum(sizes), output.numel()
