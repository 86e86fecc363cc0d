"""Stage `train`: RL fine-tuning of the base on the train prompts (the pieces; the Prefect flow that runs
them epoch by epoch, cached and resumable, is `pipeline.train`).

Reads params: train, model, world, geneval, storage, tracking. Writes <out>/model (the EMA weights as
a model folder, what `evaluate` samples: a tiny-model folder, or for SD3 a diffusers LoRA folder /
transformer folder with a pointer to its base), <out>/history.csv (one row per epoch: the reward curve),
<out>/test_curve.csv (test GenEval per tag at the evaluated epochs), <out>/metrics.json (the last
epoch and the last test GenEval; a DVC metric) and <out>/run.json (the run key, the final
checkpoint's digest and the MLflow run id).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import Path

import numpy as np
import torch

from elborl.config import Params
from elborl.distributed import SINGLE, Ranks
from elborl.evaluation import geneval_images, score_images
from elborl.io import atomic_dir, atomic_write_text
from elborl.models.factory import build_policy
from elborl.rewards.detectors import build_detector, check_classes, check_image_size
from elborl.rewards.geneval import Rules
from elborl.train import Trainer, ema_weights
from elborl.world.spec import WorldSpec

# Keys that do not change what an epoch computes: left out of the run key, so raising `epochs`
# continues a finished run instead of starting over.
NOT_IN_RUN_KEY = {"epochs", "checkpoints", "keep_checkpoints"}


def folder_digest(path: str | Path) -> str:
    """sha256 over a folder's file names and contents (sorted), 16 hex digits."""
    h = hashlib.sha256()
    root = Path(path)
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(f.relative_to(root).as_posix().encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def run_key(params: Params, base_digest: str, prompts_digest: str) -> str:
    """Content hash of everything an epoch depends on: the base weights, the train prompts, the world,
    the GenEval rules, the model section (less its path: the base digest stands for the weights) and
    the train section (less `NOT_IN_RUN_KEY`)."""
    train = params.train.model_dump(mode="json", exclude=NOT_IN_RUN_KEY)
    model = params.model.model_dump(mode="json", exclude={"path"})
    blob = json.dumps([base_digest, prompts_digest, params.world.model_dump(mode="json"),
                       params.geneval.model_dump(mode="json"), train, model], sort_keys=True)  # fmt: skip
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def build_trainer(params: Params, base: str | Path, train_rows: list[dict], device: str | None = None,
                  ranks: Ranks = SINGLE) -> Trainer:  # fmt: skip
    """A fresh `Trainer` over the base model folder (any kind `params.model` names; LoRA or full), on
    this process's rank of a multi-process update (`ranks`; its device, when it has one, wins)."""
    device = str(ranks.device) if ranks.world > 1 and ranks.device is not None else device
    spec = WorldSpec.from_config(params.world)
    policy = build_policy(params.model, base, device)
    detector = build_detector(params.geneval.detector, spec, params.geneval)
    rules = Rules.from_config(params.geneval)
    check_image_size(detector, policy.image_size, str(base))
    check_classes(detector, train_rows, "train prompts")
    return Trainer(policy, train_rows, detector, params.train, rules, params.rewards, ranks)


def sample_test_images(trainer: Trainer, test_rows: list[dict]) -> tuple[list[dict], np.ndarray]:
    """The EMA weights' images of the test prompts (ODE sampler, CFG off, noise seed 0): (metas, uint8 images)."""
    cfg = trainer.cfg
    sampler = "dpm2" if cfg.sampler == "flow_sde" else cfg.sampler  # the SDE's noise is a training device
    with torch.inference_mode(), ema_weights(trainer.policy, trainer.ema):
        return geneval_images(trainer.policy, test_rows, cfg.eval_images_per_prompt, 0, cfg.eval_min_images_per_tag,
                              sampler=sampler, steps=cfg.steps, shift=cfg.shift, progress=False)  # fmt: skip


def geneval_on_test(trainer: Trainer, test_rows: list[dict]) -> dict:
    """Strict test GenEval of the EMA weights (`sample_test_images`, scored)."""
    metas, images = sample_test_images(trainer, test_rows)
    return score_images(images, metas, trainer.detector, trainer.rules)


def export_model(trainer: Trainer, path: Path) -> None:
    """The EMA weights as a model folder at `path`, atomically (built beside it, then renamed)."""
    with atomic_dir(path) as tmp, torch.no_grad(), ema_weights(trainer.policy, trainer.ema):
        trainer.policy.export(tmp)


def history_csv(history: list[dict]) -> str:
    """Per-epoch metrics as CSV (columns: the union of keys, in first-seen order)."""
    fields = list(dict.fromkeys(k for row in history for k in row))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    writer.writerows(history)
    return buf.getvalue()


def write_outputs(out: Path, trainer: Trainer, history: list[dict], run: dict) -> dict:
    """Write the stage's outputs (each file atomically; the model folder by a rename)."""
    export_model(trainer, out / "model")
    atomic_write_text(out / "history.csv", history_csv(history))
    tests = [{"epoch": r["epoch"], **{k.removeprefix("test."): v for k, v in r.items() if k.startswith("test.")}}
             for r in history if "test.overall" in r]  # fmt: skip
    atomic_write_text(out / "test_curve.csv", history_csv(tests) if tests else "epoch,overall\n")
    last = history[-1]
    metrics = {k: last[k] for k in ("epoch", "reward_mean", "strict", "loss", "kl") if k in last}
    if tests:
        metrics["test"] = {k: v for k, v in tests[-1].items() if k != "epoch"}
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    atomic_write_text(out / "run.json", json.dumps(run, indent=2) + "\n")
    return metrics
