"""Stage `base`: the policy's starting point, validated and measured.

The embedded default starts from the shipped checkpoint `base.init` (trained once with
`elborl base --train`, the way SD3.5-M is an input for real users). The stage copies it to
<out>/model, samples the test prompts with it and scores them: <out>/summary.json (a DVC metric)
and <out>/samples.png. Reads params: world, base, geneval.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from elborl.config import Params
from elborl.evaluation import geneval_of_model
from elborl.geneval_io import read_metadata_jsonl
from elborl.grid import image_grid
from elborl.io import atomic_dir, save_png, write_json
from elborl.models.generate import generate, image_seed
from elborl.models.tiny import TinyT2I, check_tiny_folder
from elborl.rewards.detectors import build_detector
from elborl.rewards.geneval import Rules
from elborl.world.spec import WorldSpec


def copy_model(src: str | Path, dst: Path) -> Path:
    """Copy a checked model folder to `dst` atomically (copy beside it, then rename)."""
    src = check_tiny_folder(src)
    with atomic_dir(dst) as tmp:
        shutil.copytree(src, tmp)
    return dst


def run_stage(params: Params, prompts: str | Path = "data/prompts/test.jsonl", out: str | Path = "data/base") -> dict:
    """Copy the base checkpoint, measure its strict test GenEval, write the summary and a sample grid."""
    cfg, out = params.base, Path(out)
    spec = WorldSpec.from_config(params.world)
    test = read_metadata_jsonl(prompts)
    model = TinyT2I.from_pretrained(copy_model(cfg.init, out / "model")).eval()
    if model.size != spec.size:
        raise ValueError(f"{cfg.init}: the model draws {model.size}x{model.size} images, the world is {spec.size}")
    sampling = {"sampler": cfg.eval_sampler, "steps": cfg.eval_steps}
    detector = build_detector(params.geneval.detector, spec)
    summary = geneval_of_model(model, test, detector, cfg.eval_images_per_prompt, seed=0,
                               rules=Rules.from_config(params.geneval),
                               min_images_per_tag=cfg.eval_min_images_per_tag, **sampling)  # fmt: skip
    write_json(out / "summary.json", summary)
    shown = test[:: max(1, len(test) // 32)][:32]
    images = generate(model, [m["prompt"] for m in shown], [image_seed(0, i, 0) for i in range(len(shown))],
                      progress=False, **sampling)  # fmt: skip
    save_png(out / "samples.png", image_grid(np.asarray(images)))
    tags = ", ".join(f"{t} {s:.3f}" for t, s in summary["per_tag"].items())
    print(f"base: strict test GenEval {summary['overall']:.3f} ({tags})")
    return summary
