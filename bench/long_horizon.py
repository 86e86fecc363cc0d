"""Long-horizon run of the reference recipe (issue: what limits the climb?), resumable across sessions.

Trains the `train` section of a params file from the shipped base on the world's train prompts and,
every `--eval-every` epochs, measures the EMA weights on the test prompts twice: CFG off (what RL
trains) and CFG `--cfg` (the base's own best guided sampling), strict GenEval per tag and the off-target
checks (background drift and its parts, pixel std). Appends one row
per evaluation to `<out>/curve.csv`, checkpoints every evaluation to `<out>/checkpoint` (a killed run
continues from there, with the same weights as an uninterrupted one) and exports the EMA model to
`<out>/model` at the end (for `bench/group_signal.py --model`).

    nice -n 19 python bench/long_horizon.py --epochs 400 --out build/long_horizon
    python bench/long_horizon.py --epochs 400 --out build/long_horizon --set lr=4e-5   # a variant
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python bench/long_horizon.py` from anywhere

from elborl import checkpoint
from elborl.config import load_params, route_overrides
from elborl.evaluation import geneval_images, off_target, score_images
from elborl.train import ema_weights, fit
from elborl.world.prompts import make_prompt_sets
from elborl.world.spec import WorldSpec
from stages.train import build_trainer, export_model


def evaluate(trainer, test_rows: list[dict], cfg_scale: float, background) -> dict:
    """Strict test GenEval of the EMA weights (dpm2, the train steps, 1 image per prompt, >= 16 per tag):
    {"overall", tag..., "background_drift", "border_objects", "background_tint", "pixel_std"}."""
    with torch.inference_mode(), ema_weights(trainer.policy, trainer.ema):
        metas, images = geneval_images(trainer.policy, test_rows, 1, 0, 16, sampler="dpm2", steps=trainer.cfg.steps,
                                       cfg_scale=cfg_scale, progress=False)  # fmt: skip
    s = score_images(images, metas, trainer.detector, trainer.rules)
    return {"overall": s["overall"], **s["per_tag"], **off_target(images, background)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--base", default="assets/base")
    ap.add_argument("--epochs", type=int, default=400)
    ap.add_argument("--eval-every", type=int, default=10)
    ap.add_argument("--cfg", type=float, default=4.5, help="guidance scale of the CFG-on evaluation")
    ap.add_argument("--set", action="append", default=[], help="train override KEY=JSON (repeatable)")
    ap.add_argument("--out", default="build/long_horizon")
    args = ap.parse_args(argv)

    overrides = {k: json.loads(v) for k, v in (s.split("=", 1) for s in args.set)}
    params = load_params(args.params)
    dumped = params.model_dump()
    for section, values in route_overrides(overrides).items():
        dumped[section].update(values)
    params = type(params).model_validate(dumped)
    spec = WorldSpec.from_config(params.world)
    train_rows, test_rows = make_prompt_sets(spec, params.prompts)
    trainer = build_trainer(params, args.base, train_rows)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt, curve = str(out / "checkpoint"), out / "curve.csv"
    if checkpoint.complete(ckpt):
        trainer.load(ckpt)
        print(f"resumed after epoch {trainer.epochs_done}")
    (out / "overrides.json").write_text(json.dumps(overrides) + "\n")
    # train_s is cumulative over resumes: it goes on from the last evaluation's value
    last = list(csv.DictReader(curve.open())) if curve.exists() else []
    state = {"train_s": float(last[-1]["train_s"]) if last else 0.0, "start": time.perf_counter()}

    def row(epoch: int, metrics: dict | None) -> None:
        r = {"epoch": epoch, "train_s": round(state["train_s"], 1), "kl": metrics["kl"] if metrics else 0.0}
        for name, scale in (("nocfg", 1.0), ("cfg", args.cfg)):
            r.update({f"{name}.{k}": v for k, v in evaluate(trainer, test_rows, scale, spec.background).items()})
        new = not curve.exists()
        with curve.open("a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(r))
            if new:
                w.writeheader()
            w.writerow(r)
        print(f"eval epoch {epoch}: nocfg {r['nocfg.overall']:.3f} cfg{args.cfg:g} {r['cfg.overall']:.3f}", flush=True)

    if not curve.exists():
        row(0, None)

    def after(epoch: int, m: dict) -> None:
        state["train_s"] += m["rollout_s"] + m["update_s"]
        if (epoch + 1) % args.eval_every == 0:
            row(epoch + 1, m)
            trainer.save(ckpt)

    fit(trainer, args.epochs, after_epoch=after, log=lambda s: print(s, flush=True))
    export_model(trainer, out / "model")


if __name__ == "__main__":
    main()
