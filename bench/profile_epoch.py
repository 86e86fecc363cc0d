"""Where an epoch of the reference (elbo / epg / dpm2, the default train params) spends its time, and
how close each part runs to the machine's matmul rate.

Times one rollout (sampling with the old weights), the reward (detector + GenEval rules) and the
update, and inside the update the forward passes under current / old / ref weights and the backward.
Counts model FLOPs with torch's FlopCounterMode, so each phase's GFLOP/s reads next to a plain
float32 matmul's.

    python bench/profile_epoch.py [--base assets/base] [--repeats 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.throughput import matmul_gflops
from elborl.config import Params
from elborl.rollout import reward, rollout
from elborl.seeding import ELBO_DRAWS, sample_generators
from elborl.update import update
from elborl.world.prompts import make_prompt_sets
from elborl.world.spec import WorldSpec
from stages.train import build_trainer


class Timed:
    """Wraps `policy.velocity` to add wall time and calls per weight set ("current" with grad counts
    its backward separately, measured as the rest of the update)."""

    def __init__(self, policy):
        self.policy, self.inner = policy, policy.velocity
        self.seconds: dict[str, float] = defaultdict(float)
        self.rows: dict[str, int] = defaultdict(int)

    def __call__(self, x, t, cond, weights="current"):
        start = time.perf_counter()
        out = self.inner(x, t, cond, weights)
        self.seconds[weights] += time.perf_counter() - start
        self.rows[weights] += x.shape[0]
        return out


def forward_flops(policy, batch: int = 16) -> float:
    """FLOPs of one velocity forward per image."""
    x = torch.randn(batch, *policy.sample_shape)
    cond = policy.encode(["a photo of a red circle"] * batch)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        policy.velocity(x, torch.full((batch,), 0.5), cond, "current")
    return counter.get_total_flops() / batch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default="assets/base")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    params = Params()
    rows, _ = make_prompt_sets(WorldSpec.from_config(params.world), params.prompts)
    trainer = build_trainer(params, args.base, rows)
    policy, cfg = trainer.policy, trainer.cfg
    flops = forward_flops(policy)
    peak = matmul_gflops()
    timed = Timed(policy)
    policy.velocity = timed  # instance attribute: the rollout and the update call through it
    phases: dict[str, float] = defaultdict(float)
    fwd_s: dict[str, float] = defaultdict(float)  # the update's forwards only
    fwd_rows: dict[str, int] = defaultdict(int)
    images = 0
    for epoch in range(args.repeats):
        start = time.perf_counter()
        batch = rollout(policy, rows, cfg, epoch)
        phases["rollout"] += time.perf_counter() - start
        start = time.perf_counter()
        batch = reward(batch, trainer.reward)
        phases["reward"] += time.perf_counter() - start
        timed.seconds.clear()
        timed.rows.clear()
        start = time.perf_counter()
        gens = sample_generators((cfg.seed, epoch, ELBO_DRAWS), batch.index)
        trainer.step = update(policy, trainer.optimizer, trainer.ema, batch, cfg, trainer.step, gens)["step"]
        phases["update"] += time.perf_counter() - start
        for w in ("current", "old", "ref"):
            fwd_s[w] += timed.seconds[w]
            fwd_rows[w] += timed.rows[w]
        images += len(batch.metadata)
    n, per_epoch = args.repeats, images / args.repeats
    k = max(1, int(0.99 * cfg.steps)) if cfg.elbo_k is None else cfg.elbo_k
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; float32 matmul {peak:.1f} GFLOP/s; "
          f"model forward {flops / 1e6:.1f} MFLOP per image")  # fmt: skip
    print(f"epoch = {cfg.prompts_per_epoch} prompts x {cfg.group_size} images, {cfg.sampler} {cfg.steps} steps, "
          f"{cfg.estimator} K = {k} terms, {cfg.optimizer_steps} optimizer steps; mean of {n} epochs\n")  # fmt: skip
    rollout_s, reward_s, update_s = (phases[p] / n for p in ("rollout", "reward", "update"))
    # the update's model work: every forward, plus current's backward (about 2 forwards' FLOPs)
    update_flops = (sum(fwd_rows.values()) + 2 * fwd_rows["current"]) / n * flops
    rollout_gf = per_epoch * cfg.steps * flops / rollout_s / 1e9
    print("| phase | s / epoch | rate | GFLOP/s | of matmul rate |\n|---|---|---|---|---|")
    print(f"| rollout ({per_epoch:.0f} images) | {rollout_s:.2f} | {per_epoch / rollout_s:.1f} images/s "
          f"| {rollout_gf:.1f} | {rollout_gf / peak:.0%} |")  # fmt: skip
    print(f"| reward (detector + rules) | {reward_s:.2f} | {per_epoch / reward_s:.1f} images/s | - | - |")
    print(f"| update ({per_epoch:.0f} samples) | {update_s:.2f} | {per_epoch / update_s:.1f} samples/s "
          f"| {update_flops / update_s / 1e9:.1f} | {update_flops / update_s / 1e9 / peak:.0%} |")  # fmt: skip
    print(f"| total | {rollout_s + reward_s + update_s:.2f} | | | |\n")
    fwd = {w: fwd_s[w] / n for w in fwd_s}
    print("update (s / epoch): " + ", ".join(f"forward {w} {s:.2f} ({fwd_rows[w] / n / per_epoch:.0f} per sample)"
                                             for w, s in fwd.items())
          + f"; backward, loss and optimizer {update_s - sum(fwd.values()):.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
