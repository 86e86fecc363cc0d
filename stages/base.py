"""Stage `base`: the policy's starting point, validated and measured.

For the tiny model the stage copies `model.path` (the shipped checkpoint, trained once with
`elborl base --train`, the way SD3.5-M is an input for real users) to <out>/model. For SD3 it checks
the local diffusers folder and writes <out>/model/elborl_model.json, a pointer with the folder's
fingerprint, instead of copying 5+ GB. Either way it samples the test prompts with the base and
scores them: <out>/summary.json (a DVC metric) and <out>/samples.png. Reads params: world, model,
base, geneval.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch

from elborl.config import Params
from elborl.evaluation import geneval_of_model
from elborl.geneval_io import geneval_rows, read_metadata_jsonl
from elborl.grid import image_grid
from elborl.io import atomic_dir, save_png, write_json
from elborl.models.factory import build_policy, check_model, write_pointer
from elborl.models.generate import generate, image_seed
from elborl.rewards.detectors import build_detector, check_classes, check_image_size
from elborl.rewards.geneval import Rules
from elborl.world.spec import WorldSpec


def place_model(params: Params, dst: Path) -> Path:
    """The base as the stage's output folder, written atomically (built beside `dst`, then renamed):
    a copy of a tiny model, a pointer to an SD3 folder."""
    ref = check_model(params.model.path, params.model)
    with atomic_dir(dst) as tmp:
        if ref.kind == "tiny":
            shutil.copytree(ref.base, tmp)
        else:
            tmp.mkdir(parents=True)
            write_pointer(tmp, ref.base)
    return dst


def run_stage(params: Params, prompts: str | Path = "data/prompts/test.jsonl", out: str | Path = "data/base",
              device: str | None = None) -> dict:  # fmt: skip
    """Place the base, measure its strict test GenEval, write the summary and a sample grid."""
    cfg, out = params.base, Path(out)
    spec = WorldSpec.from_config(params.world)
    test = read_metadata_jsonl(prompts)
    detector = build_detector(params.geneval.detector, spec, params.geneval)
    check_classes(detector, test, str(prompts))  # before the model is placed or loaded
    policy = build_policy(params.model, place_model(params, out / "model"), device, finetune="frozen")
    check_image_size(detector, policy.image_size, params.model.path)
    sampling = {"sampler": cfg.eval_sampler, "steps": cfg.eval_steps, "shift": params.evaluate.shift}
    judged = geneval_rows(test)  # prompt sets of other rewards (e.g. ocr) have nothing GenEval can judge
    summary = {"overall": None, "per_tag": {}, "n_images": 0}
    with torch.inference_mode():
        if judged:
            summary = geneval_of_model(policy, judged, detector, cfg.eval_images_per_prompt, seed=0,
                                       rules=Rules.from_config(params.geneval),
                                       min_images_per_tag=cfg.eval_min_images_per_tag, **sampling)  # fmt: skip
        shown = test[:: max(1, len(test) // 32)][:32]
        images = generate(policy, [m["prompt"] for m in shown], [image_seed(0, i, 0) for i in range(len(shown))],
                          progress=False, **sampling)  # fmt: skip
    write_json(out / "summary.json", summary)
    save_png(out / "samples.png", image_grid(np.asarray(images)))
    if judged:
        tags = ", ".join(f"{t} {s:.3f}" for t, s in summary["per_tag"].items())
        print(f"base: strict test GenEval {summary['overall']:.3f} ({tags})")
    else:
        print(f"base: {prompts} has no GenEval prompts; GenEval not measured")
    return summary
