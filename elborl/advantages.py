"""Advantages per prompt group (docs/ARCHITECTURE.md section 2.4)."""

from __future__ import annotations

import torch


def group_means(rewards: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """Each sample's group mean reward, (B,). `groups` (B,) holds integer group ids."""
    _, inverse = torch.unique(groups.to(rewards.device), return_inverse=True)  # ids follow the rewards' device
    sums = torch.zeros(int(inverse.max()) + 1, dtype=rewards.dtype, device=rewards.device)
    sums.index_add_(0, inverse, rewards)
    counts = torch.bincount(inverse).to(rewards.dtype)
    return (sums / counts)[inverse]


def exact_advantages(rewards: torch.Tensor, groups: torch.Tensor, adv_scale: float = 0.1) -> torch.Tensor:
    """A = adv_scale (r - mean_group r): no std normalisation (the reference default)."""
    return adv_scale * (rewards - group_means(rewards, groups))


def standard_advantages(rewards: torch.Tensor, groups: torch.Tensor, per_group_std: bool = False) -> torch.Tensor:
    """A = (r - mean_group r) / (std + 1e-4), std over the WHOLE batch (population, ddof 0) as FlowGRPO
    and the reference code do, or per group as an option. Not clamped here."""
    centered = rewards - group_means(rewards, groups)
    std = group_means(centered**2, groups).sqrt() if per_group_std else rewards.std(unbiased=False)
    return centered / (std + 1e-4)


ADVANTAGES = {"exact": exact_advantages, "standard": standard_advantages}
