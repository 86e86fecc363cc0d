"""One epoch's data: draw prompts, sample them with the sampling policy (old weights), reward them.

A rollout is just (prompt, seed, x0) for the ELBO estimator; the trajectory estimator also keeps the
SDE states. Every random draw of epoch e comes from generators seeded with (seed, e), per sample where a
sample has draws of its own (noise, SDE noise), so a rank or worker that samples a shard of the batch
gets the same samples as an unsharded rollout.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from elborl import seeding
from elborl.config import TrainConfig
from elborl.distributed import SINGLE, Ranks
from elborl.models.generate import image_seed, initial_noise, to_uint8
from elborl.rewards.registry import RewardMix
from elborl.sampling import guided, sample
from elborl.world.prompts import draw_tag_balanced


@dataclass
class Rollout:
    """A batch of B = P x G samples, or the shard b of it that one rank holds.

    Args:
        metadata: GenEval metadata per sample (b).
        groups: Prompt-group id per sample, (b,).
        x0: Final samples in the sampling space, (B, ...).
        grid: The sampler's timestep grid, (N + 1,).
        states: SDE states x_0 ... x_N (trajectory estimator only).
        images: uint8 (B, H, W, 3).
        rewards: Training reward per sample, (B,) (filled by `reward`).
        correct: Strict GenEval verdict per sample, (B,) (None without a GenEval reward).
        components: Mean of each reward of the mix.
        reward_s: Seconds the rewards took.
        index: Each sample's index in the whole batch, (b,).
        size: B, the whole batch (all ranks).
    """

    metadata: list[dict]
    groups: torch.Tensor
    x0: torch.Tensor
    grid: torch.Tensor
    states: list[torch.Tensor] | None
    images: np.ndarray
    rewards: torch.Tensor | None = None
    correct: torch.Tensor | None = None
    components: dict[str, float] | None = None
    reward_s: float = 0.0
    index: torch.Tensor | None = None
    size: int = 0

    def __post_init__(self):
        if self.index is None:  # the whole batch
            self.index, self.size = torch.arange(len(self.metadata)), len(self.metadata)

    @property
    def prompts(self) -> list[str]:
        return [m["prompt"] for m in self.metadata]


def epoch_batch(rows: list[dict], cfg: TrainConfig, epoch: int) -> tuple[list[dict], torch.Tensor]:
    """The whole batch of an epoch, the same on every rank: P prompts drawn from (seed, epoch), each
    repeated G times. Returns (metadata (B), group ids (B,))."""
    prompts = draw_tag_balanced(rows, cfg.prompts_per_epoch, np.random.default_rng([cfg.seed, epoch]), cfg.tag_weights)
    metadata = [m for m in prompts for _ in range(cfg.group_size)]
    return metadata, torch.arange(len(prompts)).repeat_interleave(cfg.group_size)  # (B,)


def rollout(policy, rows: list[dict], cfg: TrainConfig, epoch: int, ranks: Ranks = SINGLE) -> Rollout:
    """Sample P prompts x G images with the sampling policy (`old` weights): this rank's shard.

    Args:
        policy: A `Policy`.
        rows: Train prompts.
        cfg: The `train` params section.
        epoch: Epoch index (seeds the draws).
        ranks: This process's rank (its shard of the batch, `Ranks.shard`).
    """
    metadata, groups = epoch_batch(rows, cfg, epoch)
    size = len(metadata)
    index = ranks.shard(size, cfg.optimizer_steps) if ranks.world > 1 else torch.arange(size)
    return sample_shard(policy, [metadata[i] for i in index.tolist()], groups[index], index, size, cfg, epoch)


@torch.no_grad()
def sample_shard(policy, metadata: list[dict], groups: torch.Tensor, index: torch.Tensor, size: int,
                 cfg: TrainConfig, epoch: int) -> Rollout:  # fmt: skip
    """Sample the samples `index` (b,) of epoch `epoch`'s batch of `size` (a rank's or a worker's shard),
    with their metadata (b) and group ids (b,)."""
    texts = [m["prompt"] for m in metadata]
    cond = policy.encode(texts)
    uncond = policy.encode([""] * len(texts)) if cfg.cfg_scale != 1.0 else None
    velocity = guided(
        lambda x, t: policy.velocity(x, t, cond, "old"),
        (lambda x, t: policy.velocity(x, t, uncond, "old")) if uncond is not None else None,
        cfg.cfg_scale,
    )
    device = policy.device
    noise = initial_noise([image_seed(cfg.seed, epoch, i) for i in index.tolist()], policy.sample_shape).to(device)
    gens = seeding.sample_generators((cfg.seed, epoch, seeding.SDE_NOISE), index)  # flow_sde's noise, per sample
    out = sample(velocity, noise, cfg.sampler, cfg.steps, cfg.shift, cfg.noise_level, generator=gens,
                 return_trajectory=cfg.estimator == "trajectory")  # fmt: skip
    images = to_uint8(policy.from_sample_space(out.x0))
    states = out.states if cfg.estimator == "trajectory" else None
    return Rollout(metadata, groups, out.x0, out.timesteps, states, images, index=index, size=size)


def reward(batch: Rollout, mix: RewardMix) -> Rollout:
    """The training reward of each image (`train.reward`: one reward or a weighted mix), each component's
    mean in `batch.components`, and GenEval's strict verdict where a GenEval reward is in the mix.

    Raises:
        RewardError: A reward failed or gave a non-finite score (before any update uses the batch).
    """
    total, parts = mix(batch.images, batch.metadata)
    batch.rewards = torch.tensor(total, dtype=torch.float32, device=batch.x0.device)
    batch.components = {name: float(r.scores.mean()) for name, r in parts.items()}
    batch.reward_s = sum(r.seconds for r in parts.values())
    verdicts = next((r.details for r in parts.values() if r.details and "correct" in r.details[0]), None)
    batch.correct = torch.tensor([d["correct"] for d in verdicts]) if verdicts else None
    return batch
