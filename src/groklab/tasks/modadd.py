"""Modular addition: every pair (a, b) with 0 <= a, b < P, target (a + b) mod P."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class ModAddData:
    """The seeded train/test split of the full addition table."""

    train_inputs: torch.Tensor  # n_train 2, int64 pairs (a, b)
    train_targets: torch.Tensor  # n_train
    test_inputs: torch.Tensor  # n_test 2
    test_targets: torch.Tensor  # n_test


def addition_table(p: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Return all P*P pairs, shape (P*P, 2), in row-major order, and their sums mod P."""
    if p < 2:
        raise ValueError(f"invalid modulus p={p}: use p >= 2")
    a, b = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    pairs = torch.stack([a.flatten(), b.flatten()], dim=1)
    return pairs, (pairs[:, 0] + pairs[:, 1]) % p


def split_table(p: int, train_fraction: float, seed: int) -> ModAddData:
    """Split the table at random: round(train_fraction * P*P) pairs go to training."""
    if not 0 < train_fraction < 1:
        raise ValueError(
            f"invalid train_fraction {train_fraction}: use a value in (0, 1)"
        )
    pairs, targets = addition_table(p)
    n_train = round(train_fraction * len(pairs))
    if not 0 < n_train < len(pairs):
        raise ValueError(
            f"train_fraction {train_fraction} leaves an empty split for p={p}: "
            "raise p or move train_fraction towards 0.5"
        )
    order = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(seed))
    train, test = order[:n_train], order[n_train:]
    return ModAddData(pairs[train], targets[train], pairs[test], targets[test])
