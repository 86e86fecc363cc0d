"""The GenEval rewards over the configured detector (`geneval.detector`: shapes or mask2former).

- `geneval` (partial credit, the default training reward): `elborl.rewards.geneval.partial_credit`,
  the mean over the prompt's checks (each include clause's count, colour and position, each exclude
  clause), 1.0 exactly when the strict verdict is correct. Where it differs from the reference code's
  `evaluate_reward` (jaemoo-choi/rethinking-diffusion-rl; FlowGRPO's geneval scorer computes the same):
  that one scores each include clause by 1 - |count - found| / count over ALL detections of the class
  (so it can go negative and rewards over-drawing nothing but penalises it symmetrically), ignores
  exclude clauses, and gives colour and position credit only through the strict verdict. Ours counts
  the top-`count` detections the strict rule looks at, credits colour and position per object, and
  keeps exclude clauses, so its maximum is exactly the strict metric's (docs/ARCHITECTURE.md section 7).
- `geneval_strict`: the strict verdict as 0 / 1 (the metric itself).
Both put the strict verdict in each image's details ("correct"), which the loop logs as `strict`.
"""

from __future__ import annotations

import numpy as np

from elborl.errors import UserError
from elborl.rewards.detectors import detect_all
from elborl.rewards.geneval import TAGS, evaluate, partial_credit, select
from elborl.rewards.registry import RewardContext, RewardFn, RewardResult


def _geneval(ctx: RewardContext, strict: bool) -> RewardFn:
    if ctx.detector is None or ctx.rules is None:
        raise UserError("the GenEval rewards need a detector (geneval.detector) and its rules")
    detector, rules = ctx.detector, ctx.rules

    def reward(images: np.ndarray, metadata: list[dict]) -> RewardResult:
        other = [m["prompt"] for m in metadata if m["tag"] not in TAGS]
        if other:  # e.g. ocr prompts: no clauses, so every image would be "correct"
            raise UserError(f"a prompt without GenEval clauses cannot be judged by GenEval: {other[0]!r}")
        scores, details = [], []
        for meta, found in zip(metadata, detect_all(detector, images), strict=True):
            detected = select(found, meta["tag"], rules)
            correct, _ = evaluate(detected, meta, rules)
            scores.append(float(correct) if strict else partial_credit(detected, meta, rules))
            details.append({"correct": correct})
        return RewardResult(np.asarray(scores), details)

    return reward


def geneval_partial(ctx: RewardContext) -> RewardFn:
    """GenEval partial credit in [0, 1] (see the module docstring)."""
    return _geneval(ctx, strict=False)


def geneval_strict(ctx: RewardContext) -> RewardFn:
    """GenEval's strict verdict, 0 or 1."""
    return _geneval(ctx, strict=True)
