"""One RL epoch of the shipped tiny base on this process's rank, for tests/test_distributed.py: run it
plainly (one process) or under `accelerate launch` (N ranks); rank 0 writes the trained weights, the
whole batch's advantages and the metrics to OUT.

    python tests/helpers/ddp_update.py OUT
    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 tests/helpers/ddp_update.py OUT
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from elborl import update as update_module  # noqa: E402
from elborl.config import Params, route_overrides  # noqa: E402
from elborl.distributed import from_env  # noqa: E402
from elborl.world.prompts import make_prompt_sets  # noqa: E402
from elborl.world.spec import WorldSpec  # noqa: E402
from stages.train import build_trainer  # noqa: E402

# 3 prompts x 4 images in one optimizer step: on 2 ranks, rank 0 holds group 0 and half of group 1.
TRAIN = {"prompts_per_epoch": 3, "group_size": 4, "optimizer_steps": 1, "micro_batch": 16, "elbo_k": 3,
         "lr": 1e-3, "steps": 6}  # fmt: skip


def main(out: Path) -> None:
    ranks = from_env()
    params = Params.model_validate(route_overrides(TRAIN))
    rows = make_prompt_sets(WorldSpec.from_config(params.world), params.prompts)[0]
    trainer = build_trainer(params, ROOT / "assets" / "base", rows, ranks=ranks)
    seen = {}
    compute = update_module.compute_advantages

    def recording(rewards, groups, cfg):  # the whole batch's advantages, as the update computed them
        seen["adv"], seen["groups"] = compute(rewards, groups, cfg), groups
        return seen["adv"]

    update_module.compute_advantages = recording
    metrics = trainer.epoch(0)
    if ranks.is_main:
        out.mkdir(parents=True, exist_ok=True)
        weights = {f"w{i}": p.detach().contiguous() for i, p in enumerate(trainer.policy.trainable_parameters())}
        save_file(weights, out / "weights.safetensors")
        save_file({"adv": seen["adv"].contiguous(), "groups": seen["groups"].contiguous()}, out / "adv.safetensors")
        shard = trainer.ranks.shard(12, 1) if ranks.world > 1 else torch.arange(12)
        (out / "metrics.json").write_text(json.dumps({**metrics, "world": ranks.world, "shard0": shard.tolist()}))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
