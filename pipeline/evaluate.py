"""The `evaluate` stage as a Prefect flow: score the trained and the base model (one task each), write
the metrics, plots and grid, and register the trained EMA checkpoint in MLflow's model registry
(moving the champion alias when it beats the holder)."""

from __future__ import annotations

import json
from pathlib import Path

from prefect import flow, get_run_logger, task

from elborl import tracking
from elborl.config import load_params
from elborl.geneval_io import read_metadata_jsonl
from elborl.models.factory import build_policy
from elborl.rewards.detectors import build_detector, check_classes, check_image_size
from elborl.rewards.geneval import Rules
from elborl.rewards.registry import RewardContext, RewardMix
from elborl.world.spec import WorldSpec
from stages import evaluate as stage


@task(name="score", task_run_name="score-{name}")
def score_task(name: str, params_path: str, model: str, prompts: str, out: str, device: str | None = None,
               cfg_scale: float = 1.0):  # fmt: skip
    """Strict GenEval of one model on the test prompts (CFG at `cfg_scale`), its off-target checks and its
    block of the sample grid."""
    params = load_params(params_path)
    spec = WorldSpec.from_config(params.world)
    detector = build_detector(params.geneval.detector, spec, params.geneval)
    rules = Rules.from_config(params.geneval)
    rows = read_metadata_jsonl(prompts)
    check_classes(detector, rows, prompts)
    policy = build_policy(params.model, model, device, finetune="frozen")
    check_image_size(detector, policy.image_size, model)
    summary = stage.score_model(policy, rows, detector, rules, params.evaluate, Path(out) / name, cfg_scale)
    rewards = {}
    if params.evaluate.rewards:  # the other rewards' means on the same test images
        mix = RewardMix(dict.fromkeys(params.evaluate.rewards, 1.0), RewardContext(params.rewards, detector, rules))
        rewards = stage.reward_means(Path(out) / name / "images", mix)
    off = stage.off_target_of_folder(Path(out) / name / "images", spec.background)
    return summary, rewards, off, stage.grid_images(policy, rows, params.evaluate, cfg_scale)


@flow(name="elborl-evaluate")
def evaluate_flow(
    params_path: str = "params.yaml",
    prompts: str = "data/prompts/test.jsonl",
    model: str = "data/train/model",
    base: str = "data/base/model",
    run: str = "data/train/run.json",
    out: str = "data/eval",
    device: str | None = None,
) -> dict:
    """Run the `evaluate` stage.

    Args:
        params_path: The params file (sections evaluate, world, geneval, tracking).
        prompts: Test prompts (GenEval metadata JSONL).
        model: The trained model folder (EMA weights).
        base: The base model folder.
        run: The train stage's run.json (its MLflow run id; the registry source is that run's model).
        out: Output folder.
        device: Torch device of the models ("cuda" on a GPU machine).

    Returns:
        The scores table (trained, base, gain).
    """
    logger = get_run_logger()
    params = load_params(params_path)
    cfg = params.evaluate
    # (name, model folder, CFG scale): the base with CFG is the study's bar for RL without it.
    models = [("base", base, 1.0), ("trained", model, 1.0)]
    if cfg.base_cfg_scale is not None:
        models.insert(1, ("base_cfg", base, cfg.base_cfg_scale))
    else:  # dvc.yaml declares data/eval/base_cfg: say why it holds no images
        stage.write_skipped(Path(out) / "base_cfg", "evaluate.base_cfg_scale is null: the base was not scored with CFG")
    scored = {name: score_task(name, params_path, str(path), prompts, out, device, scale)
              for name, path, scale in models}  # fmt: skip
    table = stage.scores_table({name: s[0] for name, s in scored.items()}, {name: s[1] for name, s in scored.items()},
                               {name: s[2] for name, s in scored.items()})  # fmt: skip
    stage.write_outputs(Path(out), table, stage.comparison_grid([s[3] for s in scored.values()]))
    if "trained" in table:
        guided = ""
        if "base_cfg" in table:
            guided = f"; the base with CFG {cfg.base_cfg_scale}: {table['base_cfg']['overall']:.3f}"
        tags = ", ".join(f"{t} {table['base'][t]:.3f}->{table['trained'][t]:.3f}"
                         for t in table["trained"] if t != "overall")  # fmt: skip
        logger.info(f"evaluate: strict test GenEval without CFG {table['base']['overall']:.3f} -> "
                    f"{table['trained']['overall']:.3f} ({tags}){guided}")  # fmt: skip
    for name, o in table["off_target"].items():
        logger.info(
            f"evaluate: {name} background drift {o['background_drift']:.4f} (border objects "
            f"{o['border_objects']:.3f}, tint {o['background_tint']:.4f}), pixel std {o['pixel_std']:.4f}"
        )
    for name, r in table.get("rewards", {}).items():
        logger.info(f"evaluate: {name} {r['base']:.4f} -> {r['trained']:.4f}")
    if cfg.register_model:
        _register(params, json.loads(Path(run).read_text())["mlflow_run_id"], table, Path(out), logger)
    return table


def _register(params, run_id: str, table: dict, out: Path, logger) -> None:
    """Log the scores and the grid to the train run, register its model, move the alias if it wins."""
    t = params.tracking
    c = tracking.client(t.uri, t.artifact_root)
    with tracking.reaching(c, "registering the evaluated model"):
        _log_and_register(c, t, run_id, table, out, logger)


def _log_and_register(c, t, run_id: str, table: dict, out: Path, logger) -> None:
    """The scores and grid on the train run, the model registered, the alias moved when it wins."""
    tracking.log_metrics(c, run_id, {"eval": table}, step=0)
    c.log_artifact(run_id, str(out / "samples.png"), "eval")
    c.log_artifact(run_id, str(out / "scores.json"), "eval")
    source = f"{c.get_run(run_id).info.artifact_uri}/model"
    # The champion is decided by GenEval overall; without GenEval prompts (e.g. ocr), by the mean of the
    # evaluate rewards' trained means.
    scores = table.get("trained") or {"overall": sum(r["trained"] for r in table["rewards"].values())
                                                 / len(table["rewards"])}  # fmt: skip
    version, promoted = tracking.register(c, run_id, t.model_name, source, scores, t.alias)
    logger.info(f"evaluate: registered {t.model_name} version {version}"
                + (f", now {t.alias}" if promoted else f" ({t.alias} unchanged)"))  # fmt: skip
