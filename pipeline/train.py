"""The `train` stage as a Prefect flow: one cached, checkpointed task per epoch.

Each epoch task's cache key is built from content hashes of its inputs: the run key (base weights,
train prompts, world, GenEval rules, train section; `stages.train.run_key`), the epoch, and the
digest of the checkpoint it starts from. Its result (metrics + the checkpoint it wrote + that
checkpoint's digest) is persisted next to the checkpoints, on local disk or S3. Starting the same
command again after a kill -9 therefore replays the finished epochs from the cache, loads the last
checkpoint and continues: the run ends on the same weights as an uninterrupted one (every draw of an
epoch is seeded by (seed, epoch)).

MLflow: the run tagged with the run key is reused on resume; tasks log to it by explicit run id.

On N ranks (`accelerate launch`, `elborl.distributed`), rank 0 runs this flow and is the only one to
write checkpoints, results, MLflow and Prefect state; before each epoch it computes, it broadcasts the
epoch (and the checkpoint it resumed from, if it loaded one) and the other ranks (`follow_epochs`) run
the same epoch in step. Epochs read from the cache cost the other ranks nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from prefect import flow, get_run_logger, task

from elborl import checkpoint, distributed, storage, tracking
from elborl.config import load_params
from elborl.errors import UserError
from elborl.geneval_io import geneval_rows, read_metadata_jsonl
from elborl.grid import image_grid
from elborl.models.generate import generate, image_seed
from elborl.storage import StorageOptions, StorageUnreachable
from elborl.tracking import TrackingUnreachable
from elborl.train import Trainer, ema_weights, fit
from pipeline.results import EpochJSON, check_cached_result, result_storage
from pipeline.shards import Shards
from stages import train as stage


@dataclass
class _Live:
    """What the epoch tasks of one flow run share in memory (tasks get only hashable arguments)."""

    trainer: Trainer
    root: str
    options: StorageOptions
    test_rows: list[dict]
    client: Any
    run_id: str | None
    shards: Shards | None = None  # rollouts and rewards on workers (`runner` section), else in-process


_LIVE: dict[str, _Live] = {}


class CheckpointMissing(Exception):
    """A cached epoch points at a checkpoint that is gone (pruned since `epochs` was lowered, or deleted
    by a user after a `CorruptCheckpoint`).

    Args:
        message: What is missing.
        epochs: The completed epochs the missing checkpoint held.
    """

    def __init__(self, message: str, epochs: int):
        super().__init__(message)
        self.epochs = epochs


def _epoch_key(ctx, p: dict) -> str:
    return f"elborl-train-{p['key']}-epoch{p['epoch']:04d}-from-{p['digest_in']}"


def _continue_from(live: _Live, epoch: int, checkpoint_in: str | None, digest_in: str) -> None:
    """Bring the live trainer to `epoch` completed epochs (after cached ones) from their checkpoint."""
    if live.trainer.epochs_done == epoch:
        return
    if checkpoint_in is None or not checkpoint.complete(checkpoint_in, live.options):
        raise CheckpointMissing(f"{checkpoint_in}: checkpoint of epoch {epoch} is gone", epoch)
    state = live.trainer.load(checkpoint_in, live.options)
    if state["digest"] != digest_in:
        raise UserError(f"{checkpoint_in}: digest {state['digest']} differs from the cached {digest_in}")


#: Faults worth retrying: the storage or the network did not answer. A missing file, a permission error,
#: bad input or a bug fails at once.
TRANSIENT = (StorageUnreachable, TrackingUnreachable, ConnectionError, TimeoutError)


def _transient(task, task_run, state) -> bool:
    """Retry an epoch only on a `TRANSIENT` fault, by exception type (a retry restarts the epoch from its
    input checkpoint, so it gives the same result)."""
    try:
        state.result()
    except TRANSIENT:
        return True
    except Exception:
        return False
    return False


@task(name="epoch", cache_key_fn=_epoch_key, persist_result=True, task_run_name="epoch-{epoch}", retries=2,
      retry_delay_seconds=10, retry_condition_fn=_transient)  # fmt: skip
def epoch_task(key: str, epoch: int, digest_in: str, checkpoint_in: str | None) -> dict:
    """rollout -> reward -> update (and the test GenEval every `eval_every` epochs), then checkpoint."""
    live = _LIVE[key]
    loads = live.trainer.epochs_done != epoch
    _continue_from(live, epoch, checkpoint_in, digest_in)
    trainer, cfg = live.trainer, live.trainer.cfg
    trainer.ranks.broadcast({"epoch": epoch, "load": checkpoint_in if loads else None, "digest": digest_in})
    sample = partial(live.shards, checkpoint_url=checkpoint_in, digest=digest_in) if live.shards else None
    metrics = trainer.epoch(epoch, sample)
    if cfg.eval_every and live.test_rows and (epoch + 1) % cfg.eval_every == 0:
        summary = stage.geneval_on_test(trainer, live.test_rows)
        metrics["test.overall"] = summary["overall"]
        metrics.update({f"test.{tag}": v for tag, v in summary["per_tag"].items()})
        if live.client:
            grid = _sample_grid(trainer, live.test_rows)
            with tracking.reaching(live.client, f"logging epoch {epoch + 1}'s samples"):
                live.client.log_image(live.run_id, grid, artifact_file=f"samples/epoch_{epoch + 1:04d}.png")
    url = checkpoint.epoch_url(live.root, epoch + 1)
    checkpoint.save_prompt_cache(live.root, epoch + 1, trainer.policy, live.options)
    digest = trainer.save(url, live.options)
    checkpoint.prune(live.root, epoch + 2 - cfg.keep_checkpoints, live.options)
    if live.client:
        tracking.log_metrics(live.client, live.run_id, metrics, step=epoch + 1)
    return {"epoch": epoch, "checkpoint": url, "digest": digest, "metrics": metrics}


def follow_epochs(params_path: str, prompts: str, base: str, device: str | None = None) -> None:
    """A rank other than 0: build the same trainer, then run each epoch rank 0 computes, from the
    checkpoint rank 0 resumed from when it loaded one, until rank 0 sends None (the end, or its error)."""
    params = load_params(params_path)
    ranks = distributed.from_env()
    rows = read_metadata_jsonl(Path(prompts) / "train.jsonl")
    options = params.storage.options()

    def fresh() -> Trainer:
        return stage.build_trainer(params, base, rows, device, ranks)

    trainer = fresh()  # building one wraps it in DDP: a collective, mirrored by rank 0's
    while (order := ranks.broadcast()) is not None:
        if order.get("rebuild"):  # rank 0 starts over from the base
            trainer = fresh()
            continue
        if order["load"] is not None:
            state = trainer.load(order["load"], options)
            if state["digest"] != order["digest"]:
                raise UserError(f"{order['load']}: digest {state['digest']} differs from rank 0's {order['digest']}")
        trainer.epoch(order["epoch"])


def _sample_grid(trainer: Trainer, rows: list[dict], n: int = 16) -> np.ndarray:
    """EMA samples of the first `n` test prompts (fixed seeds), as one image."""
    shown = rows[:: max(1, len(rows) // n)][:n]
    with ema_weights(trainer.policy, trainer.ema):
        seeds = [image_seed(0, i, 0) for i in range(len(shown))]
        images = generate(trainer.policy, [m["prompt"] for m in shown], seeds, steps=trainer.cfg.steps, progress=False)
    return image_grid(np.asarray(images))


def _epochs(task_, key: str, epochs: int, base_digest: str, refresh_from: int | None = None) -> list[dict]:
    """The epoch loop (`elborl.train.fit`) with each epoch a cached task, chaining each one's checkpoint
    digest into the next one's key; epochs from `refresh_from` on are computed again, not read from the cache."""
    refreshed = task_.with_options(refresh_cache=True)
    chain = {"digest": base_digest, "checkpoint": None}
    results = []

    live = _LIVE[key]

    def run_epoch(epoch: int) -> dict:
        cache_key = _epoch_key(None, {"key": key, "epoch": epoch, "digest_in": chain["digest"]})
        check_cached_result(f"{live.root}/results/{cache_key}", live.options)  # before Prefect decodes it
        run = refreshed if refresh_from is not None and epoch >= refresh_from else task_
        result = run(key, epoch, chain["digest"], chain["checkpoint"])
        chain.update(digest=result["digest"], checkpoint=result["checkpoint"])
        results.append(result)
        return result["metrics"]

    fit(_LIVE[key].trainer, epochs, run_epoch, log=get_run_logger().info)
    _continue_from(_LIVE[key], epochs, chain["checkpoint"], chain["digest"])  # every epoch may have been cached
    return results


