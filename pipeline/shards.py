"""An epoch's rollouts and rewards as shard tasks on the train flow's task runner: Dask (prefect-dask) or
Ray (prefect-ray) workers, chosen by the `runner` params section (docs/ARCHITECTURE.md section 8).

An ELBO rollout is just (prompt, seed, x0), so it can run anywhere: the training process cuts the epoch's
batch into shards and submits, per shard, a rollout task (the checkpoint URL + digest of the epoch's
sampling weights, the shard's prompts and sample indices: no tensors) and a reward task on its images.
Workers keep their policy and reward models loaded between epochs (per process) and load only the
sampling weights of each new checkpoint. Per-sample generators make the sharded epoch equal to the
in-process one. Shard results are not persisted: an epoch that is retried samples again.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from prefect import task
from prefect.cache_policies import NO_CACHE

from elborl import checkpoint
from elborl.config import Params, RunnerConfig
from elborl.errors import UserError
from elborl.rollout import Rollout, epoch_batch, reward, sample_shard

#: This worker process's loaded models: {"policy": {key, policy, digest}, "reward": (key, mix)}.
_WORKER: dict[str, Any] = {}


def task_runner(cfg: RunnerConfig):
    """The train flow's Prefect task runner for `cfg` (None: Prefect's default, everything in-process)."""
    if cfg.kind == "inline":
        return None
    if cfg.kind == "ray":
        try:
            from prefect_ray import RayTaskRunner
        except ImportError:
            raise UserError("runner.kind: ray needs prefect-ray (pip install 'elborl[ray]')") from None
        return RayTaskRunner(address=cfg.address) if cfg.address else RayTaskRunner()
    from prefect_dask import DaskTaskRunner

    # Dask's per-worker INFO lines would drown the epoch lines (the env reaches the spawned workers too)
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")

    if cfg.address:
        return DaskTaskRunner(address=cfg.address)
    # one task at a time per worker process; its torch threads are set by the task (`_threads`)
    return DaskTaskRunner(cluster_kwargs={"n_workers": cfg.n_workers, "threads_per_worker": 1, "processes": True})


def _threads(cfg: RunnerConfig) -> int:
    return cfg.threads_per_worker or max(1, (os.cpu_count() or 1) // cfg.n_workers)


def _worker_policy(params: Params, base: str, device: str | None, checkpoint_url: str | None, digest: str):
    """The worker's policy with the sampling weights of `checkpoint_url` (the base when None)."""
    from elborl.models.factory import build_policy

    key = json.dumps([base, params.model.model_dump(mode="json"), device])
    cached = _WORKER.get("policy")
    if cached is None or cached["key"] != key or (checkpoint_url is None and cached["digest"] != digest):
        # a fresh build holds the base's weights: the sampling weights of epoch 0
        loaded = digest if checkpoint_url is None else None
        cached = _WORKER["policy"] = {"key": key, "policy": build_policy(params.model, base, device), "digest": loaded}
    if cached["digest"] != digest:
        checkpoint.load_sampling_weights(checkpoint_url, cached["policy"], digest, params.storage.options())
        cached["digest"] = digest
    return cached["policy"]


def _worker_reward(params: Params):
    """The worker's reward mix (`train.reward`), built once per process and params."""
    from elborl.rewards.detectors import build_detector
    from elborl.rewards.geneval import Rules
    from elborl.rewards.registry import RewardContext, RewardMix
    from elborl.world.spec import WorldSpec

    key = json.dumps([params.train.reward, params.rewards.model_dump(mode="json"),
                      params.geneval.model_dump(mode="json"), params.world.model_dump(mode="json")])  # fmt: skip
    cached = _WORKER.get("reward")
    if cached is None or cached[0] != key:
        detector = build_detector(params.geneval.detector, WorldSpec.from_config(params.world), params.geneval)
        rules = Rules.from_config(params.geneval)
        cached = (key, RewardMix(params.train.reward, RewardContext(params.rewards, detector, rules)))
        _WORKER["reward"] = cached
    return cached[1]


