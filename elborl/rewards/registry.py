"""The training rewards, chosen by name: one registry, weighted mixes, one error per failing reward.

A reward is built once per process by its factory from a `RewardContext` (the `rewards` params
section, the GenEval detector and rules) and is then a function
    (images uint8 (B, H, W, 3), GenEval-style metadata rows with at least `prompt`) -> `RewardResult`
with float scores (B,) and optional per-sample details. Adding a reward = one function, one line in
`REWARDS`, one test. `train.reward` is a name or a weighted mapping; `RewardMix` computes the total
as the plain weighted sum of raw scores (the study's multi-reward setting) and keeps each component.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from elborl.errors import UserError

if TYPE_CHECKING:
    from elborl.config import RewardsConfig
    from elborl.rewards.detectors import Detector
    from elborl.rewards.geneval import Rules


class RewardError(UserError):
    """A reward failed (missing weights, endpoint down, non-finite scores): the epoch stops before
    its update, and the message names the reward."""


@dataclass
class RewardResult:
    """Scores of a batch.

    Args:
        scores: One float per image, (B,).
        details: Optional per-image details (e.g. GenEval's strict verdict under "correct").
        seconds: Wall time the reward took (filled by `RewardMix`: images/s per reward).
    """

    scores: np.ndarray
    details: list[dict] | None = None
    seconds: float = 0.0


RewardFn = Callable[[np.ndarray, list[dict]], RewardResult]


@dataclass
class RewardContext:
    """What reward factories may need.

    Args:
        settings: The `rewards` params section.
        detector: The GenEval detector (`geneval.detector`), for the GenEval rewards.
        rules: GenEval's options.
    """

    settings: RewardsConfig
    detector: Detector | None = None
    rules: Rules | None = None
    cache: dict[str, Any] = field(default_factory=dict)  # models shared by rewards (e.g. one CLIP)


def _lazy(module: str, name: str) -> Callable[[RewardContext], RewardFn]:
    """A factory that imports its module only when the reward is used (model libraries are heavy)."""

    def factory(ctx: RewardContext) -> RewardFn:
        return getattr(importlib.import_module(module), name)(ctx)

    return factory


#: name -> factory(context) -> reward function.
REWARDS: dict[str, Callable[[RewardContext], RewardFn]] = {
    "geneval": _lazy("elborl.rewards.geneval_reward", "geneval_partial"),
    "geneval_strict": _lazy("elborl.rewards.geneval_reward", "geneval_strict"),
    "pickscore": _lazy("elborl.rewards.clip_rewards", "pickscore"),
    "clipscore": _lazy("elborl.rewards.clip_rewards", "clipscore"),
    "hpsv2": _lazy("elborl.rewards.hps", "hpsv2"),
    "aesthetic": _lazy("elborl.rewards.clip_rewards", "aesthetic"),
    "ocr": _lazy("elborl.rewards.ocr", "ocr"),
    "unifiedreward": _lazy("elborl.rewards.unifiedreward", "unifiedreward"),
}
#: Earlier names of the two GenEval rewards.
ALIASES = {"partial": "geneval", "strict": "geneval_strict"}


def reward_weights(spec: str | dict[str, float]) -> dict[str, float]:
    """`train.reward` as {registered name: weight} (a name alone has weight 1).

    Raises:
        ValueError: An unknown name (the message lists the known ones) or a non-finite weight.
    """
    weights = {spec: 1.0} if isinstance(spec, str) else dict(spec)
    if not weights:
        raise ValueError("reward: expected a name or a non-empty {name: weight} mapping, found {}")
    out = {}
    for name, w in weights.items():
        key = ALIASES.get(name, name)
        if key not in REWARDS:
            known = ", ".join([*REWARDS, *ALIASES])
            raise ValueError(f"reward: expected one of {known}, found {name!r}")
        if not np.isfinite(w):
            raise ValueError(f"reward: expected a finite weight for {name!r}, found {w}")
        out[key] = out.get(key, 0.0) + float(w)
    return out


def check_reward_spec(spec: str | dict[str, float]) -> None:
    """Validate `train.reward` (params validation calls this)."""
    reward_weights(spec)


class RewardMix:
    """The training reward: total = sum_k w_k r_k over the configured rewards, each built once.

    Args:
        spec: `train.reward` (a name or {name: weight}).
        ctx: What the factories need.
    """

    def __init__(self, spec: str | dict[str, float], ctx: RewardContext):
        self.weights = reward_weights(spec)
        self.fns: dict[str, RewardFn] = {}
        for name in self.weights:
            try:
                self.fns[name] = REWARDS[name](ctx)
            except UserError as err:
                raise RewardError(f"reward {name!r}: {err}") from None

    def __call__(self, images: np.ndarray, metadata: list[dict]) -> tuple[np.ndarray, dict[str, RewardResult]]:
        """(total (B,), {name: its result}) for a batch; any failure raises `RewardError` naming the reward."""
        parts: dict[str, RewardResult] = {}
        total = np.zeros(len(images))
        for name, fn in self.fns.items():
            start = time.perf_counter()
            try:
                result = fn(images, metadata)
            except RewardError:
                raise
            except Exception as err:  # a reward backend that fails: one error naming it, never a silent 0
                raise RewardError(f"reward {name!r} failed: {type(err).__name__}: {err}") from err
            scores = np.asarray(result.scores, dtype=np.float64)
            if scores.shape != (len(images),):
                raise RewardError(f"reward {name!r}: expected {len(images)} scores, found shape {scores.shape}")
            if not np.isfinite(scores).all():
                bad = int((~np.isfinite(scores)).sum())
                raise RewardError(f"reward {name!r}: {bad} of {len(scores)} scores are not finite (NaN or inf)")
            result.scores = scores
            result.seconds = time.perf_counter() - start
            parts[name] = result
            total += self.weights[name] * scores
        return total, parts