@flow(name="elborl-train")
def train_flow(
    params_path: str = "params.yaml",
    prompts: str = "data/prompts",
    base: str = "data/base/model",
    out: str = "data/train",
    device: str | None = None,
) -> dict:
    """Run the `train` stage: RL from `base` on `<prompts>/train.jsonl`, evaluated on `test.jsonl`.

    Args:
        params_path: The params file (sections train, world, geneval, storage, tracking).
        prompts: Folder with train.jsonl and test.jsonl.
        base: The base model folder.
        out: The stage's output folder.
        device: Torch device for the policy ("cuda" on a GPU machine).

    Returns:
        The stage's metrics (last epoch, last test GenEval).
    """
    logger = get_run_logger()
    params = load_params(params_path)
    cfg, options = params.train, params.storage.options()
    train_rows = read_metadata_jsonl(Path(prompts) / "train.jsonl")
    test_rows = geneval_rows(read_metadata_jsonl(Path(prompts) / "test.jsonl"))  # none for e.g. ocr prompts
    base_digest = stage.folder_digest(base)
    key = stage.run_key(params, base_digest, stage.folder_digest(Path(prompts) / "train.jsonl"))
    root = cfg.checkpoints.rstrip("/") + "/" + key
    root = root if storage.is_remote(root) else str(Path(root).resolve())
    storage.exists(root, options)  # an unreachable S3 endpoint fails here, before any work
    client = tracking.client(params.tracking.uri, params.tracking.artifact_root)
    logged = {"train": cfg.model_dump(mode="json"), "model": params.model.model_dump(mode="json"),
              "world": params.world.model_dump(mode="json")}  # fmt: skip
    run_id = tracking.resume_or_start_run(client, params.tracking.experiment, logged, key, f"train-{key[:8]}")
    world = distributed.from_env().world
    ranks = f", update on {world} ranks" if world > 1 else ""
    runner = params.runner
    if runner.kind != "inline":
        where = runner.address or f"a local cluster of {runner.n_workers} workers"
        ranks += f", rollouts and rewards on {runner.kind} ({where})"
    logger.info(f"train: run {key} ({cfg.estimator}/{cfg.objective}/{cfg.sampler}){ranks}, checkpoints in {root}")

    def live() -> _Live:
        trainer = stage.build_trainer(params, base, train_rows, device, distributed.from_env())
        n = checkpoint.load_prompt_cache(root, trainer.policy, options)
        if n:
            logger.info(f"train: {n} prompt encodings from the run's cache")
        shards = Shards(params, base, train_rows, trainer.policy.device) if params.runner.kind != "inline" else None
        return _Live(trainer, root, options, test_rows, client, run_id, shards)

    task_ = epoch_task.with_options(result_storage=result_storage(f"{root}/results", options),
                                    result_serializer=EpochJSON())  # fmt: skip
    _LIVE[key] = live()
    try:
        refresh_from = None
        while True:
            try:
                results = _epochs(task_, key, cfg.epochs, base_digest, refresh_from)
                break
            except CheckpointMissing as err:  # recompute from the epoch that wrote it, from its own input
                if refresh_from == 0:
                    raise
                writer = err.epochs - 1  # each retry starts strictly earlier, down to the base
                refresh_from = max(0, writer if refresh_from is None else min(writer, refresh_from - 1))
                logger.info(f"train: {err}; recomputing from epoch {refresh_from + 1}")
                distributed.from_env().broadcast({"rebuild": True})  # the other ranks build theirs with it
                _LIVE[key] = live()
        history = [r["metrics"] for r in results]
        run = {"run_key": key, "digest": results[-1]["digest"], "checkpoint": results[-1]["checkpoint"],
               "mlflow_run_id": run_id}  # fmt: skip
        metrics = stage.write_outputs(Path(out), _LIVE[key].trainer, history, run)
    finally:
        _LIVE.pop(key, None)
    with tracking.reaching(client, "logging the trained model"):
        client.log_artifacts(run_id, str(Path(out) / "model"), "model")
        client.log_artifact(run_id, str(Path(out) / "history.csv"))
        client.set_terminated(run_id)
    logger.info(f"train: reward {history[0]['reward_mean']:.3f} -> {history[-1]['reward_mean']:.3f}")
    return metrics
