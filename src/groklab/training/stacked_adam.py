"""Adam for stacked parameters, with a learning rate and weight decay per member.

The update is that of ``torch.optim.Adam(lr=..., weight_decay=...)`` with
betas (0.9, 0.999) and eps 1e-8: L2 weight decay is added to the gradient,
the moments are updated with lerp and addcmul, and both are bias-corrected.
"""

from __future__ import annotations

import functools
from collections import defaultdict

import torch

BETA1, BETA2, EPS = 0.9, 0.999, 1e-8


@functools.cache
def fused_adam_available() -> bool:
    """Return True when this torch build has a fused Adam kernel for CPU tensors."""
    if not hasattr(torch, "_fused_adam_"):
        return False
    one = [torch.zeros(1)]
    try:
        torch._fused_adam_(
            one, [torch.zeros(1)], [torch.zeros(1)], [torch.zeros(1)], [], [torch.ones(())],
            lr=1e-3, beta1=BETA1, beta2=BETA2, weight_decay=0.0, eps=EPS,
            amsgrad=False, maximize=False,
        )
    except (RuntimeError, NotImplementedError):
        return False
    return True


class StackedAdam:
    """Adam state for stacked parameters (members along dimension 0).

    All members take their steps together, so they share one step count.
    Members with equal (lr, weight_decay) are updated by one call of torch's
    fused CPU kernel (a single pass over memory) when the build has it, and
    by the same formula in separate elementwise operations otherwise.
    """

    def __init__(
        self,
        params: dict[str, torch.Tensor],
        lrs: list[float],
        weight_decays: list[float],
        fused: bool | None = None,
    ):
        self.lrs = list(lrs)
        self.weight_decays = list(weight_decays)
        self.exp_avg = {n: torch.zeros_like(p, requires_grad=False) for n, p in params.items()}
        self.exp_avg_sq = {n: torch.zeros_like(p, requires_grad=False) for n, p in params.items()}
        self.steps = 0
        self.fused = fused_adam_available() if fused is None else fused

    @torch.no_grad()
    def step(self, params: dict[str, torch.Tensor], grads: dict[str, torch.Tensor]) -> None:
        """Update ``params`` in place with ``grads`` (both keyed like the state)."""
        self.steps += 1
        if self.fused:
            self._fused_step(params, grads)
        else:
            self._elementwise_step(params, grads)

    def _groups(self) -> list[tuple[float, float, list[int]]]:
        members = defaultdict(list)
        for i, key in enumerate(zip(self.lrs, self.weight_decays)):
            members[key].append(i)
        return [(lr, wd, indices) for (lr, wd), indices in members.items()]

    def _fused_step(self, params, grads) -> None:
        step = torch.tensor(float(self.steps))
        names = list(params)
        # The fused kernel walks raw memory, so a strided gradient (autograd
        # returns some transposed) must be copied to a contiguous one first.
        grads = {name: grad.contiguous() for name, grad in grads.items()}
        groups = self._groups()
        for lr, weight_decay, indices in groups:
            if len(groups) == 1:
                select = [lambda t: t]
            else:
                select = [lambda t, i=i: t[i] for i in indices]
            lists = [
                [pick(source[name]) for name in names for pick in select]
                for source in (params, grads, self.exp_avg, self.exp_avg_sq)
            ]
            torch._fused_adam_(
                *lists, [], [step] * len(lists[0]),
                lr=lr, beta1=BETA1, beta2=BETA2, weight_decay=weight_decay, eps=EPS,
                amsgrad=False, maximize=False,
            )

    def _elementwise_step(self, params, grads) -> None:
        step = self.steps
        bias_correction1 = 1 - BETA1**step
        bias_correction2_sqrt = (1 - BETA2**step) ** 0.5
        # Per-member scalars as float32 tensors, the precision torch.optim.Adam's
        # scalar arguments take inside its float32 kernels.
        step_size = torch.tensor([-lr / bias_correction1 for lr in self.lrs])
        decay = torch.tensor(self.weight_decays)
        for name, param in params.items():
            shape = (-1,) + (1,) * (param.dim() - 1)
            grad = torch.addcmul(grads[name], param, decay.view(shape))
            exp_avg, exp_avg_sq = self.exp_avg[name], self.exp_avg_sq[name]
            exp_avg.lerp_(grad, 1 - BETA1)
            exp_avg_sq.mul_(BETA2).addcmul_(grad, grad, value=1 - BETA2)
            denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(EPS)
            param.add_(torch.mul(step_size.view(shape), exp_avg).div_(denom))

    def select(self, keep: list[int]) -> None:
        """Keep only the members at the indices ``keep``, in that order."""
        index = torch.tensor(keep, dtype=torch.long)
        self.exp_avg = {n: t.index_select(0, index) for n, t in self.exp_avg.items()}
        self.exp_avg_sq = {n: t.index_select(0, index) for n, t in self.exp_avg_sq.items()}
        self.lrs = [self.lrs[i] for i in keep]
        self.weight_decays = [self.weight_decays[i] for i in keep]

    def member_tensors(self, member: int, model) -> dict[str, torch.Tensor]:
        """Return one member's state with the names and shapes of :func:`pack_state`.

        ``model`` is the StackedModel whose layout the state shares. Before
        the first step there is no state, as in torch.optim.Adam.
        """
        if self.steps == 0:
            return {}
        tensors = {}
        for name in self.exp_avg:
            tensors[f"optim/{name}/step"] = torch.tensor([float(self.steps)])
            for key, state in (("exp_avg", self.exp_avg), ("exp_avg_sq", self.exp_avg_sq)):
                value = model.canonical(name, state[name][member]).contiguous()
                tensors[f"optim/{name}/{key}"] = value.reshape(-1)
        return tensors

    def load_member(self, member: int, tensors: dict[str, torch.Tensor], model) -> None:
        """Load one member's Adam entries of :func:`pack_state` into the stacked state.

        Entries that are absent (a checkpoint of epoch 0) stay zero. The
        caller sets ``steps``, which every member shares.
        """
        shapes = {name: p.shape for name, p in model.template.named_parameters()}
        for key, state in (("exp_avg", self.exp_avg), ("exp_avg_sq", self.exp_avg_sq)):
            for name, stacked in state.items():
                value = tensors.get(f"optim/{name}/{key}")
                if value is not None:
                    internal = model.to_internal(name, value.view(1, *shapes[name]))
                    stacked[member].copy_(internal[0])
