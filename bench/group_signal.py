"""Which prompts can group-relative RL learn from? Per tag, the share of prompt groups that carry signal.

An advantage is a reward minus its group's mean: a group whose G images all earn the same reward gives
every sample A = 0 and teaches nothing. For a model folder (the shipped base, or a trained model), this
samples G images (dpm2, CFG off, the train stage's steps) for P train prompts of each tag and prints,
per tag: the strict accuracy, the mean partial-credit reward, the share of groups whose rewards differ
at all, the share with both a correct and a wrong image, and the mean within-group reward std.

    python bench/group_signal.py                                  # the shipped base
    python bench/group_signal.py --model data/train/model         # after `make run`
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python bench/group_signal.py` from anywhere

from elborl.config import Params
from elborl.models.factory import sampling_policy
from elborl.models.generate import generate, image_seed
from elborl.rewards.detectors import build_detector
from elborl.rewards.geneval import Rules, evaluate, partial_credit, select
from elborl.world.prompts import TAGS, make_prompt_sets
from elborl.world.spec import WorldSpec


def group_signal(rewards: np.ndarray, correct: np.ndarray) -> dict:
    """Signal statistics of groups: rewards and correct are (P, G).

    Returns:
        accuracy, reward (means), spread (share of groups with any reward difference), mixed (share
        with both a correct and a wrong image), std (mean within-group population std of the reward).
    """
    return {
        "accuracy": float(correct.mean()),
        "reward": float(rewards.mean()),
        "spread": float((np.ptp(rewards, axis=1) > 1e-9).mean()),
        "mixed": float((correct.any(1) & ~correct.all(1)).mean()),
        "std": float(rewards.std(axis=1).mean()),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="assets/base", help="model folder (any kind: tiny, SD3, a stage's output)")
    ap.add_argument("--prompts", type=int, default=24, help="train prompts per tag (P)")
    ap.add_argument("--group", type=int, default=8, help="images per prompt (G)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    params = Params()
    spec = WorldSpec.from_config(params.world)
    rows, _ = make_prompt_sets(spec, params.prompts)
    detector = build_detector(params.geneval.detector, spec, params.geneval)
    rules = Rules.from_config(params.geneval)
    model = sampling_policy(args.model, params.model)
    rng = np.random.default_rng(args.seed)
    start = time.perf_counter()
    print(f"{args.model}: {args.prompts} train prompts per tag x {args.group} images, dpm2 {params.train.steps} steps")
    print("\n| tag | accuracy | reward | groups with reward spread | groups right and wrong | within-group std |")
    print("|---|---|---|---|---|---|")
    totals = []
    for tag in TAGS:
        pool = [m for m in rows if m["tag"] == tag]
        metas = [pool[i] for i in rng.choice(len(pool), size=min(args.prompts, len(pool)), replace=False)]
        flat = [m for m in metas for _ in range(args.group)]
        seeds = [image_seed(args.seed, i, j) for i in range(len(metas)) for j in range(args.group)]
        with torch.inference_mode():
            images = generate(model, [m["prompt"] for m in flat], seeds, "dpm2", params.train.steps, progress=False)
        rewards, correct = [], []
        for meta, image in zip(flat, images, strict=True):
            found = select(detector.detect(image), tag, rules)
            rewards.append(partial_credit(found, meta, rules))
            correct.append(evaluate(found, meta, rules)[0])
        s = group_signal(np.reshape(rewards, (len(metas), -1)), np.reshape(correct, (len(metas), -1)))
        totals.append(s)
        print(f"| {tag} | {s['accuracy']:.2f} | {s['reward']:.2f} | {s['spread']:.2f} | {s['mixed']:.2f} | "
              f"{s['std']:.3f} |")  # fmt: skip
    mean = {k: float(np.mean([t[k] for t in totals])) for k in totals[0]}
    print(f"| mean of tags | {mean['accuracy']:.2f} | {mean['reward']:.2f} | {mean['spread']:.2f} | "
          f"{mean['mixed']:.2f} | {mean['std']:.3f} |")  # fmt: skip
    print(f"\n{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