@task(name="rollout-shard", persist_result=False, cache_policy=NO_CACHE, task_run_name="rollout-{epoch}-{shard}")
def rollout_shard(params: dict, base: str, epoch: int, shard: int, metadata: list[dict], groups: list[int],
                  index: list[int], size: int, checkpoint_url: str | None, digest: str,
                  threads: int) -> dict:  # fmt: skip
    """Sample the samples `index` of epoch `epoch` with the sampling weights of `checkpoint_url`
    (verified against `digest`; the base when None). Returns numpy arrays (x0, images, states)."""
    torch.set_num_threads(threads)
    p = Params.model_validate(params)
    device = p.runner.device or ("cuda" if torch.cuda.is_available() else None)
    policy = _worker_policy(p, base, device, checkpoint_url, digest)
    batch = sample_shard(policy, metadata, torch.tensor(groups), torch.tensor(index), size, p.train, epoch)
    states = [s.cpu().numpy() for s in batch.states] if batch.states is not None else None
    return {"index": index, "metadata": metadata, "groups": groups, "x0": batch.x0.cpu().numpy(),
            "grid": batch.grid.cpu().numpy(), "states": states, "images": batch.images}  # fmt: skip


@task(name="reward-shard", persist_result=False, cache_policy=NO_CACHE, task_run_name="reward-{epoch}-{shard}")
def reward_shard(params: dict, epoch: int, shard: int, rolled: dict, threads: int) -> dict:
    """The training reward of a rollout shard's images (`train.reward`), GenEval's verdicts where it has them."""
    torch.set_num_threads(threads)
    p = Params.model_validate(params)
    metadata, images = rolled["metadata"], rolled["images"]
    batch = Rollout(metadata, torch.tensor(rolled["groups"]), torch.zeros(len(metadata)), torch.zeros(0), None, images)
    batch = reward(batch, _worker_reward(p))
    return {"rewards": batch.rewards.numpy(), "correct": None if batch.correct is None else batch.correct.numpy(),
            "components": batch.components, "seconds": batch.reward_s}  # fmt: skip


@dataclass
class Shards:
    """What the training process needs to sample an epoch on workers.

    Args:
        params: The run's params.
        base: The base model folder (workers load it from the same path).
        rows: Train prompts.
        device: Where the update runs (the assembled samples go there).
    """

    params: Params
    base: str
    rows: list[dict]
    device: torch.device

    def _resources(self):
        gpus, kind = self.params.runner.gpus_per_shard, self.params.runner.kind
        if not gpus:
            return contextlib.nullcontext()
        if kind == "ray":
            from prefect_ray.context import remote_options

            return remote_options(num_gpus=gpus)
        import dask

        return dask.annotate(resources={"GPU": gpus})  # workers started with --resources GPU=N

    def __call__(self, epoch: int, checkpoint_url: str | None, digest: str) -> Rollout:
        """Epoch `epoch`'s rewarded rollout, sampled by shard tasks from the sampling weights of
        `checkpoint_url` (digest `digest`; the base when None)."""
        cfg, runner = self.params.train, self.params.runner
        metadata, groups = epoch_batch(self.rows, cfg, epoch)
        size, params = len(metadata), self.params.model_dump(mode="json")
        pieces = [i.tolist() for i in torch.arange(size).tensor_split(min(runner.shards or runner.n_workers, size))]
        threads = _threads(runner)
        rolled, rewarded, source = [], [], (checkpoint_url, digest)
        for s, idx in enumerate(pieces):
            shard = ([metadata[i] for i in idx], groups[idx].tolist(), idx, size)
            with self._resources():
                rolled.append(rollout_shard.submit(params, self.base, epoch, s, *shard, *source, threads))
            rewarded.append(reward_shard.submit(params, epoch, s, rolled[-1], threads))
        parts, scores = [r.result() for r in rolled], [r.result() for r in rewarded]
        return _assemble(parts, scores, metadata, groups, self.device)


def _assemble(parts: list[dict], scores: list[dict], metadata: list[dict], groups: torch.Tensor, device) -> Rollout:
    """The whole batch from its shards (in order)."""
    x0 = torch.from_numpy(np.concatenate([p["x0"] for p in parts])).to(device)  # (B, ...)
    states = None
    if parts[0]["states"] is not None:  # per step, (B, ...)
        steps = zip(*(p["states"] for p in parts), strict=True)
        states = [torch.from_numpy(np.concatenate(step)).to(device) for step in steps]
    batch = Rollout(metadata, groups, x0, torch.from_numpy(parts[0]["grid"]).to(device), states,
                    np.concatenate([p["images"] for p in parts]))  # fmt: skip
    batch.rewards = torch.from_numpy(np.concatenate([s["rewards"] for s in scores])).to(device)
    if scores[0]["correct"] is not None:
        batch.correct = torch.from_numpy(np.concatenate([s["correct"] for s in scores]))
    sizes = [len(p["index"]) for p in parts]
    batch.components = {name: sum(s["components"][name] * n for s, n in zip(scores, sizes, strict=True)) / sum(sizes)
                        for name in scores[0]["components"]}  # fmt: skip
    batch.reward_s = sum(s["seconds"] for s in scores)
    return batch
