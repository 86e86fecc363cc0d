"""The RL training loop: each epoch samples, rewards, computes advantages and likelihoods, takes the
loss, steps, and logs one line. Deterministic under `train.seed` (every draw is seeded by (seed, epoch)),
so an epoch run from a checkpoint gives the same weights as one run straight through."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from contextlib import contextmanager

from tqdm import tqdm

from elborl import checkpoint, seeding
from elborl.config import RewardsConfig, TrainConfig
from elborl.distributed import SINGLE, Ranks
from elborl.rewards.detectors import Detector
from elborl.rewards.geneval import DEFAULT_RULES, Rules
from elborl.rewards.registry import RewardContext, RewardError, RewardMix
from elborl.rollout import Rollout, reward, rollout
from elborl.storage import StorageOptions
from elborl.update import NonFiniteError, make_ema, make_optimizer, update


@contextmanager
def ema_weights(policy, ema):
    """Temporarily load the EMA weights into the trained parameters (what evaluation samples)."""
    params = policy.trainable_parameters()
    ema.store(params)
    ema.copy_to(params)
    try:
        yield policy
    finally:
        ema.restore(params)


def epoch_line(epoch: int, epochs: int, m: dict) -> str:
    """The one log line of an epoch."""
    test = f" test {m['test.overall']:.3f}" if "test.overall" in m else ""
    return (f"epoch {epoch + 1}/{epochs}: reward {m['reward_mean']:.3f} strict {m['strict']:.3f}{test} "
            f"loss {m['loss']:.4f} kl {m['kl']:.2e} |l| {m['abs_log_ratio']:.2e} grad {m['grad_norm']:.3f} "
            f"({m['rollout_s']:.1f}s + {m['update_s']:.1f}s)")  # fmt: skip


class Trainer:
    """The live state of an RL run: policy, optimizer, EMA and the optimizer-step counter.

    Args:
        policy: A `Policy` (its `current` weights are trained, `old` samples, `ref` anchors the KL).
        rows: Train prompts (GenEval metadata).
        detector: GenEval's detector (the GenEval rewards and the test evaluation).
        cfg: The `train` params section (`cfg.reward` chooses the reward or mix).
        rules: GenEval options.
        rewards: The `rewards` params section (each reward's weights and settings).
        ranks: This process's rank in a multi-process update (`elborl.distributed.from_env`): every
            rank builds the same trainer and runs `epoch` in step with the others.
    """

    def __init__(self, policy, rows: list[dict], detector: Detector, cfg: TrainConfig, rules: Rules = DEFAULT_RULES,
                 rewards: RewardsConfig | None = None, ranks: Ranks = SINGLE):  # fmt: skip
        self.policy, self.rows, self.detector, self.cfg, self.rules = policy, rows, detector, cfg, rules
        self.ranks = ranks
        if ranks.world > 1:
            ranks.shard(cfg.prompts_per_epoch * cfg.group_size, cfg.optimizer_steps)  # the batch must split evenly
            policy.distribute(ranks.wrap)
        self.reward = RewardMix(cfg.reward, RewardContext(rewards or RewardsConfig(), detector, rules))
        params = policy.trainable_parameters()
        self.optimizer, self.ema = make_optimizer(params, cfg), make_ema(params, cfg)
        self.step = 0  # optimizer steps taken
        self.epochs_done = 0

    def epoch(self, epoch: int, sample: Callable[[int], Rollout] | None = None) -> dict:
        """One epoch: rollout -> reward -> update. Returns its metrics (with timings).

        Args:
            epoch: The epoch (the trainer must have completed the ones before it).
            sample: Returns the epoch's rewarded rollout when it is sampled elsewhere (shard tasks on
                workers, `pipeline.shards`); default: sampled and rewarded here.
        """
        if epoch != self.epochs_done:
            raise RuntimeError(f"epoch {epoch} asked of a trainer that has completed {self.epochs_done}")
        cfg, start = self.cfg, time.perf_counter()
        try:
            batch = sample(epoch) if sample else self._rewarded(rollout(self.policy, self.rows, cfg, epoch, self.ranks))
            t_rollout = time.perf_counter() - start
            gens = seeding.sample_generators((cfg.seed, epoch, seeding.ELBO_DRAWS), batch.index)
            metrics = update(self.policy, self.optimizer, self.ema, batch, cfg, self.step, gens, self.ranks)
        except (RewardError, NonFiniteError) as err:  # nothing of this epoch is kept or checkpointed
            raise type(err)(f"epoch {epoch + 1}: {err}") from err
        self.step, self.epochs_done = metrics["step"], epoch + 1
        metrics.update(epoch=epoch, images=batch.size, rollout_s=t_rollout,
                       update_s=time.perf_counter() - start - t_rollout, reward_s=batch.reward_s)  # fmt: skip
        if len(batch.components) > 1:  # each component's mean beside the total (equal shards: mean of means)
            metrics.update({f"reward.{name}": mean for name, mean in self.ranks.mean(batch.components).items()})
        return metrics

    def _rewarded(self, batch):
        """`reward` on this rank's shard; a reward that fails on any rank stops every rank here."""
        failed = None
        try:
            batch = reward(batch, self.reward)
        except RewardError as err:
            failed = err
        if self.ranks.any(failed is not None):
            raise failed or RewardError("a reward failed on another rank (its log says which)")
        return batch

    def save(self, url: str, options: StorageOptions | None = None) -> str:
        """Checkpoint after `epochs_done` epochs at `url`; returns the checkpoint's digest."""
        state = {"epochs_done": self.epochs_done, "step": self.step}
        return checkpoint.save(url, self.policy, self.optimizer, self.ema, state, options)

    def load(self, url: str, options: StorageOptions | None = None) -> dict:
        """Continue from a checkpoint written by `save`."""
        state = checkpoint.load(url, self.policy, self.optimizer, self.ema, options)
        self.epochs_done, self.step = state["epochs_done"], state["step"]
        return state


def fit(
    trainer: Trainer,
    epochs: int,
    run_epoch: Callable[[int], dict] | None = None,
    after_epoch: Callable[[int, dict], None] | None = None,
    stop: Callable[[int, dict], bool] | None = None,
    log: Callable[[str], None] | None = print,
) -> list[dict]:
    """The epoch loop, the one every caller runs (the pipeline's flow, the benchmarks, in-memory runs):
    for each epoch after the trainer's last, rollout -> reward -> update, one log line, then the
    caller's hook, until `epochs` or `stop`.

    Args:
        trainer: The live run (`trainer.epochs_done` epochs behind it).
        epochs: Total epochs of the run.
        run_epoch: Runs one epoch and returns its metrics (default `trainer.epoch`; the pipeline's
            flow runs it as a cached, checkpointed Prefect task).
        after_epoch: Called with (epoch, metrics) after each epoch (evaluation, bookkeeping).
        stop: Called with (epoch, metrics) after `after_epoch`; True ends the run there.
        log: Receives each epoch's line (None: silent).

    Returns:
        The metrics of the epochs run, in order.
    """
    history = []
    first = trainer.epochs_done
    for epoch in tqdm(range(first, epochs), desc="train", unit="epoch", disable=not sys.stderr.isatty()):
        metrics = (run_epoch or trainer.epoch)(epoch)
        history.append(metrics)
        if log:
            log(epoch_line(epoch, epochs, metrics))
        if after_epoch:
            after_epoch(epoch, metrics)
        if stop and stop(epoch, metrics):
            break
    return history
