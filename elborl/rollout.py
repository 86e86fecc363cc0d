"""One epoch's data: draw prompts, sample them with the sampling policy (old weights), reward them.

A rollout is just (prompt, seed, x0) for the ELBO estimator; the trajectory estimator also keeps the
SDE states. Every random draw of epoch e comes from generators seeded with (seed, e).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from elborl.config import TrainConfig
from elborl.models.generate import image_seed, initial_noise, to_uint8
from elborl.rewards.registry import RewardMix
from elborl.sampling import guided, sample
from elborl.world.prompts import draw_tag_balanced


@dataclass
class Rollout:
    """A batch of B = P x G samples.

    Args:
        metadata: GenEval metadata per sample (B).
        groups: Prompt-group id per sample, (B,).
        x0: Final samples in the sampling space, (B, ...).
        grid: The sampler's timestep grid, (N + 1,).
        states: SDE states x_0 ... x_N (trajectory estimator only).
        images: uint8 (B, H, W, 3).
        rewards: Training reward per sample, (B,) (filled by `reward`).
        correct: Strict GenEval verdict per sample, (B,) (None without a GenEval reward).
        components: Mean of each reward of the mix.
        reward_s: Seconds the rewards took.
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

    @property
    def prompts(self) -> list[str]:
        return [m["prompt"] for m in self.metadata]


@torch.no_grad()
def rollout(policy, rows: list[dict], cfg: TrainConfig, epoch: int) -> Rollout:
    """Sample P prompts x G images with the sampling policy (`old` weights).

    Args:
        policy: A `Policy`.
        rows: Train prompts.
        cfg: The `train` params section.
        epoch: Epoch index (seeds the draws).
    """
    rng = np.random.default_rng([cfg.seed, epoch])
    prompts = draw_tag_balanced(rows, cfg.prompts_per_epoch, rng)
    metadata = [m for m in prompts for _ in range(cfg.group_size)]
    groups = torch.arange(len(prompts)).repeat_interleave(cfg.group_size)  # (B,)
    texts = [m["prompt"] for m in metadata]
    cond = policy.encode(texts)
    uncond = policy.encode([""] * len(texts)) if cfg.cfg_scale != 1.0 else None
    velocity = guided(
        lambda x, t: policy.velocity(x, t, cond, "old"),
        (lambda x, t: policy.velocity(x, t, uncond, "old")) if uncond is not None else None,
        cfg.cfg_scale,
    )
    device = policy.device
    noise = initial_noise([image_seed(cfg.seed, epoch, i) for i in range(len(texts))], policy.sample_shape).to(device)
    gen = torch.Generator(device=device).manual_seed(int(rng.integers(2**62)))
    out = sample(velocity, noise, cfg.sampler, cfg.steps, cfg.shift, cfg.noise_level, generator=gen,
                 return_trajectory=cfg.estimator == "trajectory")  # fmt: skip
    images = to_uint8(policy.from_sample_space(out.x0))
    states = out.states if cfg.estimator == "trajectory" else None
    return Rollout(metadata, groups, out.x0, out.timesteps, states, images)


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
